"""`lectern tune --from-collection`: pairs made from a collection's chunks (rag.tune_pairs) with a
scripted stand-in for the local model (its prompts recorded, its replies given), the reply check,
the bound and the determinism; the CLI's choice of --data or --from-collection; and (e2e) the whole
command with the real SmolLM2, tiny."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.errors import InvalidInput
from lectern.rag.tune_pairs import REPLY_START, pairs_from_collection, parse_pair, write_pairs
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE

PASSAGE = "The Brennock canal was opened in 1821 by the engineer Ada Brennock, who built its 42 locks."


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Question: Who opened the canal?\nAnswer: Ada Brennock.", ("Who opened the canal?", "Ada Brennock")),
        ("question: How many locks\n\nanswer: 42 locks", ("How many locks?", "42 locks")),
        (
            "Sure! Question: When was it opened?\nAnswer: in 1821\nMore text",
            ("When was it opened?", "in 1821"),
        ),
        ("Who opened the canal? Ada Brennock.", None),  # not in the asked form
        ("Question: Who opened the canal?\nAnswer: Isambard Kingdom Brunel", None),  # not in the passage
        ("Question: Who was the engineer Ada Brennock?\nAnswer: Ada Brennock", None),  # gives itself away
        ("Question: What of the canal?\nAnswer: " + "canal " * 31, None),  # too long for an answer
        ("Question: What was the answer to this question?\nAnswer: Ada Brennock", None),  # not about it
    ],
)
def test_replies_are_kept_only_when_usable(reply: str, expected: tuple[str, str] | None) -> None:
    assert parse_pair(reply, PASSAGE) == expected


class ScriptedWriter:
    """Stands in for LocalChatModel: asks about each passage's first word and answers with its second
    (every `bad_every`-th reply unusable)."""

    batch_size = 3

    def __init__(self, bad_every: int = 0) -> None:
        self.prompts: list[str] = []
        self.bad_every = bad_every

    def _prompt_text(self, messages: Any) -> str:
        return "\n".join(m.text for m in messages)

    def generate_many(self, prompts: list[str], **options: Any) -> list[str]:
        assert options == {"max_new_tokens": 64, "temperature": 0}
        replies = []
        for prompt in prompts:
            self.prompts.append(prompt)
            assert prompt.endswith(REPLY_START)  # the reply is made to start with it
            passage = prompt.rsplit("Passage: ", 1)[1].removesuffix(REPLY_START)
            words = re.findall(r"[A-Za-z]{4,}", passage)
            bad = self.bad_every and len(self.prompts) % self.bad_every == 0
            replies.append(" I cannot." if bad else f" What is said of {words[0]}?\nAnswer: {words[1]}")
        return replies


@pytest.fixture
def docs_ws(fake_ws: Any) -> Any:
    fake_ws.ingest([p for p in SAMPLE_DOCS.iterdir() if p.name not in SAMPLE_EXCLUDE])
    return fake_ws


def test_pairs_are_bounded_deterministic_and_cite_their_own_chunk(docs_ws: Any) -> None:
    writer = ScriptedWriter(bad_every=2)
    pairs = pairs_from_collection(docs_ws, writer, count=5, seed=3)
    assert len(pairs) == 5 and len(writer.prompts) in (
        9,
        10,
        11,
        12,
    )  # half the replies refused; batches of 3
    again = pairs_from_collection(docs_ws, ScriptedWriter(bad_every=2), count=5, seed=3)
    assert [(p.question, p.answer, [s.chunk_id for s in p.sources]) for p in pairs] == [
        (p.question, p.answer, [s.chunk_id for s in p.sources]) for p in again
    ]
    other = pairs_from_collection(docs_ws, ScriptedWriter(), count=5, seed=4)
    assert [p.question for p in other] != [p.question for p in pairs]
    for pair in pairs:
        assert len(pair.sources) == 2 and pair.sources[0].chunk_id != pair.sources[1].chunk_id
        cited = int(re.search(r"\[(\d)\]$", pair.answer).group(1))  # type: ignore[union-attr]
        said = pair.answer.split(".")[0]
        assert said in pair.sources[cited - 1].text  # the answer's chunk is the one cited
    assert {p.answer[-3:] for p in pairs} <= {"[1]", "[2]"}


def test_pairs_round_trip_through_the_data_format(docs_ws: Any, tmp_path: Path) -> None:
    from lectern.rag.llm.tune import read_pairs

    pairs = pairs_from_collection(docs_ws, ScriptedWriter(), count=3)
    write_pairs(pairs, tmp_path / "qa.jsonl")
    back = read_pairs(tmp_path / "qa.jsonl")
    assert [(p.question, p.answer) for p in back] == [(p.question, p.answer) for p in pairs]
    assert [s.text for s in back[0].sources] == [s.text for s in pairs[0].sources]


def test_no_usable_pair_and_a_bad_count_are_errors_naming_the_option(docs_ws: Any) -> None:
    with pytest.raises(InvalidInput, match="no usable pair"):
        pairs_from_collection(docs_ws, ScriptedWriter(bad_every=1), count=2)
    with pytest.raises(InvalidInput, match="--pairs"):
        pairs_from_collection(docs_ws, ScriptedWriter(), count=0)


def test_the_cli_wants_exactly_one_source_of_pairs_and_checks_the_collection_first(
    data_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = ["--out", str(tmp_path / "a")]
    neither = runner.invoke(app, ["tune", *out])
    assert neither.exit_code == 2 and "give exactly one of them" in neither.output
    both = runner.invoke(app, ["tune", *out, "--data", "x.jsonl", "--from-collection", "c"])
    assert both.exit_code == 2 and "--from-collection" in both.output
    missing = runner.invoke(app, ["tune", *out, "--from-collection", "nope"])
    assert missing.exit_code != 0 and "nope" in missing.output
    assert not (data_dir / "models").exists()  # refused before any model loaded


def test_scripted_questions_read_cleanly(docs_ws: Any) -> None:
    pairs = pairs_from_collection(docs_ws, ScriptedWriter(), count=2)
    assert all(p.question.startswith("What is said of ") for p in pairs)
