"""The real-model tests of tests/rag/test_workspace_ingest.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lectern.ingest.chunk import embedding_text
from lectern.rag.workspace import Workspace
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE
from tests.fixtures.bad_inputs import make_bad_corpus, text_pdf


@pytest.fixture(scope="module")
def minilm_sample(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """sample_docs (without README.md and make_pdf.py) ingested once with the accurate profile."""
    from lectern.rag.settings import load_settings

    data = tmp_path_factory.mktemp("e2e-data")
    settings = load_settings(data_dir=data)
    settings.ingest.exclude = [*settings.ingest.exclude, *SAMPLE_EXCLUDE]
    ws = Workspace(collection="sample", settings=settings)
    report = ws.ingest([SAMPLE_DOCS])
    assert report.ok and len(report.added) == 4, report.summary()
    yield ws
    ws.close()


@pytest.mark.e2e
def test_e2e_lighthouse_question_finds_page_2(minilm_sample: Workspace) -> None:
    hits = minilm_sample.search("Who designed the lighthouse tower?", k=3, mode="hybrid")
    assert Path(hits[0].chunk.source).name == "marrow_point_light.pdf"
    assert hits[0].chunk.page == 2
    assert "Edith Varley" in hits[0].chunk.text
    assert minilm_sample.collection().manifest.profile == "accurate"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("question", "file", "answer"),
    [
        ("How often does Quillmate check for changes by default?", "quillmate_guide.md", "90 seconds"),
        ("How many locks are on the Brennock Canal?", "brennock_canal.txt", "42 locks"),
        ("How long is Valley Blue aged?", "kestrel_valley_cheese.html", "nine months"),
    ],
)
def test_e2e_sample_questions(minilm_sample: Workspace, question: str, file: str, answer: str) -> None:
    hits = minilm_sample.search(question, k=3, mode="hybrid")
    assert Path(hits[0].chunk.source).name == file
    assert any(answer in h.chunk.text for h in hits)


@pytest.mark.e2e
def test_e2e_bad_corpus_with_minilm(tmp_path: Path) -> None:
    from lectern.rag.settings import load_settings

    folder = tmp_path / "bad"
    expected = make_bad_corpus(folder)
    (folder / "huge_line.txt").unlink()  # 5 MB of MiniLM embedding is too slow on 2 CPU cores
    del expected["huge_line.txt"]
    ws = Workspace(collection="bad", settings=load_settings(data_dir=tmp_path / "data"))
    report = ws.ingest([folder])
    results = {Path(r.path).name: r for r in report.results}
    for name, want in expected.items():
        if want == "ok":
            assert results[name].status == "added", (name, results[name].reason)
        else:
            assert want in (results[name].reason or "").lower(), (name, results[name].reason)
    top = ws.search("What is the lighthouse keeper's cat called?", k=3)
    assert "Biscuit" in " ".join(h.chunk.text for h in top)
    (folder / "truncated.pdf").write_bytes(text_pdf())
    again = ws.ingest([folder / "truncated.pdf"])
    assert [r.status for r in again.results] == ["added"]
    ws.close()


def _fast_model_dir() -> str:
    from lectern.ingest.embed_base import model_name, packaged_minilm_path

    return f"minilm-m2v-256-{model_name(packaged_minilm_path()).split('@')[1]}"


@pytest.fixture
def fast_data_dir(tmp_path: Path) -> Path:
    """A fresh data dir, with the distilled fast model in the session's cache (LECTERN_CACHE_DIR):
    copied from the user's own cache when it is there (read, never written), else distilled once per
    session (about a minute on 2 cores)."""
    from lectern.ingest.static_model import distilled_minilm
    from lectern.rag.settings import default_cache_dir, load_settings

    data = tmp_path / "data"
    cache = load_settings(data_dir=data).models_dir
    name = _fast_model_dir()
    users = default_cache_dir() / "models" / name
    if not (cache / name / "config.json").is_file():
        if (users / "config.json").is_file():
            shutil.copytree(users, cache / name)
        else:
            distilled_minilm(cache)
    return data


@pytest.mark.e2e
def test_e2e_fast_profile(fast_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast profile (a static model2vec distillate of MiniLM) finds the right document."""
    from lectern.ingest.embed_base import LOADS
    from lectern.rag.settings import load_settings

    built = LOADS["distill"]
    settings = load_settings(data_dir=fast_data_dir, ingest={"embed": {"profile": "fast"}})
    settings.ingest.exclude = [*settings.ingest.exclude, *SAMPLE_EXCLUDE]
    ws = Workspace(collection="fast", settings=settings)
    report = ws.ingest([SAMPLE_DOCS])
    assert report.ok, report.summary()
    manifest = ws.collection().manifest
    assert manifest.profile == "fast" and manifest.embedder["kind"] == "model2vec"
    assert LOADS["distill"] == built  # the cached fast model was used, not distilled again
    # the parse workers embedded every chunk from the pieces they cut: this process loaded no model
    assert not ws.embedder.loaded
    chunks, stored = ws.collection().export(str(SAMPLE_DOCS / "brennock_canal.txt"))
    again = ws.embedder.embed([embedding_text(c.context, c.text) for c in chunks])
    assert len(chunks) > 0 and float((stored * again).sum(axis=1).min()) > 0.9999
    hits = ws.search("How many locks are on the Brennock Canal?", k=3)
    assert Path(hits[0].chunk.source).name == "brennock_canal.txt"
    assert any("42 locks" in h.chunk.text for h in hits)
    ws.close()
