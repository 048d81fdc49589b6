"""The `accurate` embedder's CPU precision: ONNX Runtime fp32/int8 (ingest.onnx_embed) and the
per-machine choice measured once and cached (ingest.cpu_precision). Unit tests count with fakes;
the e2e test exports the real MiniLM and compares its vectors with torch's."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lectern.errors import PrecisionUnavailable
from lectern.ingest import cpu_precision, onnx_embed, st_embed
from lectern.ingest.cpu_precision import Measurement, chosen_precision, measure, pick
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.st_embed import SentenceTransformerEmbedder, _LoadedST

MINILM = packaged_minilm_path()


def test_pick_keeps_fp32_unless_another_passes_the_bar_and_is_clearly_faster() -> None:
    good = {"fp32": 1.0, "bf16": 1.0, "onnx-fp32": 1.0, "onnx-int8": 0.995}
    low = {"fp32": 1.0, "bf16": 0.999, "onnx-fp32": 1.0, "onnx-int8": 0.98}
    seconds = {"fp32": 10.0, "bf16": 9.5, "onnx-fp32": 8.0, "onnx-int8": 5.0}
    assert pick(seconds, good, low) == "onnx-int8"
    assert pick(seconds, good | {"onnx-int8": 0.95}, low) == "onnx-fp32"  # int8's vectors too far off
    assert pick(seconds, good, low | {"onnx-int8": 0.5}) == "onnx-fp32"  # one text too far off
    assert pick({"fp32": 10.0, "bf16": 9.5}, good, low) == "fp32"  # 5% faster is within the noise
    assert pick({"fp32": 10.0, "bf16": 12.0}, good, low) == "fp32"
    # ONNX Runtime first: bf16's micro-benchmark overstated it on a Xeon VM (docs/BENCHMARKS.md)
    assert pick({"fp32": 10.0, "bf16": 3.0, "onnx-int8": 5.0}, good, low) == "onnx-int8"
    assert pick({"fp32": 10.0, "bf16": 3.0, "onnx-int8": 9.5}, good, low) == "bf16"  # int8 does not pay
    assert pick({"fp32": 10.0, "bf16": 3.0, "onnx-int8": 5.0}, good | {"onnx-int8": 0.9}, low) == "bf16"


def test_measure_times_every_runner_on_the_same_texts_and_compares_with_fp32() -> None:
    calls: dict[str, int] = {}
    rng = np.random.default_rng(0)
    base = rng.standard_normal((16, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    def runner(name: str, noise: float) -> Any:
        def run(texts: list[str]) -> np.ndarray:
            assert texts == cpu_precision.bench_texts()
            calls[name] = calls.get(name, 0) + 1
            v = base + noise * np.eye(16, 16, dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        return run

    result = measure({"fp32": runner("fp32", 0.0), "onnx-int8": runner("onnx-int8", 5.0)}, rounds=3)
    assert calls == {"fp32": 4, "onnx-int8": 4}  # one untimed call each, then one per round
    assert result.mean_cosine["fp32"] == pytest.approx(1.0)
    assert result.mean_cosine["onnx-int8"] < cpu_precision.MIN_MEAN_COSINE
    assert result.choice == "fp32"  # whatever the timings: the other one's vectors fail the bar
    assert set(result.seconds) == {"fp32", "onnx-int8"}


@dataclass
class Bench:
    """A stand-in for the micro-benchmark: counts its runs and answers `choice`."""

    choice: str = "onnx-int8"
    runs: int = 0

    def __call__(self) -> Measurement:
        self.runs += 1
        return Measurement(
            self.choice, {"fp32": 2.0, self.choice: 1.0}, {self.choice: 0.995}, {self.choice: 0.99}
        )


def _pid() -> int:
    return os.getpid()


def _fail() -> None:
    raise ValueError("no such model")


def test_in_child_runs_in_another_process_and_brings_back_its_result_or_error() -> None:
    assert cpu_precision.in_child(_pid) != os.getpid()
    with pytest.raises(ValueError, match="no such model"):
        cpu_precision.in_child(_fail)


def test_the_choice_is_measured_once_per_machine_and_kept_as_json(tmp_path: Path) -> None:
    bench, said = Bench(), []
    before = cpu_precision.MEASURED["benchmark"]
    assert chosen_precision("minilm@abc", tmp_path, bench, said.append) == "onnx-int8"
    assert chosen_precision("minilm@abc", tmp_path, bench, said.append) == "onnx-int8"
    assert bench.runs == 1 and cpu_precision.MEASURED["benchmark"] == before + 1
    assert len(said) == 2 and "once for this machine" in said[0]
    data = json.loads((tmp_path / cpu_precision.CACHE_FILE).read_text())  # JSON, not a pickle
    (entry,) = data.values()
    assert entry["choice"] == "onnx-int8" and entry["machine"]["model"] == "minilm@abc"
    assert entry["seconds"] == {"fp32": 2.0, "onnx-int8": 1.0}
    assert chosen_precision("other@def", tmp_path, bench, said.append) == "onnx-int8"  # another model
    assert bench.runs == 2 and len(json.loads((tmp_path / cpu_precision.CACHE_FILE).read_text())) == 2


def test_another_onnxruntime_or_kernel_limit_measures_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = Bench()
    chosen_precision("m@1", tmp_path, bench, lambda _: None)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # torch held to AVX2: other kernels, other answer
    chosen_precision("m@1", tmp_path, bench, lambda _: None)
    real = cpu_precision._version
    monkeypatch.setattr(cpu_precision, "_version", lambda p: "0.0" if p == "onnxruntime" else real(p))
    chosen_precision("m@1", tmp_path, bench, lambda _: None)
    chosen_precision("m@1", tmp_path, bench, lambda _: None)
    assert bench.runs == 3


def test_an_unreadable_cache_or_an_unknown_choice_is_measured_again(tmp_path: Path) -> None:
    bench = Bench(choice="bf16")
    (tmp_path / cpu_precision.CACHE_FILE).write_text("not json")
    assert chosen_precision("m@1", tmp_path, bench, lambda _: None) == "bf16"
    data = json.loads((tmp_path / cpu_precision.CACHE_FILE).read_text())
    (key,) = data
    data[key]["choice"] = "int4"
    (tmp_path / cpu_precision.CACHE_FILE).write_text(json.dumps(data))
    assert chosen_precision("m@1", tmp_path, bench, lambda _: None) == "bf16"
    assert bench.runs == 2


class FakeModel:
    """Stands for a SentenceTransformer or an OnnxEncoder: `encode` as theirs, counting calls."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def encode(self, sentences: list[str], **_: Any) -> np.ndarray:
        self.calls.append(self.name)
        return np.ones((len(sentences), 384), dtype=np.float32)


