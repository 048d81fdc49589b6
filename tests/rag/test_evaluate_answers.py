"""Tests of rag.evaluate_answers: hand-computed metrics, a fake-model run on two CMU articles, and
(e2e) a real MiniLM + SmolLM2 run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

import lectern.rag.evaluate_answers as ea
from lectern.errors import BadQADir
from lectern.rag.evaluate import QAItem
from lectern.rag.types import Answer, Citation, Context
from tests.conftest import CMU_DATA

CMU = CMU_DATA / "S08"
HEADER = "ArticleTitle\tQuestion\tAnswer\tDifficultyFromQuestioner\tDifficultyFromAnswerer\tArticleFile"
ROWS = [
    # Celsius (data/set4/a5): the fake model answers with the chunk's first sentence, which names him
    "Anders_Celsius\tWho determined the dependence of the boiling of water with atmospheric pressure?"
    "\tAnders Celsius\teasy\teasy\tdata/set4/a5",
    "Anders_Celsius\tWhen did Celsius publish a collection of observations of the aurora borealis?"
    "\t1733\teasy\teasy\tdata/set4/a5",  # 1733 is not in the first sentence
    "Anders_Celsius\tWas Celsius born in Uppsala in Sweden?\tYes\teasy\teasy\tdata/set4/a5",  # not answerable
    "Henri_Becquerel\tWho won the 1903 Nobel Prize in Physics for discovering radioactivity ?"
    "\tHenri Becquerel\teasy\teasy\tdata/set4/a9",
]

needs_cmu = pytest.mark.skipif(not CMU.is_dir(), reason="CMU QA data not available")


def tiny_qa(root: Path) -> Path:
    """Two real CMU articles and a few of their QA rows."""
    for article in ("data/set4/a5", "data/set4/a9"):
        target = root / f"{article}.txt.clean"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CMU / f"{article}.txt.clean", target)
    (root / "question_answer_pairs.txt").write_bytes(("\n".join([HEADER, *ROWS]) + "\n").encode("latin-1"))
    return root


def answer(
    text: str, sources: Sequence[Path] = (), abstained: bool = False, passages: Sequence[str] = ()
) -> Answer:
    """An Answer citing `sources` as [1], [2]...; `passages` are the texts the model was shown."""
    cites = [
        Citation(number=i, source=str(s), page=None, chunk_id=f"c{i}", quote="")
        for i, s in enumerate(sources, 1)
    ]
    contexts = [Context(number=i, chunk_id=f"c{i}", source="s", text=t) for i, t in enumerate(passages, 1)]
    return Answer(question="q", answer=text, citations=cites, contexts=contexts, abstained=abstained)


def test_sample_answerable_is_deterministic_and_in_file_order(tmp_path: Path) -> None:
    items = [QAItem(f"q{i}", tmp_path, "T", ["Yes"] if i % 3 == 0 else [f"answer {i}"]) for i in range(30)]
    first = ea.sample_answerable(items, 5, seed=1)
    assert first == ea.sample_answerable(items, 5, seed=1)
    assert len(first) == 5 and all(i.answerable for i in first)
    assert [items.index(i) for i in first] == sorted(items.index(i) for i in first)
    assert ea.sample_answerable(items, 5, seed=2) != first
    assert len(ea.sample_answerable(items, None)) == len(ea.sample_answerable(items, 1000)) == 20


def test_contains_gold_on_word_boundaries() -> None:
    assert ea.contains_gold("It was Edith  VARLEY, in 1852. [1]", ["edith varley"])
    assert not ea.contains_gold("In 18520.", ["1852"])
    assert not ea.contains_gold("", ["1852"])


def test_answer_metrics_hand_computed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt.clean", tmp_path / "b.txt.clean"
    items = [
        QAItem("q1", a, "A", ["Edith Varley"]),  # contained, cites a: hit
        QAItem("q2", a, "A", ["1852"]),  # not contained, cites b only: miss
        QAItem("q3", b, "B", ["Nobel Prize"]),  # abstains: not answered
        QAItem("q4", b, "B", ["radioactivity"]),  # contained, cites a and b: hit
    ]
    answers = {
        # right, and the cited passage holds it: a precise citation
        "q1": answer("Edith Varley designed it. [1]", [a], passages=["It was designed by Edith Varley."]),
        # wrong, though the passage shown held the answer
        "q2": answer("In 1853. [1]", [b], passages=["It was first lit in 1852."]),
        "q3": answer("I don't know.", abstained=True, passages=["Nothing here."]),
        # right (from memory): neither cited passage holds it
        "q4": answer("Radioactivity! [1][2]", [a, b], passages=["He studied rays.", "He found uranium."]),
    }
    without = {"q1": True, "q2": False, "q3": True, "q4": True}
    seen: list[tuple[int, int]] = []
    m = ea.answer_metrics(
        items,
        lambda i: answers[i.question],
        lambda i: answer("x", abstained=without[i.question]),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert m["mean_seconds"] >= 0
    assert {k: v for k, v in m.items() if k != "mean_seconds"} == {
        "answer_contains": 0.5,
        "answer_lenient": 0.5,
        "answer_recall": 0.5,  # q1 and q4 hold every content word of their gold
        # F1 per question (markers dropped): q1 P=2/4 R=1 -> 2/3; q2 0; q3 abstained 0; q4 1
        "token_f1": round((2 / 3 + 0 + 0 + 1) / 4, 4),
        "context_has_answer": 0.5,  # q1 and q2
        "generation_efficiency": 1.0,  # 2 right of the 2 whose sources held the answer
        "citation_hit": round(2 / 3, 4),
        "citation_precision": 0.5,  # of q1 and q4 (right), only q1's cited passage holds it
        "abstain_rate": 0.75,
        "answered_abstain_rate": 0.25,
        "mean_answer_tokens": 0.0,  # not counted here
        "mean_source_tokens": 0.0,
        "n": 4,
    }
    assert set(m) == set(ea.KEYS)


@needs_cmu
def test_run_answer_eval_with_fake_models(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.llm.backend = "fake"
    qa = tiny_qa(tmp_path / "qa")
    lines = StringIO()
    m = ea.run_answer_eval(qa, settings, limit=None, workdir=tmp_path, out=lines)
    assert set(m) == set(ea.KEYS)
    assert m["n"] == 3  # the yes/no question is not answerable
    for key in ("answer_contains", "citation_hit", "abstain_rate", "answered_abstain_rate"):
        assert 0.0 <= m[key] <= 1.0
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [r["question"][:20] for r in records] == [
        "Who determined the d",
        "When did Celsius pub",
        "Who won the 1903 Nob",
    ]
    assert set(records[0]) == {f.name for f in dataclasses.fields(ea.QuestionRecord)}
    # the fake model quotes and cites the first sentence it is shown. Becquerel's best sentence
    # names him (right); the best sentences for the two Celsius questions name neither Celsius nor 1733
    assert [r["contains"] for r in records] == [False, False, True]
    assert m["answer_contains"] == round(1 / 3, 4) and m["citation_hit"] == 1.0
    assert m["answered_abstain_rate"] == 0.0
    # with the article hidden the other article lacks the question's subject: the evidence abstains
    assert m["abstain_rate"] == 1.0
    # the pass without the article never showed the model a chunk of it
    for r in records:
        assert r["article"] not in r["hidden_sources"]
    assert not list(tmp_path.glob("lectern-eval-*"))  # the temporary collection is gone


@needs_cmu
def test_eval_answers_command_prints_one_json_object(tmp_path: Path, settings: Any) -> None:
    from io import StringIO

    from rich.console import Console

    settings.llm.backend = "fake"
    buffer = StringIO()
    ea.eval_answers_command(
        tiny_qa(tmp_path / "qa"), settings, 2, as_json=True, console=Console(file=buffer, width=40)
    )
    data = json.loads(buffer.getvalue())
    assert set(data) == set(ea.KEYS) and data["n"] == 2


@needs_cmu
def test_a_questions_file_is_asked_in_either_wording(tmp_path: Path, settings: Any) -> None:
    """`--questions FILE`: the file's questions over the folder's articles; `--wording original`
    asks the same lines in the set's own words. Every article is still ingested."""
    settings.llm.backend = "fake"
    qa = tiny_qa(tmp_path / "qa")
    rows = [
        {
            "article": "data/set4/a9",
            "question": "Which physicist shared the 1903 physics prize for finding radioactivity?",
            "original": "Who won the 1903 Nobel Prize in Physics for discovering radioactivity ?",
            "answers": ["Henri Becquerel"],
        },
        {"article": "data/set4/a5", "question": "Where was Celsius born?", "answers": ["Uppsala"]},
    ]
    questions = tmp_path / "para.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = StringIO()
    source = ea.QuestionSource(questions)
    m = ea.run_answer_eval(qa, settings, None, workdir=tmp_path, out=lines, questions=source)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [r["question"] for r in records] == [rows[0]["question"], rows[1]["question"]]
    assert m["n"] == 2 and {r["article"] for r in records} == {"a9.txt.clean", "a5.txt.clean"}
    # hidden: the other article alone is searched
    assert [r["hidden_sources"] for r in records] == [["a5.txt.clean"], ["a9.txt.clean"]]
    # the original wording: a line without one is refused by name, not skipped
    with pytest.raises(BadQADir, match=r"para.jsonl, line 2: `original` must be"):
        ea.QuestionSource(questions, "original").items(qa)
    questions.write_text(json.dumps(rows[0]) + "\n")
    lines = StringIO()
    ea.run_answer_eval(
        qa, settings, None, workdir=tmp_path, out=lines, questions=ea.QuestionSource(questions, "original")
    )
    assert json.loads(lines.getvalue())["question"] == rows[0]["original"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "line 1: not JSON"),
        ('["a list"]', "line 1: expected a JSON object"),
        ('{"article": "data/set4/a9", "answers": ["x"]}', "line 1: `question` must be"),
        ('{"article": "data/set9/a1", "question": "q?", "answers": ["x"]}', "line 1: no article"),
        ('{"article": "data/set4/a9", "question": "q?", "answers": "x"}', "line 1: `answers` must be"),
        ("", "no questions"),
    ],
)
@needs_cmu
def test_a_bad_questions_file_names_the_line_and_the_field(
    tmp_path: Path, content: str, message: str
) -> None:
    qa = tiny_qa(tmp_path / "qa")
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(BadQADir, match=message):
        ea.QuestionSource(path).items(qa)
