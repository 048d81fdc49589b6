"""`lectern tune --from-collection NAME`: question/answer/source pairs made from a collection's own
chunks by the local model, to train an adapter on (rag.llm.tune) without writing pairs by hand.

Deterministic and bounded: `count` pairs at most, from chunks picked by a seeded shuffle (chunks of
fewer than MIN_WORDS words skipped), each asked of the model greedily for one question and a short
answer. A reply is kept only when it has both parts, the answer is short (at most MAX_ANSWER_WORDS
words), the question shares a word with the passage and the passage holds most of the words the
answer adds to the question: a question the model made up from
memory teaches the adapter nothing about the collection. Each pair is shown with its chunk and one
other chunk of the collection in a seeded order, and the answer cites its chunk's number, as the QA
chain's answers do, so the adapter learns to pick the source that holds the answer.

    pairs = pairs_from_collection(ws, llm, count=24, seed=0)
    report, pairs = tune_from_collection(settings, "manuals", Path("adapter"), count=24)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.prompts import ChatPromptTemplate

from lectern.errors import InvalidInput
from lectern.rag.llm.tune import Pair, TuneReport, load_base, train_lora
from lectern.rag.types import Context

if TYPE_CHECKING:
    from lectern.ingest.stores import StoredChunk
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

MIN_WORDS = 25
MAX_ANSWER_WORDS = 30  # the concise QA prompt asks for one short sentence
MAX_PAIRS = 500
PASSAGE_WORDS = 220  # the start of a long chunk is enough to ask about, and keeps prompts short
ASK_FOR_PAIR = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You write one reading-comprehension question about a passage, and its answer copied from "
            "the passage. Example:\nPassage: The bridge was opened in 1850 by the engineer Ada Lovelace.\n"
            "Question: Who opened the bridge?\nAnswer: The engineer Ada Lovelace.",
        ),
        ("human", "Passage: {passage}"),
    ]
)
REPLY_START = "Question:"
"""The reply is made to start with this (small models otherwise chat about the task)."""
_REPLY = re.compile(r"Question:\s*(?P<q>.+?)\s*\n+\s*Answer:\s*(?P<a>.+)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "by",
        "to",
        "for",
        "and",
        "or",
        "was",
        "is",
        "were",
        "are",
        "it",
        "its",
        "as",
        "with",
        "from",
        "that",
        "this",
    ]
)


def parse_pair(reply: str, passage: str) -> tuple[str, str] | None:
    """(question, answer) from a model's reply, or None when it is not usable (see the module)."""
    match = _REPLY.search(reply)
    if not match:
        return None
    question = match.group("q").strip().strip('"')
    answer = match.group("a").strip().splitlines()[0].strip().strip('"').rstrip(".").strip()
    if not question or not answer or len(answer.split()) > MAX_ANSWER_WORDS:
        return None
    words = set(_WORD.findall(passage.lower()))
    asked = set(_WORD.findall(question.lower()))
    new = [w for w in _WORD.findall(answer.lower()) if w not in asked and w not in _FILLER]
    if not new or sum(w in words for w in new) * 2 < len(new) + 1:  # most of what it adds is there
        return None
    if answer.lower() in question.lower():  # the question gives its own answer away
        return None
    if not any(len(w) > 3 and w in words for w in _WORD.findall(question.lower())):
        return None  # not about the passage ("What was the answer to this question?")
    return (question if question.endswith("?") else question + "?"), answer


def _chunks(ws: Workspace) -> list[StoredChunk]:
    collection = ws.collection()
    return [c for d in ws.documents() for c in collection.chunks_of(d.source)]


def _context(number: int, chunk: StoredChunk) -> Context:
    return Context(
        number=number,
        chunk_id=chunk.chunk_id,
        source=chunk.source,
        page=chunk.page,
        heading=chunk.heading,
        title=chunk.title or "",
        text=chunk.text,
    )


