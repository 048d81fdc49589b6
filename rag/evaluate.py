"""Quality measurement on a folder laid out like the CMU Question-Answer Dataset.

`question_answer_pairs.txt` is tab-separated latin-1 with the columns ArticleTitle, Question, Answer,
DifficultyFromQuestioner, DifficultyFromAnswerer, ArticleFile; each article is ArticleFile +
".txt.clean". Questions are deduplicated into unique (question, article) pairs, each with every gold
answer given for it.
"""

from __future__ import annotations

import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lectern.errors import BadQADir, LecternError
from lectern.rag.answer_metrics import normalise

if TYPE_CHECKING:
    from lectern.rag.retrieval import Searcher
    from lectern.rag.settings import Settings

QA_FILE = "question_answer_pairs.txt"
ARTICLE_SUFFIX = ".txt.clean"
KS = (1, 5, 10)


@dataclass
class QAItem:
    question: str
    article: Path
    title: str
    answers: list[str] = field(default_factory=list)

    @property
    def answerable(self) -> list[str]:
        """Gold answers usable for answer matching: not yes/no, at least 4 characters normalised."""
        out = []
        for a in self.answers:
            n = normalise(a)
            if len(n) >= 4 and n not in ("yes", "no") and not n.startswith(("yes ", "no ")):
                out.append(n)
        return list(dict.fromkeys(out))


