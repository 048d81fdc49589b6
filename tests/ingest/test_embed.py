"""Tests of ingest.embed's loading: models load on the first embed, once; the fast profile's static
model is built once per machine, in the user's cache that every data dir shares."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import embed_base, static_model
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.st_embed import SentenceTransformerEmbedder, bf16_native, st_shape


def tiny_static_model() -> object:
    """A real, small model2vec model over MiniLM's vocabulary (8 random dimensions): saved and loaded
    like the distilled one, built in milliseconds."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json"))
    vectors = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 8)).astype(np.float32)
    config = {"hidden_dim": 8}  # as model2vec's distill writes it
    return StaticModel(vectors=vectors, tokenizer=tokenizer, config=config, normalize=True)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The distillation replaced by a tiny model; the list records every build asked for."""
    from lectern.ingest import distill

    asked: list[str] = []

    def counting_distil(source: Path, folder: Path, pca_dims: int = 256, progress: bool = True) -> None:
        asked.append(str(source))
        tiny_static_model().save_pretrained(str(folder))  # type: ignore[attr-defined]

    monkeypatch.setattr(distill, "distil", counting_distil)
    monkeypatch.setattr(static_model, "in_child", lambda fn, *args: fn(*args))  # here, so the fake is seen
    return asked


def test_static_model_is_built_once_and_shared_by_two_data_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], builds: list[str]
) -> None:
    from lectern.rag.model_cache import MODELS
    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import Workspace

    monkeypatch.setenv("LECTERN_CACHE_DIR", str(tmp_path / "machine-cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("Otters\n\nThe river otters of Glenmore eat crayfish at dawn.\n")
    identities = []
    for name in ("first", "second"):
        MODELS.clear()  # each data dir as a new process would see it: nothing loaded
        settings = load_settings(
            data_dir=tmp_path / name, ingest={"embed": {"profile": "fast"}, "parse_workers": 0}
        )
        ws = Workspace(collection="notes", settings=settings)
        report = ws.ingest([docs])
        assert report.ok and len(report.added) == 1, report.summary()
        identities.append(ws.collection().manifest.embedder)
        ws.close()
        assert not (tmp_path / name / "models").exists()  # nothing built inside the data dir
    MODELS.clear()
    assert builds == [str(packaged_minilm_path())]  # one build for both data dirs
    assert identities[0] == identities[1] and identities[0]["kind"] == "model2vec"
    built = list((tmp_path / "machine-cache" / "models").glob("minilm-m2v-*/config.json"))
    assert len(built) == 1
    said = [line for line in capsys.readouterr().err.splitlines() if "static model" in line]
    assert len(said) == 1 and "once for this machine" in said[0]  # one line, the first time only


def test_a_second_process_waiting_on_the_build_does_not_build_again(
    tmp_path: Path, builds: list[str]
) -> None:
    """The build holds a file lock; whoever gets it next finds the model there and returns it."""
    first = static_model.distilled_minilm(tmp_path / "models", announce=lambda line: None)
    again = static_model.distilled_minilm(tmp_path / "models", announce=lambda line: None)
    assert first == again and len(builds) == 1
    assert json.loads((first / "config.json").read_text())["hidden_dim"] == 8


def test_shape_from_files_without_loading(tmp_path: Path) -> None:
    assert st_shape(packaged_minilm_path()) == (256, 384)
    folder = tmp_path / "with-dense"
    folder.mkdir()
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    assert st_shape(folder)[1] is None  # a Dense layer changes the dimension: the model must say


def test_minilm_loads_on_first_embed_once_and_copies_share_it() -> None:
    """Identity, dimension, window and tokenizer come from the folder's files; the weights load on
    the first embed, once, shared by the model cache's shallow copies (other batch sizes)."""
    before = embed_base.LOADS["sentence-transformers"]
    embedder = SentenceTransformerEmbedder(packaged_minilm_path(), EmbedSettings(device="cpu"))
    assert not embedder.loaded
    assert (embedder.dimension, embedder.max_tokens) == (384, 254)
    assert embedder.identity["kind"] == "sentence-transformers"
    assert embedder.offsets(["river otters"])[0]
    assert not embedder.loaded and embed_base.LOADS["sentence-transformers"] == before
    tuned = copy.copy(embedder)
    tuned.batch_size = 4
    vectors = tuned.embed(["river otters", "crayfish at dawn"])
    assert vectors.shape == (2, 384)
    assert embedder.loaded and embed_base.LOADS["sentence-transformers"] == before + 1
    np.testing.assert_allclose(embedder.embed(["river otters"])[0], vectors[0], atol=1e-5)
    assert embed_base.LOADS["sentence-transformers"] == before + 1
    model = embedder._loaded.get().model
    assert (int(model.max_seq_length), int(model.get_embedding_dimension())) == (256, 384)


def test_bf16_needs_the_cpu_flag_and_torch_kernels_that_use_it() -> None:
    flags = {"avx2", "avx512f", "avx512_bf16"}
    assert bf16_native(flags, "AVX512")
    assert not bf16_native(flags, "AVX2")  # ATEN_CPU_CAPABILITY=avx2: torch runs no bf16 instructions
    assert not bf16_native({"avx2"}, "AVX2")
    assert bf16_native({"amx_bf16"}, "AVX512")


def test_lectern_prepare_builds_what_a_first_ingest_would_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds: list[str]
) -> None:
    """`lectern prepare` builds the fast profile's static model and loads the accurate profile as its
    first ingest would; a later `prepare` or first fast ingest builds nothing."""
    from typer.testing import CliRunner

    from lectern.cli import app
    from lectern.rag.model_cache import MODELS

    monkeypatch.setenv("LECTERN_CACHE_DIR", str(tmp_path / "machine-cache"))
    monkeypatch.setenv("LECTERN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LECTERN_INGEST__EMBED__PRECISION", "fp32")  # measured in test_onnx_embed
    monkeypatch.setenv("LECTERN_INGEST__EMBED__QUERY_BACKEND", "torch")
    monkeypatch.setenv("LECTERN_INGEST__PARSE_WORKERS", "0")
    cli = CliRunner()
    first = cli.invoke(app, ["prepare"])
    assert first.exit_code == 0, first.output
    assert "fast: static model ready in" in first.output
    assert "accurate: documents embedded in fp32 (as set)" in first.output
    assert builds == [str(packaged_minilm_path())]
    again = cli.invoke(app, ["prepare", "--profile", "fast"])
    assert again.exit_code == 0 and "accurate" not in again.output
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("Otters\n\nThe river otters of Glenmore eat crayfish at dawn.\n")
    MODELS.clear()
    ingested = cli.invoke(app, ["ingest", str(docs), "--profile", "fast", "-c", "quick", "--json"])
    MODELS.clear()
    assert ingested.exit_code == 0, ingested.output
    assert builds == [str(packaged_minilm_path())] and "building" not in ingested.output
    wrong = cli.invoke(app, ["prepare", "--profile", "quick"])
    assert wrong.exit_code == 2 and "quick" in wrong.output and "accurate" in wrong.output
