"""One set of QA options, read from the settings in one place (rag.workspace.qa_options): the CLI's
`ask`, the server's RAG models, the answer eval and the agent's plan build their chains with the
same options, the user's answer settings, and a test here fails when one path drifts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lectern.rag.fake import FakeChatModel, ScriptedChatModel
from lectern.rag.qa import Corpus, QAChain, QAOptions, build_qa_chain, cited_answer
from lectern.rag.settings import Settings, load_settings
from lectern.rag.types import Context
from lectern.rag.workspace import Workspace, qa_options
from tests.serve.conftest import serving

OTTERS = "The river otters of Glenmore eat crayfish at dawn. They sleep in holts under alder roots."
HERONS = "The grey herons of Glenmore eat eels at dusk. They nest in the old beeches by the loch."
QUESTION = "What do the river otters of Glenmore eat?"
# answer settings none of which is the default: each must reach every path's chain
USER = {
    "PROMPT": "concise_example",
    "VERIFY": "false",
    "ORDER": "rank",
    "NEIGHBOURS": "2",
    "SENTENCES": "4",
    "TOGETHER": "true",
    "FACTS": "true",
    "SUBJECT": "true",
    "EVIDENCE": "false",
}


@pytest.fixture
def user(fake_models: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The user's settings, in the environment as a shell would set them (the CLI reads them there)."""
    for key, value in USER.items():
        monkeypatch.setenv(f"LECTERN_ANSWER__{key}", value)
    return load_settings()


@pytest.fixture
def ws(user: Settings, tmp_path: Path) -> Iterator[Workspace]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text(f"{OTTERS}\n")
    (docs / "herons.txt").write_text(f"{HERONS}\n")
    workspace = Workspace(collection="test", settings=user)
    assert workspace.ingest([docs]).ok
    yield workspace
    workspace.close()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[QAOptions]:
    """The options of every QA chain built while the test runs, in order."""
    seen: list[QAOptions] = []
    init = QAChain.__init__

    def recording(self: QAChain, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        seen.append(self.options)

    monkeypatch.setattr(QAChain, "__init__", recording)
    return seen


def test_the_settings_reach_the_options(user: Settings) -> None:
    options = qa_options(user)
    assert (options.variant, options.verify, options.order) == ("concise_example", False, "rank")
    assert (options.neighbours, options.sentences, options.evidence) == (2, 4, False)
    assert options.together and options.facts and options.subject
    assert options.k == user.retrieval.k and options.max_new_tokens == user.llm.max_new_tokens


def test_the_cli_and_the_python_api_answer_with_the_settings_options(
    ws: Workspace, user: Settings, built: list[QAOptions], runner: CliRunner
) -> None:
    from lectern.cli import app

    result = runner.invoke(app, ["ask", QUESTION, "-c", "test"])
    assert result.exit_code == 0, result.output
    ws.ask(QUESTION)
    assert built == [qa_options(user), qa_options(user)]


def test_the_server_s_rag_model_answers_with_the_user_s_options(
    ws: Workspace, user: Settings, built: list[QAOptions]
) -> None:
    """The request's own fields (max_tokens, k) aside, the server's chain is the settings' chain:
    it once left out query spelling and the structured model."""
    rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": QUESTION}]}
    with serving(user, FakeChatModel()) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=rag, timeout=60).status_code == 200
        asked = {**rag, "k": 2, "max_tokens": 40}
        assert httpx.post(f"{url}/v1/chat/completions", json=asked, timeout=60).status_code == 200
    assert built == [qa_options(user), dataclasses.replace(qa_options(user), k=2, max_new_tokens=40)]


def test_the_answer_eval_asks_with_the_settings_options(
    user: Settings, tmp_path: Path, built: list[QAOptions]
) -> None:
    from lectern.rag.evaluate_answers import run_answer_eval

    qa = tmp_path / "qa"
    (qa / "data" / "set1").mkdir(parents=True)
    (qa / "data" / "set1" / "a1.txt.clean").write_text(f"River otters\n\n{OTTERS}\n")
    (qa / "data" / "set1" / "a2.txt.clean").write_text(f"Grey herons\n\n{HERONS}\n")
    rows = [
        "ArticleTitle\tQuestion\tAnswer\tDifficultyFromQuestioner\tDifficultyFromAnswerer\tArticleFile",
        f"River_otters\t{QUESTION}\tcrayfish\teasy\teasy\tdata/set1/a1",
    ]
    (qa / "question_answer_pairs.txt").write_text("\n".join(rows) + "\n", encoding="latin-1")
    metrics = run_answer_eval(qa, user, limit=None, workdir=tmp_path)
    assert metrics["n"] == 1
    assert built and all(options == qa_options(user) for options in built)  # with and without a1


def test_the_agent_s_plan_answers_with_the_user_s_answer_settings(
    ws: Workspace, user: Settings, built: list[QAOptions]
) -> None:
    """The plan's answer is the QA chain's, written with the user's prompt and checks; only what
    the plan decides itself differs (its passages are chosen and cut already, no gate, prose)."""
    llm = ScriptedChatModel(replies=["river otters diet", "Glenmore otters eat crayfish at dawn [1]."])
    result = ws.agent(llm=llm, plan=True).invoke(QUESTION)
    assert not result.answer.abstained
    (options,) = built
    planned = {"k": None, "min_score": 0.0, "context": "chunks", "evidence": False, "structured": False}
    assert options == dataclasses.replace(qa_options(user), **planned)
    assert options.variant == "concise_example" and not options.verify and options.facts


def test_build_qa_chain_takes_options_and_collection_fields_by_name() -> None:
    def idf(terms: Any) -> dict[str, float]:
        return dict.fromkeys(terms, 1.0)

    chain = build_qa_chain(FakeChatModel(), None, QAOptions(k=3), k=4, verify=False, term_weights=idf)  # type: ignore[arg-type]
    assert chain.options == QAOptions(k=4, verify=False) and chain.corpus == Corpus(term_weights=idf)
    with pytest.raises(TypeError):
        build_qa_chain(FakeChatModel(), None, nonsense=1)  # type: ignore[arg-type]


def test_an_unknown_context_form_is_refused_naming_the_known_ones() -> None:
    from lectern.errors import UnknownKey

    with pytest.raises(UnknownKey, match="chunks"):
        QAOptions(context="pages")


def test_cited_answer_is_the_chain_s_parser_without_a_chain() -> None:
    """The agent's tool loop reads its answer as the chain reads its own: a reasoning prompt's answer
    after "Answer:", unknown [n] dropped, the passage highlighted."""
    contexts = [Context(number=1, chunk_id="c1", source="otters.txt", text=OTTERS)]
    raw = "Reasoning: the passage says so.\nAnswer: They eat crayfish at dawn [1][7]."
    answer = cited_answer(QUESTION, contexts, raw, variant="chain_of_thought")
    assert answer.reasoning == "the passage says so." and answer.dropped_citations == [7]
    assert [c.number for c in answer.citations] == [1] and answer.citations[0].highlights
