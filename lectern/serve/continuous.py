"""Continuous batching for `lectern serve` on llama.cpp: one decode loop over a shared KV cache in
which every running request is a sequence of its own. A request joins at the next step (its prompt
is fed in chunks beside the running rows' next tokens) and leaves when it ends (its cells freed), so
no request waits for a whole batch to finish.

Each step is one `llama_decode` of: the last token of every row that is generating, then prompt
chunks of rows that are joining, first come first served: PREFILL_TOKENS of them while rows are
generating (a long prompt cannot stall them for more than a chunk), a whole batch's worth when none
is. A step's cost grows with its tokens, decoded or fed alike, so small chunks also answer prompts
that arrive together sooner: the first prompts in get their first token after a chunk, not after
one long step that feeds them all.

A prompt is fed only from the first token the cache does not already hold: a row's cells stay in the
cache when it ends, and a new row starts from the longest prefix it shares with any row running or
ended (llama.cpp's `seq_cp` shares the cells, nothing is copied). Requests to one server share their
chat template and system prompt, a RAG model's instructions, or, in a chat, the whole conversation
before the new turn. Ended rows' cells are given up, least recently used first, when a new row needs
the cells or the sequence. Each row is
sampled from its own logits with its own sampler chain (the one create_completion builds for the
one-at-a-time path: greedy at temperature 0, else top_p, temperature and a dist sampler seeded with
the request's seed), its own grammar (response_format, a forced tool call), the repetition rule on
its own generated tokens, stop strings, max_tokens and cancellation.

One bad row never fails another: a row whose sampler cannot be built or whose sampling raises fails
alone; when a whole step fails, it is undone (each row's cache cut back) and run again one row at a
time, and only a row that fails alone hears the error.

The engine talks to the model through `Steps` (LlamaSteps here; tests drive it with a toy model).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from lectern.errors import BackendUnavailable
from lectern.serve.jobs import Finish, Job
from lectern.serve.request_queue import Batcher
from lectern.serve.stop_strings import Emitter

PREFILL_TOKENS = 128
"""Prompt tokens fed per step while other rows are generating: on 2 cores a step with a chunk this
size costs about what a few plain decode steps do, so a 500-token RAG prompt joins over four steps
instead of stalling the running rows for one long prefill. (Feeding the joining rows' share of the
step instead, about 500 tokens when 31 prompts arrive beside one running row, made the median first
token at 32 clients later, 6.6 s in one bench/serve.py run against 4.4 s with 128 in the next: the
first prompts in waited for the whole long step.)"""
BATCH_TOKENS = 512
"""The most tokens one decode takes (llama.cpp's n_batch): prompt tokens fed per step when no row is
generating, and the bound on rows plus a chunk."""
KV_CELLS_PER_ROW, KV_CELLS_MAX = 1024, 8192
"""The KV cache is one buffer shared by the rows: KV_CELLS_PER_ROW per slot, at most KV_CELLS_MAX
(100 MB on Qwen 0.5B, 230 MB on the 1.5B) and at least the model's window. A row is admitted when
its prompt plus max_tokens fit in what the running rows left."""


Item = tuple[int, int, int, bool]
"""One token of a decode: (token, position in its sequence, sequence, whether its logits are wanted)."""


class Steps(Protocol):
    """What the engine needs of a model: batched decoding over sequences, per-row sampling."""

    kv_cells: int  # the cache's size in tokens (all rows together)
    batch_tokens: int  # the most tokens one decode takes

    def sampler(self, job: Job, generated: list[int]) -> Any:
        """A new sampler for `job` (its temperature, seed, grammar, penalties over `generated`, the
        list the engine appends the row's tokens to); raises for a row that cannot run."""

    def decode(self, items: list[Item]) -> None:
        """Feed (token, position, sequence, wants logits) items; raises when the step failed."""

    def sample(self, sampler: Any, index: int) -> int:
        """The next token of the row whose logits are the decode's `index`-th."""

    def text(self, ids: list[int]) -> str:
        """The text of generated tokens (a half UTF-8 character at the end as U+FFFD)."""

    def is_end(self, token: int) -> bool:
        """Whether `token` ends a reply (EOS, end of turn)."""

    def forget(self, seq: int) -> None:
        """Free a sequence's cells in the KV cache."""

    def share(self, src: int, dst: int, length: int) -> None:
        """Give sequence `dst` (empty) the cells of `src`'s first `length` positions."""

    def trim(self, seq: int, length: int) -> None:
        """Drop a sequence's cells from position `length` on (a failed step's)."""

    def release(self, sampler: Any) -> None:
        """Free a sampler."""

    def close(self) -> None:
        """Free the context."""


@dataclass
class Slot:
    """One running request: its sequence in the cache, how much of its prompt is fed, its tokens."""

    job: Job
    seq: int
    prompt: list[int]
    reserve: int  # cache cells set aside: prompt plus max_tokens
    began: float = field(default_factory=time.monotonic)
    sampler: Any = None
    cached: int = 0  # tokens of this sequence in the cache
    ids: list[int] = field(default_factory=list)  # generated so far
    next: int | None = None  # the sampled token to feed at the next step
    out: Emitter = field(init=False)
    done: bool = False

    def __post_init__(self) -> None:
        self.out = Emitter(self.job)

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)

    @property
    def in_cache(self) -> list[int]:
        """The tokens of this row's cells: its prompt, then each generated token once it is fed."""
        return (self.prompt + self.ids)[: self.cached]


def common_prefix(a: list[int], b: list[int], most: int) -> int:
    """How many leading tokens `a` and `b` share, at most `most`."""
    n = min(len(a), len(b), most)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)


