"""The real-model tests of tests/test_cli_generation.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from tests import test_cli_generation as unit

runner = unit.runner  # the unit tests' fixture, shared


@pytest.mark.e2e
def test_ask_json_schema_answers_with_an_object_that_validates(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SmolLM2 on llama.cpp, decoded under the file's schema (rag.llm.structured)."""
    pytest.importorskip("llama_cpp")
    from lectern.rag.llm.structured import validate

    monkeypatch.setenv("LECTERN_LLM__BACKEND", "llamacpp")
    monkeypatch.setenv("LECTERN_LLM__MODEL", "packaged:smollm2")
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 120}, "confident": {"type": "boolean"}},
        "required": ["answer", "confident"],
        "additionalProperties": False,
    }
    path = tmp_path / "answer.schema.json"
    path.write_text(json.dumps(schema))
    result = runner.invoke(
        app, ["ask", "What do the otters of Glenmore eat?", "-c", "notes", "--json-schema", str(path)]
    )
    assert result.exit_code == 0, result.output
    validate(json.loads(result.stdout), schema)
