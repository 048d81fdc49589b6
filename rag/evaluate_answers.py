"""Answer quality on a CMU-layout QA folder: does the cited answer contain the gold answer, cite the
passage that holds it, and abstain when the article is missing?

    metrics = run_answer_eval(Path("data/S08"), settings, limit=60, out=Path("s08.jsonl"))

All articles are ingested into one temporary collection. Each sampled question is asked twice with
the QA chain (settings.llm picks the model): once over the whole collection, and once with a source
filter that admits every article except the question's own. The filter is applied inside the index
search (before the top-k cut), so the model sees the k best chunks of a collection that lacks the
article, without a second ingest. The one difference from a real second collection: BM25's document
frequencies still count the hidden article (a small effect on scores, none on which chunks can come
back). `AnswerEval` keeps the collection open so that several configurations (models, prompts) are
measured side by side on the same index in one run (bench/answer_quality.py).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lectern.rag.answer_metrics import (
    RECALL_MATCH,
    answer_recall,
    contains_gold,
    context_has_answer,
    lenient_contains,
    token_f1,
)
from lectern.rag.citations import without_markers
from lectern.rag.evaluate import QAItem, articles_of, eval_searcher, load_qa, load_questions

if TYPE_CHECKING:
    from rich.console import Console

    from lectern.rag.retrieval import Searcher
    from lectern.rag.settings import Settings
    from lectern.rag.types import Answer

Progress = Callable[[int, int], None]
KEYS = (
    "answer_contains",
    "answer_lenient",
    "answer_recall",
    "token_f1",
    "context_has_answer",
    "generation_efficiency",
    "citation_hit",
    "citation_precision",
    "abstain_rate",
    "answered_abstain_rate",
    "mean_seconds",
    "mean_answer_tokens",
    "mean_source_tokens",
    "n",
)

__all__ = [
    "KEYS",
    "AnswerEval",
    "QuestionRecord",
    "QuestionSource",
    "answer_eval",
    "answer_metrics",
    "collect",
    "contains_gold",
    "eval_answers_command",
    "run_answer_eval",
    "sample_answerable",
    "summarise",
]


def sample_answerable(items: Sequence[QAItem], limit: int | None, seed: int = 0) -> list[QAItem]:
    """`limit` questions with a usable gold answer, drawn with `seed`, kept in file order."""
    pool = [(i, item) for i, item in enumerate(items) if item.answerable]
    if limit is not None and limit < len(pool):
        pool = sorted(random.Random(seed).sample(pool, limit), key=lambda p: p[0])
    return [item for _, item in pool]


def cites_article(answer: Answer, article: Path) -> bool:
    target = str(article.resolve())
    return any(str(Path(c.source).resolve()) == target for c in answer.citations)


def cited_passages(answer: Answer) -> list[str]:
    """The texts the model was shown for the sources the answer cites."""
    by_number = {c.number: c.text for c in answer.contexts}
    return [by_number[c.number] for c in answer.citations if c.number in by_number]


@dataclass
class QuestionRecord:
    """One question of the eval, as written to `--out FILE.jsonl`."""

    question: str
    article: str
    gold: list[str]
    answer: str
    abstained: bool
    seconds: float
    contains: bool
    lenient: bool
    recall: float  # share of the gold's content words in the answer (rag.answer_metrics.answer_recall)
    f1: float
    context_has_answer: bool
    cites_article: bool
    cited_has_answer: bool | None  # None unless the answer contains the gold answer
    citations: list[dict[str, Any]] = field(default_factory=list)
    answer_tokens: int | None = None
    # the tokens of the sources the model was shown (what its prefill costs, beside a fixed prompt)
    source_tokens: int | None = None
    hidden_answer: str = ""
    hidden_abstained: bool = False
    hidden_seconds: float = 0.0
    hidden_sources: list[str] = field(default_factory=list)  # what the ask without the article saw
    hidden_abstained_by: str | None = None  # why the ask without the article abstained
    abstained_by: str | None = None  # retrieval, evidence, model or unsupported (rag.types.AbstainReason)
    retried: str | None = None  # the check the first answer failed, when it was asked again (rag.verify)
    first_answer: str | None = None  # the model's words a check replaced or withdrew (None: they stand)
    hidden_first_answer: str | None = None  # the same for the ask without the article

    @classmethod
    def of(
        cls,
        item: QAItem,
        answer: Answer,
        seconds: float,
        hidden: Answer,
        hidden_s: float,
        tokens: int | None,
        source_tokens: int | None = None,
    ) -> QuestionRecord:
        gold = item.answerable
        text = without_markers(answer.answer)  # "[2]" is no part of the answer's words
        contains = contains_gold(text, gold) and not answer.abstained
        return cls(
            question=item.question,
            article=item.article.name,
            gold=gold,
            answer=answer.answer,
            abstained=answer.abstained,
            seconds=round(seconds, 3),
            contains=contains,
            lenient=lenient_contains(text, gold) and not answer.abstained,
            recall=0.0 if answer.abstained else round(answer_recall(text, gold), 4),
            f1=0.0 if answer.abstained else round(token_f1(text, gold), 4),
            context_has_answer=context_has_answer([c.text for c in answer.contexts], gold),
            cites_article=not answer.abstained and cites_article(answer, item.article),
            cited_has_answer=(
                any(lenient_contains(p, gold) for p in cited_passages(answer)) if contains else None
            ),
            citations=[
                {"number": c.number, "source": Path(c.source).name, "page": c.page, "chunk_id": c.chunk_id}
                for c in answer.citations
            ],
            answer_tokens=tokens,
            source_tokens=source_tokens,
            hidden_answer=hidden.answer,
            hidden_abstained=hidden.abstained,
            hidden_seconds=round(hidden_s, 3),
            hidden_sources=sorted({Path(c.source).name for c in hidden.contexts}),
            hidden_abstained_by=hidden.abstained_by,
            abstained_by=answer.abstained_by,
            retried=answer.retried,
            first_answer=answer.first_answer,
            hidden_first_answer=hidden.first_answer,
        )


def _share(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


def summarise(records: Sequence[QuestionRecord]) -> dict[str, float]:
    """The eval's metrics (KEYS) from its per-question records."""
    n = len(records)
    answered = [r for r in records if not r.abstained]
    right = [r for r in records if r.contains]
    contains = sum(r.contains for r in records)
    in_context = sum(r.context_has_answer for r in records)
    tokens = [r.answer_tokens for r in answered if r.answer_tokens is not None]
    shown = [r.source_tokens for r in answered if r.source_tokens is not None]
    return {
        "answer_contains": _share(contains, n),
        "answer_lenient": _share(sum(r.lenient for r in records), n),
        "answer_recall": _share(sum(r.recall >= RECALL_MATCH for r in records), n),
        "token_f1": round(statistics.fmean(r.f1 for r in records), 4) if n else 0.0,
        "context_has_answer": _share(in_context, n),
        "generation_efficiency": _share(contains, in_context),
        "citation_hit": _share(sum(r.cites_article for r in answered), len(answered)),
        "citation_precision": _share(sum(bool(r.cited_has_answer) for r in right), len(right)),
        "abstain_rate": _share(sum(r.hidden_abstained for r in records), n),
        "answered_abstain_rate": _share(n - len(answered), n),
        "mean_seconds": round(statistics.fmean(r.seconds for r in records), 3) if n else 0.0,
        "mean_answer_tokens": round(statistics.fmean(tokens), 1) if tokens else 0.0,
        "mean_source_tokens": round(statistics.fmean(shown), 1) if shown else 0.0,
        "n": n,
    }


