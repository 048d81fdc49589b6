"""`lectern ask`, `chat` and `summarize` through typer's CliRunner, with the fake LLM and embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app


@pytest.fixture
def runner(runner: CliRunner, tmp_path: Path) -> CliRunner:
    """The shared runner (tests/conftest.py), with a collection `notes` of two files ingested."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text(
        "Otters\n\nThe river otters of Glenmore eat crayfish at dawn. They sleep in holts by the water.\n"
    )
    (docs / "canal.md").write_text(
        "# Canal\n\nThe canal has forty-two locks.\n\n## Tunnel\n\nThe tunnel is long.\n"
    )
    assert runner.invoke(app, ["ingest", str(docs), "-c", "notes"]).exit_code == 0
    return runner


def test_ask_streams_the_answer_then_numbered_sources(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ask", "What do the otters of Glenmore eat?", "-c", "notes"])
    assert result.exit_code == 0, result.output
    assert "crayfish" in result.output
    assert "Sources" in result.output and "[1] otters.txt" in result.output


def test_ask_json_is_a_validated_answer(runner: CliRunner) -> None:
    from lectern.rag.types import Answer

    result = runner.invoke(app, ["ask", "What do the otters eat?", "-c", "notes", "--json"])
    assert result.exit_code == 0, result.output
    answer = Answer.model_validate_json(result.output)
    assert answer.citations and Path(answer.citations[0].source).name == "otters.txt"


def test_ask_an_unknown_collection_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ask", "anything?", "-c", "missing"])
    assert result.exit_code == 2 and "no collection named 'missing'" in result.output


def test_chat_repl_keeps_history_and_shows_sources(runner: CliRunner, data_dir: Path) -> None:
    script = "What do the otters eat?\n/sources\nWhere do they sleep?\n/quit\n"
    result = runner.invoke(app, ["chat", "-c", "notes", "--conversation", "t1"], input=script)
    assert result.exit_code == 0, result.output
    assert "crayfish" in result.output and "[1] otters.txt" in result.output
    saved = (data_dir / "conversations" / "t1.json").read_text()
    assert "Where do they sleep?" in saved and "What do the otters eat?" in saved


@pytest.mark.parametrize("method", ["stuff", "refine", "map_reduce"])
def test_summarize_a_document_each_method(runner: CliRunner, tmp_path: Path, method: str) -> None:
    path = tmp_path / "docs" / "canal.md"
    result = runner.invoke(app, ["summarize", str(path), "-c", "notes", "--method", method])
    assert result.exit_code == 0, result.output
    assert "(stuff," in result.output and "locks" in result.output  # it fits one call
    reason = "stuff, as asked" if method == "stuff" else f"fits the window in one call ({method} asked)"
    assert reason in result.output
    assert "\nSources\n[1] canal.md, Canal: " in result.output  # the cited passage, its heading
    assert "1 of 1 sentences found in the sources (100%)" in result.output


def test_summarize_marks_a_sentence_no_source_holds(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lectern.rag.fake import FakeChatModel

    made_up = "The canal was dug by giants in 1066."
    monkeypatch.setattr(
        FakeChatModel, "respond", lambda self, messages: f"The canal has forty-two locks. {made_up}"
    )
    result = runner.invoke(app, ["summarize", "-c", "notes", "--method", "map_reduce"])
    assert result.exit_code == 0, result.output
    assert f"The canal has forty-two locks. [1] {made_up} [not in the sources]" in result.output
    assert "1 of 2 sentences found in the sources (50%); 1 not, marked [not in the sources]" in result.output
    as_json = runner.invoke(app, ["summarize", "-c", "notes", "--json"])
    data = json.loads(as_json.output)
    assert data["unsupported"] == [made_up] and data["faithfulness"] == 0.5
    assert data["method"] == "stuff" and data["requested"] == "auto" and data["citations"][0]["number"] == 1
    dropped = runner.invoke(app, ["summarize", "-c", "notes", "--unsupported", "drop"])
    assert "The canal has forty-two locks. [1]\n" in dropped.output
    assert "1 not, left out" in dropped.output and f"left out: {made_up}" in dropped.output
    bad = runner.invoke(app, ["summarize", "-c", "notes", "--unsupported", "hide"])
    assert bad.exit_code == 2 and "summary.unsupported = 'hide'" in bad.output


def test_summarize_a_query_and_an_unknown_method(runner: CliRunner) -> None:
    result = runner.invoke(app, ["summarize", "-c", "notes", "--query", "otters"])
    assert result.exit_code == 0 and "Summary of query 'otters'" in result.output
    bad = runner.invoke(app, ["summarize", "-c", "notes", "--method", "poem"])
    assert bad.exit_code == 2 and "unknown summary method 'poem'" in bad.output


def test_ask_warns_when_no_source_supports_the_answer(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lectern.rag.types import Answer
    from lectern.rag.workspace import Workspace

    def made_up(self: Workspace, question: str, **options: object):  # type: ignore[no-untyped-def]
        yield "Otters are purple."
        yield Answer(question=question, answer="Otters are purple.", support=0.0)

    monkeypatch.setattr(Workspace, "stream_ask", made_up)
    result = runner.invoke(app, ["ask", "What colour are otters?", "-c", "notes"])
    assert result.exit_code == 0 and "may be made up" in result.output


def test_ask_says_why_a_streamed_answer_was_replaced_and_prints_the_replacement(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer check asked again (rag.verify): the streamed words stay on screen, so a note says
    why they were replaced and the source's words follow (rag.verify.why_changed's wording)."""
    from lectern.rag.types import Answer
    from lectern.rag.verify import FOUND_AGAIN, NOT_IN_SOURCES
    from lectern.rag.workspace import Workspace

    def replaced(self: Workspace, question: str, **options: object):  # type: ignore[no-untyped-def]
        yield "Otters eat purple kelp."
        yield Answer(
            question=question,
            answer="crayfish and eels [1]",
            retried=NOT_IN_SOURCES,
            first_answer="Otters eat purple kelp.",
        )

    monkeypatch.setattr(Workspace, "stream_ask", replaced)
    result = runner.invoke(app, ["ask", "What do otters eat?", "-c", "notes"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"Otters eat purple kelp. (that answer {NOT_IN_SOURCES}; {FOUND_AGAIN}:) crayfish and eels" in said


def test_ask_says_why_an_answer_about_another_subject_was_withdrawn(runner: CliRunner) -> None:
    """The subject check (on by default) past the gate (off here): the fake model answers from the
    Glenmore otters' passage, which names no Hampshire, so what streamed is followed by why it was
    withdrawn and the abstention."""
    from lectern.rag.prompts import NO_ANSWER
    from lectern.rag.verify import OFF_SUBJECT

    question = "What do the otters of Hampshire eat?"
    result = runner.invoke(app, ["ask", question, "-c", "notes"], env={"LECTERN_ANSWER__EVIDENCE": "false"})
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "crayfish" in said and f"(that answer {OFF_SUBJECT}:) {NO_ANSWER}" in said, said
    kept = runner.invoke(
        app,
        ["ask", "What do the otters of Glenmore eat?", "-c", "notes"],
        env={"LECTERN_ANSWER__EVIDENCE": "false"},
    )
    assert kept.exit_code == 0 and OFF_SUBJECT not in " ".join(kept.output.split())


@pytest.mark.parametrize("variant", ["few_shot", "chain_of_thought"])
def test_the_prompt_setting_picks_the_qa_template(runner: CliRunner, variant: str) -> None:
    from lectern.rag.fake import FakeChatModel
    from lectern.rag.prompts import QA_PROMPTS
    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import Workspace

    ws = Workspace(collection="notes", settings=load_settings(answer={"prompt": variant}))
    assert ws.ask("What do the otters eat?").citations
    llm = ws.llm
    assert isinstance(llm, FakeChatModel)
    sent = [m.text for m in llm.calls[-1]]
    expected = [m.text for m in QA_PROMPTS[variant].format_messages(sources="S", question="Q")]
    assert len(sent) == len(expected)  # few-shot: its worked examples are sent
    assert sent[-1].endswith(expected[-1].split("\n\n")[-1])  # chain of thought: its closing ask
    result = runner.invoke(app, ["ask", "What do the otters eat?", "-c", "notes", "--prompt", variant])
    assert result.exit_code == 0, result.output


def test_a_bad_setting_value_names_the_field(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ask", "why?", "-c", "notes", "--prompt", "clever", "-k", "0"])
    assert result.exit_code == 2
    assert "answer.prompt = 'clever'" in result.output and "retrieval.k = 0" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ("{not json", "not JSON"),
        ('{"type": "object", "properties": {"answer": {"type": "integer"}}}', 'string property "answer"'),
        ('{"type": 12}', "not a valid JSON schema"),
    ],
)
def test_ask_json_schema_refuses_a_bad_file_naming_it(
    runner: CliRunner, tmp_path: Path, schema: str, words: str
) -> None:
    path = tmp_path / "answer.schema.json"
    path.write_text(schema)
    result = runner.invoke(app, ["ask", "What do the otters eat?", "-c", "notes", "--json-schema", str(path)])
    assert result.exit_code == 2, result.output
    assert "answer.json_schema" in result.output and words in result.output, result.output