class ContinuousBatcher(Batcher):
    """The worker thread over a Steps model: the Batcher's queue, bound and counters, with rows that
    join and leave between decode steps. `max_batch` is the number of rows (sequences) at once."""

    def __init__(self, llm: Any, steps: Steps, *, max_batch: int = 8, max_queue: int = 32) -> None:
        self.steps = steps
        self.slots: list[Slot] = []
        self._used = 0  # cache cells set aside by the slots
        self.ended: dict[int, list[int]] = {}
        """Sequences of rows that ended, left in the cache for the prefixes they hold: sequence ->
        its tokens, least recently used first."""
        super().__init__(llm, max_batch=max_batch, max_queue=max_queue, gather_s=0.0)

    def _loop(self) -> None:
        steps = self.steps
        try:
            while True:
                joining = self._admit(steps)
                if joining is None:
                    break
                for slot in joining:
                    self._start(steps, slot)
                if self.slots:
                    self._step(steps)
        finally:
            for slot in self.slots:
                self._end(steps, slot, "cancelled")
            steps.close()

    # ------------------------------------------------------------------ rows joining and leaving

    def _admit(self, steps: Steps) -> list[Slot] | None:
        """The waiting jobs that join now (as many as there are free sequences and cache cells); None
        once closed."""
        with self._cond:
            while not self.waiting and not self.slots and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            joining: list[Slot] = []
            running = bool(self.slots)
            while self.waiting and len(self.slots) < self.max_batch:
                job = self.waiting[0]
                if job.cancelled.is_set():  # gone before it started: nothing to stop
                    self.waiting.popleft()
                    self.stats["cancelled"] += 1
                    job.emit(("done", Finish("cancelled", 0)))
                    continue
                prompt = list(job.prompt_ids or [])
                reserve = min(len(prompt) + job.sampling.max_tokens, steps.kv_cells)
                if self.slots and self._used + reserve > steps.kv_cells:
                    break  # it joins when enough rows have left
                self.waiting.popleft()
                slot = self._place(steps, job, prompt, reserve)
                self.slots.append(slot)
                joining.append(slot)
                self._used += reserve
                while self.ended and self._used + self._ended_cells() > steps.kv_cells:
                    self._give_up(steps, next(iter(self.ended)))  # the least recently used first
                self.stats["batched_rows"] += 1
                self.stats["joined"] += running  # a row joined rows that were generating
                self.stats["prompt_tokens_cached"] += slot.cached
            self._running_now()
            return joining

    def _place(self, steps: Steps, job: Job, prompt: list[int], reserve: int) -> Slot:
        """A new row's sequence, holding the longest prefix of its prompt that a running or ended
        row's cells hold (all but the prompt's last token at most: its logits are needed).

        A seeded row takes no prefix, and when no other row runs it starts on an empty cache (the
        ended rows' cells freed): its reply must be the same each time it is asked, and a native
        (AVX-512) llama.cpp build gave a seeded request another reply beside other cells, or fed
        from a cached prefix (docs/LLM.md). Beside running rows it is best effort, as OpenAI's is."""
        most = len(prompt) - 1
        if job.sampling.seed is not None:
            most = 0
            if not self.slots:
                for seq in list(self.ended):
                    self._give_up(steps, seq)
        shared, donor = 0, None
        for seq, tokens in [*self.ended.items(), *((s.seq, s.in_cache) for s in self.slots)]:
            n = common_prefix(tokens, prompt, most)
            if n > shared:
                shared, donor = n, seq
        if donor is not None and donor in self.ended:  # the row takes the ended row's sequence
            del self.ended[donor]
            steps.trim(donor, shared)
            return Slot(job, donor, prompt, reserve, cached=shared)
        taken = {s.seq for s in self.slots}
        free = [i for i in range(self.max_batch) if i not in taken and i not in self.ended]
        if free:
            seq = free[0]
        else:  # every free sequence holds an ended row: the least recently used is given up
            seq = next(iter(self.ended))
            self._give_up(steps, seq)
        if donor is not None:
            steps.share(donor, seq, shared)
        return Slot(job, seq, prompt, reserve, cached=shared)

    def _ended_cells(self) -> int:
        return sum(len(tokens) for tokens in self.ended.values())

    def _give_up(self, steps: Steps, seq: int) -> None:
        """Free an ended row's cells."""
        del self.ended[seq]
        steps.forget(seq)

    def _running_now(self) -> None:
        self.running = len(self.slots)
        self._began = min((s.began for s in self.slots), default=time.monotonic())
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(self.slots))

    def _start(self, steps: Steps, slot: Slot) -> None:
        try:
            if not slot.prompt:
                raise ValueError("the prompt has no tokens")
            slot.sampler = steps.sampler(slot.job, slot.ids)
        except Exception as error:  # this row's own problem (its grammar, its prompt)
            self._drop(steps, slot, error)

    def _end(self, steps: Steps, slot: Slot, reason: str) -> None:
        """The row ended (stop, length, cancelled): its sampler is freed, its cells kept for their
        prefix."""
        slot.done = True
        if reason != "cancelled":
            slot.out.flush()
        self.stats["cancelled" if reason == "cancelled" else "completed"] += 1
        self._leave(steps, slot, keep=True)
        slot.job.emit(("done", Finish(reason, len(slot.ids))))

    def _drop(self, steps: Steps, slot: Slot, error: BaseException) -> None:
        slot.done = True
        self._leave(steps, slot, keep=False)
        self._fail(slot.job, error)

    def _leave(self, steps: Steps, slot: Slot, *, keep: bool) -> None:
        """The row's sequence is kept for its prefix (`keep`: it ended between steps, its cells are
        whole) or freed (it failed: its cells may be half-written)."""
        if keep and slot.cached:
            self.ended[slot.seq] = slot.in_cache
        else:
            steps.forget(slot.seq)
        if slot.sampler is not None:
            steps.release(slot.sampler)
            slot.sampler = None
        seconds = time.monotonic() - slot.began
        with self._cond:
            if slot in self.slots:
                self.slots.remove(slot)
                self._used -= slot.reserve
            # a row's seconds: what a refused request is told to wait per row ahead (Retry-After)
            self.batch_s = seconds if not self.batch_s else 0.8 * self.batch_s + 0.2 * seconds
            self._running_now()

    # ------------------------------------------------------------------ one step

    def _step(self, steps: Steps) -> None:
        """One decode: the generating rows' last tokens, then prompt chunks of joining rows; then
        each row whose prompt is all in samples its next token."""
        for slot in list(self.slots):
            if slot.job.cancelled.is_set():
                self._end(steps, slot, "cancelled")
        parts: list[tuple[Slot, list[Item]]] = [
            (s, [(s.next, s.cached, s.seq, True)]) for s in self.slots if s.next is not None
        ]
        budget = PREFILL_TOKENS if parts else steps.batch_tokens
        budget = min(budget, steps.batch_tokens - len(parts))
        for slot in [s for s in self.slots if s.prefilling]:
            if budget <= 0:
                break
            end = min(len(slot.prompt), slot.cached + budget)
            chunk = [
                (slot.prompt[j], j, slot.seq, j == len(slot.prompt) - 1) for j in range(slot.cached, end)
            ]
            parts.append((slot, chunk))
            budget -= len(chunk)
        if not parts:
            return
        try:
            self._decode(steps, parts)
        except Exception as error:
            self._step_failed(steps, parts, error)

    def _decode(self, steps: Steps, parts: list[tuple[Slot, list[Item]]]) -> None:
        steps.decode([item for _, items in parts for item in items])
        self.stats["batches"] += 1
        offset = 0
        for slot, items in parts:
            slot.cached += len(items)
            offset += len(items)
            if items[-1][3]:
                self._next(steps, slot, offset - 1)

    def _next(self, steps: Steps, slot: Slot, index: int) -> None:
        """The row's next token: an end-of-reply token ends it; else its text grows, up to a stop
        string or max_tokens."""
        stopped = False
        try:
            token = steps.sample(slot.sampler, index)
            end = steps.is_end(token)
            if not end:
                slot.ids.append(token)
                stopped = slot.out.update(steps.text(slot.ids))
        except Exception as error:  # this row's sampling or text: it alone fails
            self._drop(steps, slot, error)
            return
        if end or stopped:
            self._end(steps, slot, "stop")
        elif len(slot.ids) >= slot.job.sampling.max_tokens:
            self._end(steps, slot, "length")
        else:
            slot.next = token

    def _step_failed(self, steps: Steps, parts: list[tuple[Slot, list[Item]]], error: BaseException) -> None:
        """A decode raised and no row can be blamed: the step is undone (each row's cache cut back to
        before it) and run again one row at a time; only a row that fails alone hears an error."""
        for slot, _ in parts:
            steps.trim(slot.seq, slot.cached)
        if len(parts) == 1:
            self._drop(steps, parts[0][0], error)
            return
        self.stats["isolated_steps"] += 1
        for part in parts:
            try:
                self._decode(steps, [part])
            except Exception as alone:
                self._drop(steps, part[0], alone)