def collect(
    items: Sequence[QAItem],
    ask: Callable[[QAItem], QuestionRecord],
    progress: Progress | None = None,
    out: IO[str] | None = None,
) -> dict[str, float]:
    """Ask every item; one JSON line per question goes to `out` as soon as it is measured."""
    records: list[QuestionRecord] = []
    for done, item in enumerate(items, 1):
        record = ask(item)
        records.append(record)
        if out is not None:
            out.write(json.dumps(asdict(record)) + "\n")
            out.flush()
        if progress is not None:
            progress(done, len(items))
    return summarise(records)


def answer_metrics(
    items: Sequence[QAItem],
    ask: Callable[[QAItem], Answer],
    ask_without: Callable[[QAItem], Answer],
    progress: Progress | None = None,
    out: IO[str] | None = None,
) -> dict[str, float]:
    """The metrics of `run_answer_eval` for any pair of ask functions (with / without the article)."""

    def record(item: QAItem) -> QuestionRecord:
        t0 = time.perf_counter()
        answer = ask(item)
        t1 = time.perf_counter()
        hidden = ask_without(item)
        return QuestionRecord.of(item, answer, t1 - t0, hidden, time.perf_counter() - t1, None)

    return collect(items, record, progress, out)


class AnswerEval:
    """An open eval: the QA set's articles in a temporary collection, questions sampled once.
    `run(settings)` measures one configuration; call it again for another, on the same index."""

    def __init__(self, items: list[QAItem], articles: list[Path], searcher: Searcher) -> None:
        from lectern.ingest.sources import source_key

        self.items = items
        self.articles = articles
        self.searcher = searcher
        self._keys = {a: source_key(a) for a in articles}

    def asker(self, settings: Settings) -> Callable[[QAItem], QuestionRecord]:
        """A function that asks one question with these settings, with its article and without it."""
        from lectern.rag.prompts import format_sources
        from lectern.rag.qa import QAChain
        from lectern.rag.retrieval import Filters, Searcher
        from lectern.rag.window import count_tokens
        from lectern.rag.workspace import chain_from_settings, shared_llm

        llm = shared_llm(settings)
        # the index is shared; these settings' retrieval options (weights, spelling...) are not
        searcher = Searcher(self.searcher.collection, self.searcher.embedder, settings.retrieval)

        def chain(filters: Filters | None) -> QAChain:
            return chain_from_settings(settings, searcher, filters=filters)  # the settings' model

        full = chain(None)

        def ask(item: QAItem) -> QuestionRecord:
            t0 = time.perf_counter()
            answer = full.invoke(item.question)
            t1 = time.perf_counter()
            others = tuple(self._keys[a] for a in self.articles if a != item.article)
            hidden = chain(Filters(sources=others)).invoke(item.question)
            tokens = count_tokens(llm, answer.raw) if answer.raw else None
            shown = count_tokens(llm, format_sources(answer.contexts)) if answer.raw else None
            return QuestionRecord.of(item, answer, t1 - t0, hidden, time.perf_counter() - t1, tokens, shown)

        return ask

    def run(
        self, settings: Settings, *, progress: Progress | None = None, out: IO[str] | None = None
    ) -> dict[str, float]:
        """The metrics (KEYS) of one configuration; one JSON line per question to `out`."""
        return collect(self.items, self.asker(settings), progress, out)