def load_qa(qa_dir: Path) -> list[QAItem]:
    """Unique (question, article) pairs whose article file exists, in file order."""
    path = qa_dir / QA_FILE
    if not path.is_file():
        raise BadQADir(f"{qa_dir}: no {QA_FILE} (expected the CMU Question-Answer Dataset layout)")
    items: dict[tuple[str, str], QAItem] = {}
    with path.open(encoding="latin-1", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        try:
            cols = {
                name: header.index(name) for name in ("ArticleTitle", "Question", "Answer", "ArticleFile")
            }
        except ValueError as err:
            raise BadQADir(f"{path}: header lacks a column ({err})") from None
        for row in reader:
            if len(row) <= max(cols.values()):
                continue
            question = row[cols["Question"]].strip()
            article_file = row[cols["ArticleFile"]].strip()
            if not question or not article_file or question == "NULL":
                continue
            article = qa_dir / (article_file + ARTICLE_SUFFIX)
            if not article.is_file():
                continue
            key = (question, article_file)
            item = items.setdefault(
                key, QAItem(question, article, row[cols["ArticleTitle"]].replace("_", " "))
            )
            answer = row[cols["Answer"]].strip()
            if answer and answer != "NULL":
                item.answers.append(answer)
    return list(items.values())


WORDINGS = ("question", "original")  # a questions file's field to ask: its own wording, or the set's


def load_questions(path: Path, qa_dir: Path, wording: str = "question") -> list[QAItem]:
    """Questions of a JSONL file over a CMU-layout folder's articles (bench/data/paraphrase_s08.jsonl):
    one object a line with `article` ("data/set1/a1"), `question`, `answers` and optionally `original`
    (the set's own wording of the same question) and `title`. `wording="original"` asks `original`, so
    one file measures a question worded both ways."""
    if wording not in WORDINGS:
        raise BadQADir(f"wording must be one of {', '.join(WORDINGS)}, not {wording!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BadQADir(f"{path}: cannot read the questions file ({err})") from None
    items: list[QAItem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadQADir(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise BadQADir(f"{where}: expected a JSON object")
        question, article, answers = row.get(wording), row.get("article"), row.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise BadQADir(f"{where}: `{wording}` must be a non-empty string")
        if not isinstance(article, str) or not article:
            raise BadQADir(f"{where}: `article` must name an article file, as data/set1/a1")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise BadQADir(f"{where}: `answers` must be a list of strings")
        file = qa_dir / (article + ARTICLE_SUFFIX)
        if not file.is_file():
            raise BadQADir(f"{where}: no article {file}")
        title = row.get("title") if isinstance(row.get("title"), str) else file.stem
        items.append(QAItem(question.strip(), file, str(title), list(answers)))
    if not items:
        raise BadQADir(f"{path}: no questions")
    return items


def articles_of(items: Sequence[QAItem]) -> list[Path]:
    return sorted({i.article for i in items})


@dataclass
class RankedChunk:
    """What an evaluated retriever returns per rank: the chunk's source file and its text."""

    source: str
    text: str


SearchFn = Callable[[str, int], list[RankedChunk]]


def retrieval_metrics(items: Sequence[QAItem], search: SearchFn) -> dict[str, float]:
    """article_hit@1/5/10, answer_hit@1/5/10, MRR@10 and mean query milliseconds."""
    kmax = max(KS)
    article_hits = {k: 0 for k in KS}
    answer_hits = {k: 0 for k in KS}
    answer_total = 0
    rr = 0.0
    times = []
    for item in items:
        t0 = time.perf_counter()
        ranked = search(item.question, kmax)
        times.append((time.perf_counter() - t0) * 1000)
        target = str(item.article.resolve())
        from_article = [str(Path(r.source).resolve()) == target for r in ranked]
        first = next((i for i, hit in enumerate(from_article) if hit), None)
        if first is not None:
            rr += 1.0 / (first + 1)
        for k in KS:
            article_hits[k] += any(from_article[:k])
        gold = item.answerable
        if gold:
            answer_total += 1
            texts = [normalise(r.text) for r in ranked]
            for k in KS:
                window = " | ".join(texts[:k])
                answer_hits[k] += any(g in window for g in gold)
    n = max(len(items), 1)
    out: dict[str, float] = {}
    for k in KS:
        out[f"article_hit@{k}"] = round(article_hits[k] / n, 4)
    for k in KS:
        out[f"answer_hit@{k}"] = round(answer_hits[k] / max(answer_total, 1), 4)
    out["MRR@10"] = round(rr / n, 4)
    out["mean_query_ms"] = round(statistics.fmean(times), 3) if times else 0.0
    return out


def run_retrieval_eval(
    qa_dir: Path, settings: Settings, mode: str | None = None, workdir: Path | None = None
) -> tuple[dict[str, float], int]:
    """Ingest the QA set's articles into a temporary collection and measure retrieval on it."""
    items = load_qa(qa_dir)
    with eval_searcher(articles_of(items), settings, workdir) as searcher:

        def run(question: str, n: int) -> list[RankedChunk]:
            return [
                RankedChunk(h.chunk.source, h.chunk.text) for h in searcher.search(question, k=n, mode=mode)
            ]

        return retrieval_metrics(items, run), len(items)


@contextmanager
def eval_searcher(
    articles: Sequence[Path], settings: Settings, workdir: Path | None = None
) -> Iterator[Searcher]:
    """A Searcher over a temporary collection of `articles` on the settings' store backend (milvus:
    a milvus-lite database in the temporary folder, or a collection of a Milvus server), removed afterwards."""
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.store_backends import open_backend
    from lectern.ingest.stores import Target
    from lectern.rag.retrieval import Searcher
    from lectern.rag.workspace import shared_embedder

    embedder = shared_embedder(settings.ingest.embed, settings.models_dir)
    with tempfile.TemporaryDirectory(prefix="lectern-eval-", dir=workdir) as tmp:
        store, name = settings.store, "eval"
        if store.backend == "milvus" and (store.uri is None or "://" not in store.uri):
            store = store.model_copy(update={"uri": str(Path(tmp) / "milvus.db")})
        elif store.backend == "milvus":  # a server, maybe shared: a name of this run's own
            name = f"eval-{Path(tmp).name}"
        backend = open_backend(store, Path(tmp))
        target = Target(backend, name)
        report = ingest(list(articles), target, embedder, settings.ingest)
        if not report.ok:
            backend.drop(target.name)
            raise LecternError(f"could not ingest {len(report.failed)} articles: {report.failed[0].reason}")
        collection = target.open()
        try:
            yield Searcher(collection, embedder, settings.retrieval)
        finally:
            collection.close()
            backend.drop(target.name)
            if store is not settings.store:  # the temporary milvus-lite database goes with the folder
                from lectern.ingest.milvus_store import close_client

                close_client(str(store.uri))
