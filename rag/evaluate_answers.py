"""Answer quality on a CMU-layout QA folder: does the cited answer contain the gold answer, cite the
right article, and abstain when the article is missing?

    metrics = run_answer_eval(Path("data/S08"), settings, limit=40)

All articles are ingested into one temporary collection. Each sampled question is asked twice with
the QA chain (settings.llm picks the model): once over the whole collection, and once with a source
filter that admits every article except the question's own. The filter is applied inside the index
search (before the top-k cut), so the model sees the k best chunks of a collection that lacks the
article, without a second ingest. The one difference from a real second collection: BM25's document
frequencies still count the hidden article (a small effect on scores, none on which chunks can come
back).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rag.evaluate import QAItem, articles_of, eval_searcher, load_qa, normalise

if TYPE_CHECKING:
    from rich.console import Console

    from rag.qa import QAChain
    from rag.settings import Settings
    from rag.types import Answer

Progress = Callable[[int, int], None]
KEYS = (
    "answer_contains",
    "citation_hit",
    "abstain_rate",
    "answered_abstain_rate",
    "mean_seconds",
    "n",
)


def sample_answerable(items: Sequence[QAItem], limit: int | None, seed: int = 0) -> list[QAItem]:
    """`limit` questions with a usable gold answer, drawn with `seed`, kept in file order."""
    pool = [(i, item) for i, item in enumerate(items) if item.answerable]
    if limit is not None and limit < len(pool):
        pool = sorted(random.Random(seed).sample(pool, limit), key=lambda p: p[0])
    return [item for _, item in pool]


def contains_gold(answer: str, gold: Sequence[str]) -> bool:
    """A normalised gold answer appears in the normalised answer, on word boundaries."""
    text = f" {normalise(answer)} "
    return any(f" {g} " in text for g in gold)


def cites_article(answer: Answer, article: Path) -> bool:
    target = str(article.resolve())
    return any(str(Path(c.source).resolve()) == target for c in answer.citations)


def answer_metrics(
    items: Sequence[QAItem],
    ask: Callable[[QAItem], Answer],
    ask_without: Callable[[QAItem], Answer],
    progress: Progress | None = None,
) -> dict[str, float]:
    """The metrics of `run_answer_eval` for any pair of ask functions (with / without the article)."""
    contains = cited = answered = abstained = abstained_without = 0
    times: list[float] = []
    for done, item in enumerate(items, 1):
        t0 = time.perf_counter()
        answer = ask(item)
        times.append(time.perf_counter() - t0)
        contains += contains_gold(answer.answer, item.answerable)
        if answer.abstained:
            abstained += 1
        else:
            answered += 1
            cited += cites_article(answer, item.article)
        abstained_without += ask_without(item).abstained
        if progress is not None:
            progress(done, len(items))
    n = len(items)
    return {
        "answer_contains": round(contains / n, 4) if n else 0.0,
        "citation_hit": round(cited / answered, 4) if answered else 0.0,
        "abstain_rate": round(abstained_without / n, 4) if n else 0.0,
        "answered_abstain_rate": round(abstained / n, 4) if n else 0.0,
        "mean_seconds": round(statistics.fmean(times), 3) if times else 0.0,
        "n": n,
    }


def run_answer_eval(
    qa_dir: Path,
    settings: Settings,
    limit: int | None,
    seed: int = 0,
    *,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Ingest the QA set's articles into a temporary collection and measure the QA chain's answers
    on `limit` sampled answerable questions (keys: see KEYS)."""
    from ingest.pipeline import source_key
    from rag.qa import build_qa_chain
    from rag.retrieval import Filters, LecternRetriever
    from rag.workspace import qa_options, shared_llm

    all_items = load_qa(qa_dir)
    items = sample_answerable(all_items, limit, seed)
    articles = articles_of(all_items)
    keys = {a: source_key(a) for a in articles}
    llm = shared_llm(settings)
    r = settings.retrieval
    options = qa_options(settings)
    with eval_searcher(articles, settings, workdir) as searcher:

        def chain(filters: Filters | None) -> QAChain:
            retriever = LecternRetriever(searcher=searcher, k=r.k, mode=r.mode, mmr=r.mmr, filters=filters)
            return build_qa_chain(llm, retriever, **options)

        full = chain(None)

        def without(item: QAItem) -> Answer:
            others = tuple(keys[a] for a in articles if a != item.article)
            return chain(Filters(sources=others)).invoke(item.question)

        return answer_metrics(items, lambda item: full.invoke(item.question), without, progress)


def eval_answers_command(
    qa_dir: Path,
    settings: Settings,
    limit: int | None = 50,
    *,
    as_json: bool = False,
    console: Console | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """`lectern eval answers`: run the eval and print one JSON object or a table."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    out = console or Console()
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]asking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=as_json or not err.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("ask", total=None)
        metrics = run_answer_eval(
            qa_dir, settings, limit, seed, progress=lambda d, t: bar.update(task, completed=d, total=t)
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