@dataclass(frozen=True)
class QuestionSource:
    """Where the eval's questions come from: the QA folder's own file, or a questions file over its
    articles (rag.evaluate.load_questions), asked in its own wording or the set's original one."""

    file: Path | None = None
    wording: str = "question"

    def items(self, qa_dir: Path) -> list[QAItem]:
        return load_qa(qa_dir) if self.file is None else load_questions(self.file, qa_dir, self.wording)


@contextmanager
def answer_eval(
    qa_dir: Path,
    settings: Settings,
    limit: int | None,
    seed: int = 0,
    *,
    workdir: Path | None = None,
    questions: QuestionSource | None = None,
) -> Iterator[AnswerEval]:
    """Ingest the QA set's articles (settings.ingest) and sample `limit` answerable questions, from
    the folder's own questions or `questions`. Every article is ingested either way, so a question's
    article competes with the same others and can be hidden the same way."""
    articles = articles_of(load_qa(qa_dir))
    items = (questions or QuestionSource()).items(qa_dir)
    with eval_searcher(articles, settings, workdir) as searcher:
        yield AnswerEval(sample_answerable(items, limit, seed), articles, searcher)


def run_answer_eval(
    qa_dir: Path,
    settings: Settings,
    limit: int | None,
    seed: int = 0,
    *,
    workdir: Path | None = None,
    progress: Progress | None = None,
    out: IO[str] | None = None,
    questions: QuestionSource | None = None,
) -> dict[str, float]:
    """Ingest the QA set's articles into a temporary collection and measure the QA chain's answers
    on `limit` sampled answerable questions (keys: see KEYS)."""
    with answer_eval(qa_dir, settings, limit, seed, workdir=workdir, questions=questions) as session:
        return session.run(settings, progress=progress, out=out)


def eval_answers_command(
    qa_dir: Path,
    settings: Settings,
    limit: int | None = 60,
    *,
    as_json: bool = False,
    console: Console | None = None,
    seed: int = 0,
    out_path: Path | None = None,
    questions: QuestionSource | None = None,
) -> dict[str, float]:
    """`lectern eval answers`: run the eval and print one JSON object or a table; with `out_path`,
    one JSON line per question (question, gold, answer, citations, abstained, seconds, ...)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    out = console or Console()
    err = Console(stderr=True)
    with (
        Progress(
            TextColumn("[bold]asking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=True, disable=as_json or not err.is_terminal,
        ) as bar,
        (out_path.open("w", encoding="utf-8") if out_path else _no_file()) as lines,
    ):  # fmt: skip
        task = bar.add_task("ask", total=None)
        metrics = run_answer_eval(
            qa_dir,
            settings,
            limit,
            seed,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
            out=lines,
            questions=questions,
        )
    if as_json:
        out.print(json.dumps(metrics), soft_wrap=True, highlight=False, markup=False)
        return metrics
    llm = settings.llm.model if settings.llm.backend != "fake" else "fake model"
    table = Table(title=f"answers on {qa_dir} ({metrics['n']} questions, {llm})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, str(int(value)) if name == "n" else f"{value:.4f}")
    out.print(table)
    return metrics


@contextmanager
def _no_file() -> Iterator[None]:
    yield None
