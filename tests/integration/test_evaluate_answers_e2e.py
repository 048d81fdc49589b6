"""The real-model tests of tests/rag/test_evaluate_answers.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import dataclasses
import json
from io import StringIO
from pathlib import Path

import pytest

import lectern.rag.evaluate_answers as ea
from tests.rag.test_evaluate_answers import needs_cmu, tiny_qa


@pytest.mark.e2e
@needs_cmu
def test_e2e_answer_eval_minilm_smollm2(tmp_path: Path, data_dir: Path) -> None:

    from rich.console import Console

    from lectern.rag.settings import load_settings

    settings = load_settings(
        data_dir=data_dir,
        ingest={"parse_workers": 0},
        llm={"backend": "local", "model": "packaged:smollm2", "temperature": 0.0, "max_new_tokens": 48},
    )
    buffer = StringIO()
    out = tmp_path / "answers.jsonl"
    qa = tiny_qa(tmp_path / "qa")
    ea.eval_answers_command(qa, settings, 3, as_json=True, console=Console(file=buffer), out_path=out)
    data = json.loads(buffer.getvalue())
    assert set(data) == set(ea.KEYS)
    assert data["n"] == 3 and data["mean_seconds"] > 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert set(r) == {f.name for f in dataclasses.fields(ea.QuestionRecord)}
        assert r["gold"] and r["seconds"] > 0 and isinstance(r["answer"], str)
        assert r["abstained"] or r["answer_tokens"]
        assert r["article"] not in r["hidden_sources"]
