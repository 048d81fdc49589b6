"""The real-model tests of tests/rag/test_tune_pairs.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE


@pytest.mark.e2e
def test_tune_from_a_collection_with_smollm2(tmp_path: Path) -> None:
    """The whole command, tiny: SmolLM2 writes pairs from sample_docs' chunks, then a rank-2 LoRA
    trains on them for 2 steps (the smallest run: CI time); the pairs file and the adapter come out."""
    from lectern.rag.llm.adapters import IDENTITY

    data = tmp_path / "data"
    data.mkdir()
    env = {"LECTERN_DATA_DIR": str(data), "LECTERN_INGEST__EMBED__MODEL": "fake",
           "LECTERN_INGEST__PARSE_WORKERS": "0", "LECTERN_LLM__THREADS": "1"}  # fmt: skip
    runner = CliRunner()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        docs = [str(p) for p in SAMPLE_DOCS.iterdir() if p.name not in SAMPLE_EXCLUDE]
        assert runner.invoke(app, ["ingest", *docs, "-c", "docs"]).exit_code == 0
        args = ["tune", "--from-collection", "docs", "--model", "packaged:smollm2", "--pairs", "1",
                "--steps", "2", "--rank", "2", "--out", str(tmp_path / "adapter"),
                "--pairs-out", str(tmp_path / "pairs.jsonl")]  # fmt: skip
        result = runner.invoke(app, args)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(result.output)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and all(r["question"].endswith("?") for r in rows)
    assert all(re.search(r"\[[12]\]$", r["answer"]) and len(r["sources"]) == 2 for r in rows)
    record = json.loads((tmp_path / "adapter" / IDENTITY).read_text())
    assert record["model"] == "packaged:smollm2" and record["steps"] == 2 and record["examples"] == len(rows)
    assert "pairs:" in result.output and "adapter for packaged:smollm2" in result.output
