"""Tests of rag.evaluate: normalisation, answerable answers, the CMU QA loader and hand-computed metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from lectern.errors import BadQADir
from lectern.rag.evaluate import QAItem, RankedChunk, articles_of, load_qa, normalise, retrieval_metrics

HEADER = "ArticleTitle\tQuestion\tAnswer\tDifficultyFromQuestioner\tDifficultyFromAnswerer\tArticleFile"


def write_qa(
    root: Path, rows: list[str], articles: tuple[str, ...] = ("data/set1/a1", "data/set1/a2")
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "question_answer_pairs.txt").write_bytes(("\n".join([HEADER, *rows]) + "\n").encode("latin-1"))
    for a in articles:
        path = root / f"{a}.txt.clean"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Article {a}\n")
    return root


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Edith  Varley.", "edith varley"),
        ("  14-October,1852 ", "14 october 1852"),
        ("", ""),
        ("!!!", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_answerable_drops_yes_no_and_short_answers() -> None:
    item = QAItem(
        "q?",
        Path("a"),
        "T",
        [
            "Yes.",
            "no",
            "No, he did not.",
            "yes it was",
            "Ohm",
            "1852",
            "Edith Varley",
            "edith varley!",
            "Nobel Prize",
        ],
    )
    assert item.answerable == ["1852", "edith varley", "nobel prize"]


def test_load_qa_dedupes_and_merges_answers(tmp_path: Path) -> None:
    qa = write_qa(
        tmp_path / "qa",
        [
            "James_Watt\tWho died in 1772?\tMargaret Miller\teasy\teasy\tdata/set1/a1",
            "James_Watt\tWho died in 1772?\tMargaret Miller.\thard\teasy\tdata/set1/a1",
            "James_Watt\tWho died in 1772?\tNULL\thard\tNULL\tdata/set1/a1",
            "Other_Page\tWho died in 1772?\tSomeone Else\teasy\teasy\tdata/set1/a2",
            "James_Watt\tNULL\tNULL\tNULL\tNULL\tdata/set1/a1",
            "James_Watt\tWas Watt Scottish?\tyes\teasy\teasy\tdata/set1/a1",
            "Gone\tWhere is the article?\tNowhere\teasy\teasy\tdata/set9/a9",
            "short\trow",
            "Caf\xe9_Page\tWhat is caf\xe9 au lait?\tCoffee with milk\teasy\teasy\tdata/set1/a2",
        ],
    )
    items = load_qa(qa)
    assert [(i.question, i.article.name) for i in items] == [
        ("Who died in 1772?", "a1.txt.clean"),
        ("Who died in 1772?", "a2.txt.clean"),  # same question, another article: its own item
        ("Was Watt Scottish?", "a1.txt.clean"),
        ("What is café au lait?", "a2.txt.clean"),  # latin-1 decoded
    ]
    assert items[0].answers == ["Margaret Miller", "Margaret Miller."]
    assert items[0].answerable == ["margaret miller"]
    assert items[0].title == "James Watt"
    assert items[2].answerable == []
    assert articles_of(items) == sorted({qa / "data/set1/a1.txt.clean", qa / "data/set1/a2.txt.clean"})


def test_load_qa_refuses_a_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(BadQADir, match=r"question_answer_pairs\.txt"):
        load_qa(tmp_path)
    (tmp_path / "question_answer_pairs.txt").write_text("Title\tQuestion\n")
    with pytest.raises(BadQADir, match="header"):
        load_qa(tmp_path)


def test_retrieval_metrics_hand_computed(tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{n}.txt.clean" for n in "abc")
    items = [
        QAItem("q1", a, "A", ["Edith Varley"]),  # article at rank 1, answer at rank 1
        QAItem("q2", b, "B", ["Yes."]),  # article at rank 3, no answerable gold
        QAItem("q3", c, "C", ["1852", "no"]),  # article and answer at rank 7
    ]
    ranked = {
        "q1": [RankedChunk(str(a), "Designed by EDITH VARLEY."), RankedChunk(str(b), "other")],
        "q2": [RankedChunk(str(a), "x"), RankedChunk(str(a), "y"), RankedChunk(str(b), "yes indeed")],
        "q3": [RankedChunk(str(a), f"filler {i}") for i in range(6)]
        + [RankedChunk(str(c), "First lit on 14 October 1852.")],
    }
    asked: list[tuple[str, int]] = []

    def search(question: str, k: int) -> list[RankedChunk]:
        asked.append((question, k))
        return ranked[question]

    m = retrieval_metrics(items, search)
    assert asked == [("q1", 10), ("q2", 10), ("q3", 10)]
    assert {k: v for k, v in m.items() if k != "mean_query_ms"} == {
        "article_hit@1": 0.3333,
        "article_hit@5": 0.6667,
        "article_hit@10": 1.0,
        "answer_hit@1": 0.5,
        "answer_hit@5": 0.5,
        "answer_hit@10": 1.0,
        "MRR@10": round((1 + 1 / 3 + 1 / 7) / 3, 4),
    }
    assert m["mean_query_ms"] >= 0.0


def test_retrieval_metrics_answer_must_lie_within_one_chunk(tmp_path: Path) -> None:
    a = tmp_path / "a.txt.clean"
    items = [QAItem("q", a, "A", ["Edith Varley"])]
    split = [RankedChunk(str(a), "designed by Edith"), RankedChunk(str(a), "Varley in 1850")]
    m = retrieval_metrics(items, lambda q, k: split)
    assert m["answer_hit@10"] == 0.0 and m["article_hit@1"] == 1.0 and m["MRR@10"] == 1.0


def test_retrieval_metrics_misses_and_empty(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt.clean", tmp_path / "b.txt.clean"
    m = retrieval_metrics(
        [QAItem("q", a, "A", ["answer text"])], lambda q, k: [RankedChunk(str(b), "nothing")]
    )
    assert m["article_hit@10"] == 0.0 and m["MRR@10"] == 0.0 and m["answer_hit@10"] == 0.0
    empty = retrieval_metrics([], lambda q, k: [])
    assert empty["MRR@10"] == 0.0 and empty["mean_query_ms"] == 0.0