def pairs_from_collection(
    ws: Workspace,
    llm: Any,
    *,
    count: int = 24,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Pair]:
    """Up to `count` pairs from the chunks of `ws`'s collection, written by `llm` (a LocalChatModel)
    greedily; the same collection, model and seed give the same pairs."""
    if not 1 <= count <= MAX_PAIRS:
        raise InvalidInput("--pairs", count, f"must be between 1 and {MAX_PAIRS}")
    chunks = _chunks(ws)
    usable = [c for c in chunks if len(c.text.split()) >= MIN_WORDS]
    if not usable:
        raise InvalidInput(
            "--from-collection", ws.name, f"no chunk of {MIN_WORDS} words or more to ask about"
        )
    rng = random.Random(seed)
    order = list(usable)
    rng.shuffle(order)
    pairs: list[Pair] = []
    size = max(1, int(getattr(llm, "batch_size", 8)))
    tried = 0
    for start in range(0, len(order), size):
        batch = order[start : start + size]
        passages = [" ".join(c.text.split()[:PASSAGE_WORDS]) for c in batch]
        prompts = [llm._prompt_text(ASK_FOR_PAIR.format_messages(passage=p)) + REPLY_START for p in passages]
        replies = [REPLY_START + r for r in llm.generate_many(prompts, max_new_tokens=64, temperature=0)]
        for chunk, passage, reply in zip(batch, passages, replies, strict=True):
            tried += 1
            found = parse_pair(reply, passage)
            if found is not None:
                pairs.append(_pair(found, chunk, chunks, rng))
            if len(pairs) == count:
                break
        if progress is not None:
            progress(len(pairs), tried)
        if len(pairs) == count:
            break
    if not pairs:
        raise InvalidInput(
            "--from-collection", ws.name, f"the model wrote no usable pair from {tried} chunks"
        )
    return pairs


def _pair(
    found: tuple[str, str], chunk: StoredChunk, chunks: Sequence[StoredChunk], rng: random.Random
) -> Pair:
    """The pair shown with its chunk and one other (a seeded pick and order); the answer cites its own."""
    question, answer = found
    others = [c for c in chunks if c.chunk_id != chunk.chunk_id]
    shown = [chunk, rng.choice(others)] if others else [chunk]
    rng.shuffle(shown)
    sources = [_context(i, c) for i, c in enumerate(shown, 1)]
    number = next(s.number for s in sources if s.chunk_id == chunk.chunk_id)
    return Pair(question, f"{answer}. [{number}]", sources)


def tune_from_collection(
    settings: Settings,
    collection: str,
    out: Path,
    *,
    count: int = 24,
    seed: int = 0,
    pairs_out: Path | None = None,
    on_pairs: Callable[[int, int], None] | None = None,
    **options: Any,
) -> tuple[TuneReport, list[Pair]]:
    """Make pairs from `collection` with the base model, then train an adapter on them with that
    same model (one load). The collection is checked before the model loads."""
    from lectern.rag.workspace import Workspace

    if settings.llm.backend not in ("local", "auto"):
        raise InvalidInput("llm.backend", settings.llm.backend, "only the local backend can be tuned")
    ws = Workspace(collection=collection, settings=settings)
    try:
        ws.collection()  # CollectionNotFound, before minutes of model loading
        if not 1 <= count <= MAX_PAIRS:
            raise InvalidInput("--pairs", count, f"must be between 1 and {MAX_PAIRS}")
        llm = load_base(settings.llm, settings.models_dir)
        pairs = pairs_from_collection(ws, llm, count=count, seed=seed, progress=on_pairs)
    finally:
        ws.close()
    if pairs_out is not None:
        write_pairs(pairs, pairs_out)
    return train_lora(llm, pairs, out, seed=seed, **options), pairs


def write_pairs(pairs: Sequence[Pair], path: Path) -> None:
    """The pairs as JSON lines in `--data`'s format, to read, edit and train on again."""
    import json

    lines = []
    for pair in pairs:
        sources = [
            {"source": s.source, "page": s.page, "title": s.title, "text": s.text} for s in pair.sources
        ]
        lines.append(json.dumps({"question": pair.question, "answer": pair.answer, "sources": sources}))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
