"""Tests of the Workspace API's collection side (fake embedder), plus end-to-end runs with real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from lectern.errors import CollectionNotFound, DocumentNotFound, InvalidName
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.rag.workspace import Workspace, check_name


def test_ingest_search_delete_roundtrip(fake_ws: Workspace, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha\n\nThe walrus colony sleeps on the north beach.\n")
    (docs / "b.md").write_text("# Beta\n\nThe gannet colony nests on the cliffs.\n")
    assert not fake_ws.exists and fake_ws.documents() == []
    report = fake_ws.ingest([docs])
    assert len(report.added) == 2 and fake_ws.exists
    assert fake_ws.path == fake_ws.settings.data_dir / "collections" / "test"
    assert fake_ws.collections() == ["test"]
    assert [Path(h.chunk.source).name for h in fake_ws.search("walrus", k=1)] == ["a.txt"]
    assert [Path(h.chunk.source).name for h in fake_ws.search("colony", k=5, sources=[docs / "b.md"])] == [
        "b.md"
    ]
    assert fake_ws.delete([docs / "a.txt"]) == {str(docs / "a.txt"): 1}
    assert [Path(d.source).name for d in fake_ws.documents()] == ["b.md"]
    assert "a.txt" not in [Path(h.chunk.source).name for h in fake_ws.search("walrus beach", k=5)]


def test_collection_embedder_comes_from_the_manifest(fake_ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha\n\nSome words.\n")
    fake_ws.ingest([tmp_path / "a.txt"])
    from lectern.rag.settings import load_settings

    plain = Workspace(collection="test", settings=load_settings(data_dir=fake_ws.settings.data_dir))
    assert plain.settings.ingest.embed.model is None  # the settings alone would pick MiniLM
    assert plain.embed_settings().model == "fake"  # the collection's manifest wins
    assert plain.search("words", k=1)


def made_with_profile(settings, name: str, profile: str) -> None:  # type: ignore[no-untyped-def]
    """A collection whose manifest says it was created with `profile` (no model is loaded)."""
    from lectern.ingest.collection import chunking_of
    from lectern.ingest.faiss_store import Collection
    from lectern.ingest.stores import Manifest

    embedder = {"kind": "sentence-transformers", "name": f"{profile}-model", "normalize": True}
    manifest = Manifest(embedder, 384, chunking_of(settings.ingest), {"kind": "flat"}, profile=profile)
    Collection.create(settings.collections_dir / name, manifest).close()


def test_a_collection_keeps_its_profile(data_dir: Path) -> None:
    """One rule (ingest.collection.embed_settings_for): unset means the manifest's profile; another
    profile asked for is an error naming both, before any model is loaded."""
    from lectern.errors import IndexMismatch, ProfileMismatch
    from lectern.rag.settings import load_settings

    made_with_profile(load_settings(data_dir=data_dir), "quick", "fast")
    unset = Workspace(collection="quick", settings=load_settings(data_dir=data_dir))
    assert unset.settings.ingest.embed.profile is None
    assert unset.embed_settings().profile == "fast"
    same = load_settings(data_dir=data_dir, ingest={"embed": {"profile": "fast"}})
    assert Workspace(collection="quick", settings=same).embed_settings().profile == "fast"

    other = Workspace(
        collection="quick",
        settings=load_settings(data_dir=data_dir, ingest={"embed": {"profile": "accurate"}}),
    )
    for call in (other.embed_settings, lambda: other.ingest([]), lambda: other.search("anything")):
        with pytest.raises(ProfileMismatch) as info:
            call()
        assert "'fast'" in str(info.value) and "'accurate'" in str(info.value)
        assert isinstance(info.value, IndexMismatch)
    assert (
        Workspace(collection="new", settings=load_settings(data_dir=data_dir)).embed_settings().profile
        is None
    )


def test_a_new_collection_records_the_default_profile(data_dir: Path) -> None:
    from lectern.ingest.collection import manifest_for
    from lectern.ingest.settings import IngestSettings

    assert manifest_for(FakeEmbedder(), IngestSettings()).profile == "accurate"
    assert manifest_for(FakeEmbedder(), IngestSettings(embed={"profile": "fast"})).profile == "fast"
    assert manifest_for(FakeEmbedder(), IngestSettings(embed={"model": "fake"})).profile is None


def test_unknown_collection_and_bad_names(fake_ws: Workspace) -> None:
    with pytest.raises(CollectionNotFound, match="'test'"):
        fake_ws.search("anything")
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(InvalidName):
            check_name(bad)
    assert check_name("docs-2024_v1.0") == "docs-2024_v1.0"


def test_drop_removes_the_collection(fake_ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha\n\nSome words.\n")
    fake_ws.ingest([tmp_path / "a.txt"])
    fake_ws.search("words")
    fake_ws.drop()
    assert not fake_ws.exists and not fake_ws.path.exists()


def test_scope_documents_of_one_source_in_order(fake_ws: Workspace, tmp_path: Path) -> None:
    fake_ws.settings.ingest.chunk.chunk_tokens = 16
    path = tmp_path / "long.txt"
    path.write_text("Long\n\n" + " ".join(f"word{i}" for i in range(80)) + "\n")
    fake_ws.ingest([path])
    docs, scope = fake_ws.scope_documents(source=path)
    assert scope == f"document {path}" and len(docs) > 2
    assert [d.metadata["start"] for d in docs] == sorted(d.metadata["start"] for d in docs)
    with pytest.raises(DocumentNotFound):
        fake_ws.scope_documents(source=tmp_path / "other.txt")


def test_summarize_an_unknown_document_names_it_and_lists_known_ones(
    fake_ws: Workspace, tmp_path: Path
) -> None:
    for i in range(7):
        (tmp_path / f"doc{i}.txt").write_text(f"Doc {i}\n\nSome words about topic {i}.\n")
    fake_ws.ingest([tmp_path])
    with pytest.raises(DocumentNotFound) as info:
        fake_ws.summarize(source="missing.pdf")
    message = str(info.value)
    assert message.startswith("no document 'missing.pdf' in collection 'test' (known: ")
    assert "doc0.txt" in message and message.endswith("and 2 more)")
    assert "no collection" not in message
    assert info.value.known == [d.source for d in fake_ws.documents()]


# --- end to end, real MiniLM --------------------------------------------------------------------------


def test_the_gate_follows_the_collection_embedder_not_the_unset_profile(settings) -> None:  # type: ignore[no-untyped-def]
    """The profile is unset in the settings by default (a collection keeps its own): the calibration
    must come from the collection's manifest. Reading the settings' None gave every collection the
    coverage-only gate, which refuses reworded questions."""
    from types import SimpleNamespace

    from lectern.rag.evidence import COVERAGE_ONLY, MEANING, WORDS
    from lectern.rag.qa import Corpus
    from lectern.rag.workspace import evidence_calibration, qa_options

    assert settings.ingest.embed.profile is None or settings.ingest.embed.model == "fake"
    assert evidence_calibration(settings, "accurate") is MEANING
    assert evidence_calibration(settings, "fast") is COVERAGE_ONLY
    assert evidence_calibration(settings, None) is COVERAGE_ONLY  # a model folder or the fake
    settings.answer.gate = "words"
    assert evidence_calibration(settings, "accurate") is WORDS
    settings.answer.gate = "meaning"
    searcher = SimpleNamespace(
        collection=SimpleNamespace(manifest=SimpleNamespace(profile="accurate")),
        term_weights=len,
        spelled=list,
        similarities=max,
    )
    assert qa_options(settings, searcher.collection.manifest.profile).calibration is MEANING
    corpus = Corpus.of(searcher)  # type: ignore[arg-type]
    assert corpus.similarity is max and corpus.spelling is list and corpus.term_weights is len
    settings.answer.evidence_threshold = 0.2
    lowered = evidence_calibration(settings, "accurate")
    assert lowered.threshold == 0.2 and lowered.weights == MEANING.weights
    # the selection's meaning options reach the chain with the embedder they were tuned on, only
    settings.answer.by_meaning, settings.answer.meaning = 1, 1.0
    assert qa_options(settings, "accurate").by_meaning == 1
    options = qa_options(settings, "fast")
    assert options.by_meaning == 0 and options.meaning == 0.0
