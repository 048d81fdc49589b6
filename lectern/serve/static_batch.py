"""The local transformers model, batched: one left-padded `generate` call for the jobs taken
together, each row with its own sampling, stop strings, token limit, JSON schema and cancellation.

Rows never mix: every step's token is routed to its own request's sink by row index. A cancelled
row (client gone) is stopped by a stopping criterion checked between tokens; when every row of a
batch is done, `generate` returns and the next batch starts.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from lectern.rag.llm import LocalChatModel
from lectern.rag.llm.structured import json_rows
from lectern.serve.jobs import Finish, Job
from lectern.serve.stop_strings import Emitter


class _Row:
    """One request's share of a batch: its tokens so far and whether it is done."""

    def __init__(self, job: Job, tokenizer: Any, eos: set[int]) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.eos = eos
        self.ids: list[int] = []
        self.out = Emitter(job)
        self.done = False
        self.generator: Any = None

    def finish(self, reason: str, stats: Counter[str]) -> None:
        self.done = True
        stats["cancelled" if reason == "cancelled" else "completed"] += 1
        self.job.emit(("done", Finish(reason, len(self.ids))))

    def take(self, token: int, stats: Counter[str]) -> None:
        """The row's next token: EOS ends it; else its text grows, up to a stop string or max_tokens."""
        if token in self.eos and not self.job.sampling.ignore_eos:
            self.out.flush()
            self.finish("stop", stats)
            return
        self.ids.append(token)
        if self.out.update(str(self.tokenizer.decode(self.ids, skip_special_tokens=True))):
            self.finish("stop", stats)
        elif len(self.ids) >= self.job.sampling.max_tokens:
            self.out.flush()
            self.finish("length", stats)


def generate_batch(llm: LocalChatModel, jobs: list[Job], stats: Counter[str]) -> None:
    """One left-padded `generate` call for `jobs`; tokens are routed to each job's sink as they come."""
    import torch
    from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    tok = llm.tokenizer
    eos = set(llm._eos_ids())
    rows = [_Row(job, tok, eos) for job in jobs]
    prompts = [job.prompt_ids or [] for job in jobs]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos), 0)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    constraints = [llm.json_constraint(job.schema) if job.schema is not None else None for job in jobs]
    for row in rows:
        seed = row.job.sampling.seed
        row.generator = torch.Generator().manual_seed(seed if seed is not None else random.getrandbits(63))
    eos_list = sorted(eos)

    class RowSampler(LogitsProcessor):
        """Each row's own temperature, top_p and seed (generate itself then takes the argmax), and
        EOS masked for rows that asked to ignore it."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            for i, row in enumerate(rows):
                s = row.job.sampling
                if s.ignore_eos and eos_list and row.job.schema is None:  # JSON ends when it is whole
                    scores[i, eos_list] = -float("inf")
                if row.done or s.temperature <= 0:
                    continue
                logits = scores[i].float() / s.temperature
                probs = torch.softmax(logits, dim=-1)
                if s.top_p < 1.0:
                    ordered, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(ordered, dim=-1) - ordered < s.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
                pick = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
                scores[i] = -float("inf")
                scores[i, int(pick)] = 0.0
            return scores

    class RowStreamer(BaseStreamer):
        """generate's per-step tokens, one per row, handed to each row (the first put is the prompt)."""

        def __init__(self) -> None:
            self.started = False

        def put(self, value: Any) -> None:
            if not self.started:
                self.started = True
                return
            for i, token in enumerate(value.reshape(-1).tolist()):
                row = rows[i]
                if not row.done:
                    if row.job.cancelled.is_set():
                        row.finish("cancelled", stats)
                    else:
                        row.take(int(token), stats)

        def end(self) -> None:
            pass

    class RowsDone(StoppingCriteria):
        """A row is done when it ended (EOS, stop string, its own max_tokens) or its client left."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            for row in rows:
                if not row.done and row.job.cancelled.is_set():
                    row.finish("cancelled", stats)
            return torch.tensor([row.done for row in rows], dtype=torch.bool, device=input_ids.device)

    kwargs = llm._gen_kwargs(
        width, None, max_new_tokens=max(j.sampling.max_tokens for j in jobs), temperature=0
    )
    processors = kwargs.pop("logits_processor", None) or []
    if any(constraints):  # each row's own schema, or none (rag.llm.structured), before sampling
        processors = [*processors, json_rows(constraints, width)]
    processors = [*processors, RowSampler()]
    device = llm.hf_model.device
    with torch.inference_mode():
        llm.hf_model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([RowsDone()]),
            streamer=RowStreamer(),
            **kwargs,
        )
    for row in rows:  # generate ended at the batch's max_new_tokens or EOS handled by generate itself
        if not row.done:
            row.out.flush()
            row.finish("length" if len(row.ids) >= row.job.sampling.max_tokens else "stop", stats)
