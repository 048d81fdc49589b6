"""Tests of ingest.static_model: model2vec's static models read without model2vec, and a parse worker
that embeds the fast profile's chunks from the word pieces it cut them with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import static_model
from lectern.ingest.chunk import embedding_text
from lectern.ingest.embed import table_folder
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.parse import parse_file
from lectern.ingest.static_model import StaticEmbedder, StaticTable, load_static_model

SAMPLE_DOCS = Path(__file__).resolve().parents[2] / "sample_docs"
TEXTS = [
    "The river otters of Glenmore eat crayfish at dawn.",
    "",  # no pieces: a zero row, as model2vec gives
    "   \n ",
    "\u2603\u2603",  # only unknown pieces: dropped, so a zero row too
    "Antidisestablishmentarianism, tokenization and hyphen-ated words; 1997-2004 (approx.)",
    " ".join(["Brennock canal locks"] * 200),  # longer than the chunker's window
]


def _save(folder: Path, quantised: bool = False) -> Path:
    """A real model2vec model over MiniLM's vocabulary with 8 random dimensions, saved by model2vec;
    `quantised` as vocabulary quantisation leaves one: fewer rows, a token mapping and weights."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    rng = np.random.default_rng(0)
    if quantised:
        vectors = rng.standard_normal((64, 8)).astype(np.float32)
        mapping = rng.integers(0, 64, vocab)
        weights = rng.uniform(0.5, 2.0, vocab).astype(np.float32)
        model = StaticModel(
            vectors, tokenizer, {"hidden_dim": 8}, True, weights=weights, token_mapping=mapping
        )
    else:
        vectors = rng.standard_normal((vocab, 8)).astype(np.float32)
        model = StaticModel(vectors=vectors, tokenizer=tokenizer, config={"hidden_dim": 8}, normalize=True)
    model.save_pretrained(str(folder))
    return folder


def _model2vec(folder: Path, texts: list[str]) -> np.ndarray:
    from model2vec import StaticModel

    out = np.asarray(StaticModel.from_pretrained(str(folder)).encode(texts, max_length=None), np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize("quantised", [False, True], ids=["plain", "vocabulary-quantised"])
def test_the_lean_reader_gives_model2vecs_vectors(tmp_path: Path, quantised: bool) -> None:
    folder = _save(tmp_path / "m", quantised)
    assert static_model.is_plain(folder)
    ours, theirs = StaticTable(folder).encode(TEXTS), _model2vec(folder, TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 8)
    blank = np.linalg.norm(theirs, axis=1) == 0
    assert blank.tolist() == [False, True, True, True, False, False]
    assert np.all(np.linalg.norm(ours[blank], axis=1) == 0)
    cosine = (ours[~blank] * theirs[~blank]).sum(axis=1)
    assert cosine.min() > 0.9999, cosine
    assert np.allclose(np.linalg.norm(ours[~blank], axis=1), 1.0, atol=1e-5)


def test_another_layout_loads_through_model2vec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _save(tmp_path / "m")
    monkeypatch.setattr(static_model, "is_plain", lambda _: False)
    model = load_static_model(folder)
    assert not isinstance(model, StaticTable) and model.dim == 8
    ours = StaticTable(folder).encode(TEXTS[:1])
    assert float((model.encode(TEXTS[:1]) * ours).sum()) > 0.9999


def test_the_lean_reader_does_not_import_model2vec(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = _save(tmp_path / "m")
    code = (
        "import sys; from pathlib import Path; from lectern.ingest.embed_base import packaged_minilm_path;"
        "from lectern.ingest.static_model import StaticEmbedder;"
        f"e = StaticEmbedder(Path({str(folder)!r}), packaged_minilm_path()); e.embed(['otters']);"
        "assert e.loaded; print(sorted(m for m in ('model2vec', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("name", ["kestrel_valley_cheese.html", "brennock_canal.txt", "README.md"])
def test_a_parse_worker_embeds_from_the_pieces_it_cut(tmp_path: Path, name: str) -> None:
    """The vectors a parse worker makes from the chunker's pieces (context line included) are the
    embedder's own for the same texts, and the chunks are those of a parse without them."""
    embedder = StaticEmbedder(_save(tmp_path / "m"), packaged_minilm_path())
    folder = table_folder(embedder)
    assert folder is not None
    path = str(SAMPLE_DOCS / name)
    args = (path, path, "digest", 1, embedder.tokenizer_file, 60, 12)
    with_vectors, plain = parse_file(*args, folder), parse_file(*args)
    assert plain.vectors is None and with_vectors.vectors is not None
    assert [c.chunk_id for c in with_vectors.chunks] == [c.chunk_id for c in plain.chunks]
    assert len(plain.chunks) > 1 and any(c.context for c in plain.chunks)
    expected = embedder.embed([embedding_text(c.context, c.text) for c in plain.chunks])
    cosine = (with_vectors.vectors * expected).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


@pytest.mark.parametrize("workers", [0, 2])
def test_a_fast_ingest_parses_the_biggest_files_first_and_stores_the_workers_vectors(
    tmp_path: Path, workers: int
) -> None:
    """Where the parse workers embed, they are the whole cost: the biggest file goes first (the
    report lists files as they were written), and the vectors stored are the embedder's own."""
    from lectern.ingest.faiss_store import Collection
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.settings import IngestSettings

    embedder = StaticEmbedder(_save(tmp_path / "m"), packaged_minilm_path())
    docs = tmp_path / "docs"
    docs.mkdir()
    sizes = {"a-small.txt": 3, "b-big.txt": 60, "c-middle.txt": 20}
    for name, sentences in sizes.items():
        (docs / name).write_text(" ".join(f"Sentence {i} of {name} is here." for i in range(sentences)))
    report = ingest([docs], tmp_path / "col", embedder, IngestSettings(parse_workers=workers))
    assert [Path(r.path).name for r in report.results] == ["b-big.txt", "c-middle.txt", "a-small.txt"]
    assert not embedder.loaded  # every vector came from the parse step
    col = Collection.open(tmp_path / "col")
    chunks, stored = col.export(str(docs / "b-big.txt"))
    col.close()
    expected = embedder.embed([embedding_text(c.context, c.text) for c in chunks])
    assert len(chunks) > 1 and float((stored * expected).sum(axis=1).min()) > 0.9999


def test_a_damaged_table_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    from lectern.errors import EmbedderNotFound

    folder = _save(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    embedder = StaticEmbedder(folder, packaged_minilm_path())
    with pytest.raises(EmbedderNotFound, match=r"model\.safetensors.*built again"):
        table_folder(embedder)