# --------------------------------------------------------------------------- llama.cpp


class LlamaSteps:
    """Steps over a llama.cpp context of its own on the loaded model's weights: `slots` sequences in
    one unified KV cache (KV_CELLS_PER_ROW per slot, at most KV_CELLS_MAX, at least the window)."""

    def __init__(self, llm: Any, slots: int) -> None:
        from llama_cpp import _internals

        from lectern.rag.llm.llamacpp_import import import_llama_cpp

        self.cpp = import_llama_cpp()
        self.llm = llm
        self.llama = llm.llama
        params = self.cpp.llama_context_params.from_buffer_copy(self.llama.context_params)
        window = int(llm.context_window)
        params.n_seq_max = slots
        params.kv_unified = True  # one buffer: a row takes the cells it needs, not window / slots
        params.n_ctx = max(window, min(slots * KV_CELLS_PER_ROW, KV_CELLS_MAX))
        params.n_batch = params.n_ubatch = max(BATCH_TOKENS, slots + PREFILL_TOKENS)
        try:
            self.ctx = _internals.LlamaContext(model=self.llama._model, params=params, verbose=False)
        except ValueError as error:  # llama.cpp could not allocate it
            raise BackendUnavailable("llamacpp", f"no context of {slots} sequences and {params.n_ctx} cache "
                                     f"cells for serving ({error}); try a smaller --max-batch") from None  # fmt: skip
        self.kv_cells = int(self.cpp.llama_n_ctx(self.ctx.ctx))
        self.batch_tokens = int(params.n_batch)
        self.batch = self.cpp.llama_batch_init(self.batch_tokens, 0, 1)
        self.memory = self.cpp.llama_get_memory(self.ctx.ctx)
        self.vocab = self.llama._model.vocab
        self._ends: Any = None

    def sampler(self, job: Job, generated: list[int]) -> Any:
        """The chain create_completion builds for LlamaCppChatModel._options (the one-at-a-time path),
        so a row samples as it would alone: the repetition rule on its generated tokens (and EOS
        masked for ignore_eos), its grammar, then greedy, or top_p, temperature and a seeded dist."""
        import numpy as np
        from llama_cpp import _internals

        from lectern.rag.llm.llamacpp import _penalty_after
        from lectern.rag.llm.structured import llama_grammar

        s = job.sampling
        chain = _internals.LlamaSampler()
        penalty = float(self.llm.repetition_penalty)
        ends = self.ends() if s.ignore_eos and job.schema is None else None
        if penalty != 1.0 or ends is not None:
            rule = _penalty_after(0, penalty) if penalty != 1.0 else None
            token_data = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)

            def apply(cur_p: Any) -> None:
                size = cur_p.contents.size
                data = (self.cpp.llama_token_data * size).from_address(
                    ctypes.addressof(cur_p.contents.data.contents)
                )
                scores = np.recarray(shape=(size,), dtype=token_data, buf=data).logit
                if rule is not None and generated:
                    scores[:] = rule(np.asarray(generated, dtype=np.intc), scores)
                if ends is not None:
                    scores[ends] = -np.inf

            chain.add_custom(apply)
        if job.schema is not None:
            chain.add_grammar(self.llama._model, llama_grammar(job.schema))
        if s.temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_k(0)
            chain.add_typical(1.0, 1)
            chain.add_top_p(s.top_p, 1)
            chain.add_min_p(0.0, 1)
            chain.add_temp(s.temperature)
            seed = self.cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF  # as ctypes' uint32
            chain.add_dist(seed)
        return chain

    def ends(self) -> Any:
        """The vocabulary's end-of-reply tokens (masked for ignore_eos), found once."""
        if self._ends is None:
            import numpy as np

            n = int(self.cpp.llama_vocab_n_tokens(self.vocab))
            self._ends = np.array(
                [t for t in range(n) if self.cpp.llama_vocab_is_eog(self.vocab, t)], dtype=np.intc
            )
        return self._ends

    def decode(self, items: list[Item]) -> None:
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        code = int(self.cpp.llama_decode(self.ctx.ctx, batch))
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} for a step of {len(items)} tokens")

    def sample(self, sampler: Any, index: int) -> int:
        return int(sampler.sample(self.ctx, index))

    def text(self, ids: list[int]) -> str:
        return bytes(self.llama.detokenize(ids)).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        return bool(self.cpp.llama_vocab_is_eog(self.vocab, token))

    def forget(self, seq: int) -> None:
        self.cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def trim(self, seq: int, length: int) -> None:
        self.cpp.llama_memory_seq_rm(self.memory, seq, length, -1)

    def share(self, src: int, dst: int, length: int) -> None:
        self.cpp.llama_memory_seq_cp(self.memory, src, dst, 0, length)

    def release(self, sampler: Any) -> None:
        sampler.close()

    def close(self) -> None:
        self.cpp.llama_batch_free(self.batch)
        self.ctx.close()