@pytest.fixture
def fake_loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """torch and ONNX Runtime loads replaced by fakes, and the micro-benchmark by a counting Bench;
    records what was loaded, what embedded, and which precisions the benchmark was offered."""
    seen: dict[str, Any] = {"loaded": [], "calls": [], "offered": None, "bench": Bench()}

    def fake_torch(self: SentenceTransformerEmbedder, device: str, precision: str) -> _LoadedST:
        seen["loaded"].append(f"torch-{precision}")
        return _LoadedST(
            FakeModel(f"torch-{precision}", seen["calls"]), device, precision == "bf16", precision
        )

    def fake_onnx(self: SentenceTransformerEmbedder, precision: str) -> _LoadedST:
        onnx_embed.require_onnx(precision)
        seen["loaded"].append(precision)
        return _LoadedST(FakeModel(precision, seen["calls"]), "cpu", False, precision)

    def fake_decide(seconds: dict[str, float], vectors: dict[str, Any]) -> Measurement:
        assert sorted(seconds) == sorted(vectors)
        seen["offered"] = sorted(seconds)
        return seen["bench"]()

    def here(fn: Any, *args: Any) -> Any:  # a child process's work, run in this one with the fakes
        seen["children"].append(fn.__name__)
        return fn(*args)

    seen["children"] = []
    monkeypatch.setattr(SentenceTransformerEmbedder, "_torch", fake_torch)
    monkeypatch.setattr(SentenceTransformerEmbedder, "_onnx", fake_onnx)
    monkeypatch.setattr(cpu_precision, "decide", fake_decide)
    monkeypatch.setattr(cpu_precision, "in_child", here)
    monkeypatch.setattr(st_embed, "cpu_has_native_bf16", lambda: False)
    return seen


def st(tmp_path: Path, **settings: Any) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(MINILM, EmbedSettings(device="cpu", **settings), tmp_path / "cache")


def test_auto_measures_on_first_use_then_every_later_embedder_reads_the_cache(
    tmp_path: Path, fake_loads: dict[str, Any]
) -> None:
    first = st(tmp_path)
    assert not first.loaded and fake_loads["bench"].runs == 0  # nothing measured before an embed
    first.embed(["river otters"])
    assert first.precision == "onnx-int8" and fake_loads["bench"].runs == 1
    assert fake_loads["offered"] == ["fp32", "onnx-fp32", "onnx-int8"]  # no bf16 in the CPU's flags
    assert fake_loads["loaded"] == ["torch-fp32", "onnx-fp32", "onnx-int8"]
    assert fake_loads["children"] == ["_time_torch"]  # torch timed in a process of its own
    assert fake_loads["calls"][-1] == "onnx-int8"  # what the benchmark loaded and chose embeds
    second = st(tmp_path)
    second.embed(["crayfish"])
    assert second.precision == "onnx-int8" and fake_loads["bench"].runs == 1
    assert fake_loads["loaded"][3:] == ["onnx-int8"]  # only the chosen model loads now
    assert second.identity == first.identity == st(tmp_path, precision="fp32").identity


def test_a_forced_precision_skips_the_benchmark(tmp_path: Path, fake_loads: dict[str, Any]) -> None:
    for precision in ("fp32", "bf16", "onnx-int8"):
        model = st(tmp_path, precision=precision)
        model.embed(["river otters"])
        assert model.precision == precision
    assert fake_loads["bench"].runs == 0 and not (tmp_path / "cache" / cpu_precision.CACHE_FILE).exists()
    assert fake_loads["loaded"] == ["torch-fp32", "torch-bf16", "onnx-int8"]


def test_without_onnxruntime_auto_falls_back_to_torch_and_a_forced_onnx_says_which_extra(
    tmp_path: Path, fake_loads: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_embed, "onnx_version", lambda: None)
    fake_loads["bench"].choice = "fp32"
    auto = st(tmp_path)
    auto.embed(["river otters"])
    assert auto.precision == "fp32" and fake_loads["offered"] == ["fp32"]
    with pytest.raises(
        PrecisionUnavailable, match=r"ingest\.embed\.precision = 'onnx-int8'.*lectern\[onnx\]"
    ):
        st(tmp_path, precision="onnx-int8").embed(["river otters"])


def test_onnx_runs_on_the_cpu_only(tmp_path: Path, fake_loads: dict[str, Any]) -> None:
    model = SentenceTransformerEmbedder(MINILM, EmbedSettings(device="cuda", precision="onnx-fp32"), tmp_path)
    with pytest.raises(PrecisionUnavailable, match="runs on the CPU"):
        model.embed(["river otters"])


def test_only_a_bert_with_mean_pooling_is_exported(tmp_path: Path) -> None:
    assert onnx_embed.bert_shape(MINILM) == (12, 384)
    for name in ("modules.json", "config.json"):
        (tmp_path / name).write_text((MINILM / name).read_text())
    (tmp_path / "1_Pooling").mkdir()
    pooling = json.loads((MINILM / "1_Pooling" / "config.json").read_text())
    pooling |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert onnx_embed.bert_shape(tmp_path) is None
    assert onnx_embed.bert_shape(tmp_path / "missing") is None


def test_onnx_threads_follow_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert onnx_embed.torch_threads() == 3


def test_seven_bit_weights_only_where_the_cpu_lacks_vnni() -> None:
    assert onnx_embed.needs_reduced_range({"avx2", "fma"})
    assert not onnx_embed.needs_reduced_range({"avx2", "avx_vnni"})
    assert not onnx_embed.needs_reduced_range({"avx512f", "avx512_vnni"})
    # a cache shared with a CPU of the other kind keeps each kind's weights apart
    cache = Path("/cache")
    eight = onnx_embed.export_folder(cache, "minilm@abc", reduce_range=False)
    seven = onnx_embed.export_folder(cache, "minilm@abc", reduce_range=True)
    assert eight != seven and seven.name == eight.name + "-int7"
