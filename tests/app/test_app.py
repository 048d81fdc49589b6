"""Every page of the web UI through streamlit's AppTest, with the fake LLM and the fake embedder."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock
from streamlit.testing.v1 import AppTest

from lectern.app import resources
from lectern.errors import InvalidName, SaveFailed
from lectern.rag.chat import ConversationStore
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.settings import load_settings
from tests.app.conftest import SAMPLE_DOCS, settle
from tests.fixtures.bad_inputs import text_pdf

OpenApp = Callable[..., AppTest]


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; have {[b.label for b in at.button]}"
    return found[0]


def texts(at: AppTest) -> str:
    """All markdown, captions and alerts on the page, as one string to search."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [i.value for i in at.info] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def ask(at: AppTest, question: str) -> AppTest:
    """Ask on the Ask page and wait for the answer (a job of the server process)."""
    return settle(at.chat_input[0].set_value(question).run())


def ingest_folder(at: AppTest, folder: Path) -> AppTest:
    field = next(t for t in at.text_input if t.label.startswith("Folder or file path"))
    field.set_value(str(folder)).run()
    return settle(button(at, "Ingest folder").click().run())


# -- uploads -------------------------------------------------------------------------------------
@dataclass
class FakeUpload:
    name: str
    data: bytes

    def getbuffer(self) -> memoryview:
        return memoryview(self.data)


@pytest.mark.parametrize(
    ("name", "saved_as"),
    [
        ("../../evil.txt", "evil.txt"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\win.txt", "win.txt"),
        ("sub/dir/notes.md", "notes.md"),
        ("what?.txt", "what_.txt"),
        ("report.pdf", "report.pdf"),
    ],
)
def test_upload_names_cannot_escape_the_uploads_folder(data_dir: Path, name: str, saved_as: str) -> None:
    config = load_settings()
    saved, rejected = resources.save_uploads([FakeUpload(name, b"hello")], config, "default")
    folder = (data_dir / "uploads" / "default").resolve()
    assert not rejected
    assert saved == [folder / saved_as]
    assert saved[0].read_bytes() == b"hello"
    assert [p for p in data_dir.parent.rglob("*") if p.is_file()] == saved


@pytest.mark.parametrize("name", ["..", ".", ".hidden.txt", "a\x00b.txt", "dir/..", "", "  "])
def test_bad_upload_names_are_rejected(data_dir: Path, name: str) -> None:
    with pytest.raises(InvalidName):
        resources.safe_filename(name)
    saved, rejected = resources.save_uploads([FakeUpload(name, b"x")], load_settings(), "default")
    assert saved == [] and len(rejected) == 1
    assert not any(p.is_file() for p in data_dir.parent.rglob("*"))


def test_long_names_are_cut_by_bytes_and_one_failure_does_not_stop_the_batch(data_dir: Path) -> None:
    """200 CJK characters were cut by characters to a 453-byte name; the OSError escaped the loop and
    the files after it were neither saved nor ingested."""
    folder = data_dir / "uploads" / "default"
    (folder / "taken.txt").mkdir(parents=True)  # a folder of that name: the file system refuses the file
    batch = [
        FakeUpload("報告" * 100 + ".txt", "長い名前".encode()),
        FakeUpload("é" * 300, b"no extension"),
        FakeUpload("taken.txt", b"x"),
        FakeUpload("after.txt", b"saved all the same"),
    ]
    saved, rejected = resources.save_uploads(batch, load_settings(), "default")
    assert [p.name for p in saved][2:] == ["after.txt"] and len(saved) == 3
    for path in saved:
        assert len(path.name.encode()) <= 200 and path.read_bytes()
    assert saved[0].name.endswith(".txt") and saved[0].name.startswith("報告")
    assert [str(e) for e in rejected] == ["cannot save 'taken.txt': Is a directory"]
    assert isinstance(rejected[0], SaveFailed)


def test_uploaded_files_are_ingested_from_the_uploads_folder(data_dir: Path) -> None:
    """The upload path in full, minus the browser widget that AppTest cannot drive."""
    from lectern.rag.workspace import Workspace

    config = load_settings()
    saved, _ = resources.save_uploads(
        [FakeUpload("../harbour.pdf", text_pdf()), FakeUpload("notes.txt", b"The pump is serviced monthly.")],
        config,
        "default",
    )
    ws = Workspace(settings=config)
    report = ws.ingest(saved)
    assert [r.status for r in report.results] == ["added", "added"]
    assert {Path(d.source).parent for d in ws.documents()} == {data_dir.resolve() / "uploads" / "default"}
    ws.close()


# -- library -------------------------------------------------------------------------------------
def test_library_ingests_a_folder_and_lists_documents(open_app: OpenApp, data_dir: Path) -> None:
    at = open_app()
    assert "No documents yet" in texts(at)
    at = ingest_folder(at, SAMPLE_DOCS)
    assert not at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["file"], table["status"], strict=True)) == {
        "make_pdf.py": "skipped",
        "README.md": "added",
        "brennock_canal.txt": "added",
        "kestrel_valley_cheese.html": "added",
        "marrow_point_light.pdf": "added",
        "quillmate_guide.md": "added",
    }
    assert {m.label: m.value for m in at.metric}["Added"] == "5"
    page = texts(at)
    assert "**marrow_point_light.pdf**" in page and "5 pages" in page
    assert len([b for b in at.button if b.label == "Delete"]) == 5
    assert not at.error

    # a second run finds nothing new
    at = settle(button(at, "Ingest folder").click().run())
    assert set(at.dataframe[0].value["status"]) == {"unchanged", "skipped"}


def test_delete_removes_one_document(open_app: OpenApp, ingested: Path) -> None:
    at = open_app()
    assert len([b for b in at.button if b.label == "Delete"]) == 5
    target = next(b for b in at.button if b.label == "Delete" and "marrow_point_light" in str(b.key))
    at = target.click().run()
    assert not at.exception
    assert len([b for b in at.button if b.label == "Delete"]) == 4
    assert "marrow_point_light.pdf" not in texts(at)
    assert "quillmate_guide.md" in texts(at)


def test_corrupt_file_shows_an_error_and_keeps_the_other_documents(
    open_app: OpenApp, ingested: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf\n")
    (folder / "good.txt").write_text("The lighthouse keeper rows to the island each Friday.")
    at = ingest_folder(open_app(), folder)
    assert not at.exception
    assert any("broken.pdf failed" in e.value for e in at.error)
    statuses = dict(zip(at.dataframe[0].value["file"], at.dataframe[0].value["status"], strict=True))
    assert statuses == {"broken.pdf": "failed", "good.txt": "added"}
    page = texts(at)
    for name in ("good.txt", "marrow_point_light.pdf", "quillmate_guide.md"):
        assert f"**{name}**" in page


def test_missing_folder_is_reported(open_app: OpenApp, tmp_path: Path) -> None:
    at = ingest_folder(open_app(), tmp_path / "nowhere")
    assert not at.exception
    assert any("no such file or directory" in e.value for e in at.error)


def test_a_held_lock_is_shown_as_a_message(
    open_app: OpenApp, ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another tab or the CLI writing: the lock timeout is an error message, and nothing is lost."""
    monkeypatch.setenv("LECTERN_INGEST__LOCK_TIMEOUT_S", "0.2")
    at = open_app()
    with FileLock(str(ingested / "collections" / "default" / ".lock")):
        at = ingest_folder(at, SAMPLE_DOCS)
        assert not at.exception
        assert any("being written by another process" in e.value for e in at.error)
        assert len([b for b in at.button if b.label == "Delete"]) == 5


def test_create_and_switch_collections(open_app: OpenApp, ingested: Path) -> None:
    at = open_app()
    assert at.sidebar.selectbox[0].value == "default"
    at.sidebar.text_input[0].set_value("notes")
    at = button(at, "Create").click().run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "notes"
    assert at.sidebar.selectbox[0].options == ["default", "notes"]
    assert (ingested / "collections" / "notes" / "manifest.json").is_file()
    assert "No documents yet" in texts(at)
    at = at.sidebar.selectbox[0].select("default").run()
    assert len([b for b in at.button if b.label == "Delete"]) == 5


def test_invalid_collection_name_is_an_error(open_app: OpenApp) -> None:
    at = open_app()
    at.sidebar.text_input[0].set_value("../etc")
    at = button(at, "Create").click().run()
    assert not at.exception
    assert any("invalid collection name" in e.value for e in at.error)
    assert at.sidebar.selectbox[0].value == "default"


# -- ask -----------------------------------------------------------------------------------------
def test_ask_streams_an_answer_with_citations(open_app: OpenApp, ingested: Path) -> None:
    at = open_app("ask")
    conversation = at.query_params["conversation"]
    ask(at, "Who designed the tower?")
    assert not at.exception
    roles = [m.name for m in at.chat_message]
    assert roles == ["user", "assistant"]
    answer = at.chat_message[1]
    assert "[1]" in answer.markdown[0].value
    labels = [e.label for e in answer.expander]
    assert labels and labels[0].startswith("[1] ")
    # the conversation is stored where ChatSession keeps it
    turns = ConversationStore.for_data_dir(ingested).load(conversation).turns
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[1].citations


def test_conversation_survives_a_reload_and_can_be_restarted(open_app: OpenApp, ingested: Path) -> None:
    at = open_app("ask")
    conversation = at.query_params["conversation"]
    ask(at, "Who designed the tower?")
    ask(at, "When was it built?")
    assert not at.exception

    reloaded = open_app("ask", conversation=conversation)  # a fresh session, same URL
    assert [m.name for m in reloaded.chat_message] == ["user", "assistant", "user", "assistant"]
    assert reloaded.chat_message[0].markdown[0].value == "Who designed the tower?"
    assert reloaded.chat_message[1].expander  # citations come back with the history

    reloaded = button(reloaded, "New conversation").click().run()
    assert reloaded.query_params["conversation"] != conversation
    assert not reloaded.chat_message


def test_ask_on_an_empty_collection_says_so(open_app: OpenApp) -> None:
    at = open_app("ask")
    assert at.chat_input[0].disabled
    assert "no documents yet" in texts(at)


def test_unreachable_llm_server_is_an_error(
    open_app: OpenApp, ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LECTERN_LLM__BACKEND", "openai")
    monkeypatch.setenv("LECTERN_LLM__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LECTERN_LLM__MODEL", "served")
    monkeypatch.setenv("LECTERN_LLM__TIMEOUT_S", "3")
    at = open_app("ask")
    ask(at, "Who designed the tower?")
    assert not at.exception
    assert any("cannot reach the model server" in e.value for e in at.error)
    ask(at, "Still there?")  # the app keeps running
    assert not at.exception


def test_question_too_long_is_an_error(
    open_app: OpenApp, ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_app("ask")
    ask(at, "tower " * 5000)
    assert not at.exception
    assert any("answer.max_question_tokens = 300" in e.value for e in at.error)  # the setting's bound
    monkeypatch.setenv("LECTERN_ANSWER__MAX_QUESTION_TOKENS", "100000")  # past it, the model's window
    at = open_app("ask")
    ask(at, "tower " * 5000)
    assert not at.exception
    assert any("context window" in e.value for e in at.error)


# -- summarize -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["map_reduce", "auto"])
def test_summarize_a_document(open_app: OpenApp, ingested: Path, method: str) -> None:
    at = open_app("summarize")
    pdf = next(d for d in _sources() if d.endswith("marrow_point_light.pdf"))
    at.selectbox(key="summary-source").set_value(pdf)
    at.selectbox(key="summary-method").set_value(method)
    at = settle(button(at, "Summarize").click().run())
    assert not at.exception
    assert "Summary of the document marrow_point_light.pdf" in [s.value for s in at.subheader]  # no path
    assert "Marrow Point" in texts(at) or "lighthouse" in texts(at).lower()
    assert at.get("download_button")
    captions = [c.value for c in at.caption]
    asked = "auto" if method == "auto" else f"{method} asked"
    assert f"stuff: the text fits the window in one call ({asked})" in captions  # one call, said so
    assert any(c.endswith("sentences found in the sources (100%)") for c in captions)
    assert any(e.label.startswith("[1] marrow_point_light.pdf") for e in at.expander)  # its citations


def test_summarize_the_collection(open_app: OpenApp, ingested: Path) -> None:
    at = open_app("summarize")
    at = at.radio[0].set_value("The whole collection").run()
    at = settle(button(at, "Summarize").click().run())
    assert not at.exception
    assert any(s.value == "Summary of the collection default" for s in at.subheader)


def _sources() -> list[str]:
    from lectern.rag.workspace import Workspace

    ws = Workspace()
    try:
        return [d.source for d in ws.documents()]
    finally:
        ws.close()


# -- settings ------------------------------------------------------------------------------------
def test_the_settings_page_explains_a_setting_with_its_own_description(open_app: OpenApp) -> None:
    """One wording per setting: the page's help is the Field description docs/SETTINGS.md prints."""
    from lectern.rag.settings import LLMSettings, RetrievalSettings

    at = open_app("settings")
    at.radio[0].set_value("packaged").run()
    assert LLMSettings.model_fields["model"].description in at.selectbox[0].help
    assert "`llm.model`" in at.selectbox[0].help
    assert RetrievalSettings.model_fields["mode"].description in at.radio[1].help


def test_settings_are_saved_for_the_cli(open_app: OpenApp, data_dir: Path) -> None:
    at = open_app("settings")
    at.radio[0].set_value("packaged").run()
    at.selectbox[0].set_value("packaged:qwen2.5-0.5b")
    at.radio[1].set_value("bm25")
    at.number_input[0].set_value(3)
    at.slider[0].set_value(0.5)
    at.number_input[1].set_value(128)
    at.selectbox[1].set_value("few_shot")
    at.toggle[0].set_value(False)  # whole passages
    at = button(at, "Save settings").click().run()
    assert not at.exception
    assert at.success
    saved = tomllib.loads((data_dir / "settings.toml").read_text())
    assert saved["answer"]["prompt"] == "few_shot"
    assert saved["answer"]["context"] == "chunks" and "evidence" not in saved["answer"]  # a default
    assert saved["retrieval"]["mode"] == "bm25" and saved["retrieval"]["k"] == 3
    assert saved["llm"]["model"] == "packaged:qwen2.5-0.5b"
    assert saved["llm"]["temperature"] == 0.5 and saved["llm"]["max_new_tokens"] == 128
    assert "data_dir" not in saved
    assert "ingest" not in saved and "summary" not in saved  # only what differs from the defaults
    # the environment pins the fake backend for the tests, and the page says so
    assert any("LECTERN_LLM__BACKEND=fake" in w.value for w in at.warning)


def test_a_lora_adapter_is_saved_for_the_local_model(open_app: OpenApp, data_dir: Path) -> None:
    at = open_app("settings")
    at.radio[0].set_value("packaged").run()
    field = next(t for t in at.text_input if t.label.startswith("Adapter folder"))
    field.set_value("  /adapters/mine  ")
    next(t for t in at.toggle if t.label.startswith("Merge the adapter")).set_value(True)
    assert not button(at, "Save settings").click().run().exception
    saved = tomllib.loads((data_dir / "settings.toml").read_text())
    assert saved["llm"]["adapter"] == "/adapters/mine" and saved["llm"]["merge_adapter"] is True
    at = open_app("settings")
    at.radio[0].set_value("packaged").run()
    next(t for t in at.text_input if t.label.startswith("Adapter folder")).set_value("")
    assert not button(at, "Save settings").click().run().exception
    assert "adapter" not in tomllib.loads((data_dir / "settings.toml").read_text())["llm"]


def test_new_generation_settings_load_no_second_model(open_app: OpenApp, ingested: Path) -> None:
    """The UI asks rag.model_cache like the CLI and the API: a new answer length or temperature saved
    on the Settings page is applied to the loaded model, not loaded again."""
    from lectern.rag.model_cache import MODELS
    from lectern.rag.workspace import Workspace

    at = open_app("ask")
    ask(at, "Who designed the tower?")
    loads = MODELS.loads["llm"]
    at = open_app("settings")
    at.slider[0].set_value(0.5)
    at.number_input[1].set_value(64)
    assert not button(at, "Save settings").click().run().exception
    at = open_app("ask")
    ask(at, "When was it first lit?")
    assert not at.exception and [m.name for m in at.chat_message] == ["user", "assistant"]
    assert MODELS.loads["llm"] == loads
    assert getattr(resources.llm(Workspace()), "max_new_tokens", None) == 64


def test_the_store_is_chosen_and_saved(open_app: OpenApp, data_dir: Path) -> None:
    """Milvus with a server URI, a token and a ranker is saved for the CLI; the page still opens with
    that server unreachable (the sidebar says so); back to FAISS keeps the URI for a later switch."""
    at = open_app("settings")
    next(r for r in at.radio if r.label == "Store").set_value("milvus").run()
    next(t for t in at.text_input if t.label == "Milvus URI").set_value(" http://db.example:19530 ")
    next(t for t in at.text_input if t.label == "Milvus token").set_value("reader:secret")
    next(s for s in at.selectbox if s.label == "Hybrid fusion").set_value("rrf")
    assert not button(at, "Save settings").click().run().exception
    saved = tomllib.loads((data_dir / "settings.toml").read_text())["store"]
    assert saved == {"backend": "milvus", "uri": "http://db.example:19530", "token": "reader:secret",
                     "ranker": "rrf"}  # fmt: skip
    at = open_app("settings")
    assert any("cannot open the Milvus database" in e.value for e in at.error)  # no server there
    store = next(r for r in at.radio if r.label == "Store")
    assert store.value == "milvus"
    store.set_value("faiss").run()
    assert not any(t.label == "Milvus URI" for t in at.text_input)
    assert not button(at, "Save settings").click().run().exception
    saved = tomllib.loads((data_dir / "settings.toml").read_text())["store"]
    assert "backend" not in saved and saved["uri"] == "http://db.example:19530"  # faiss: the default


def test_openai_settings_need_a_model(open_app: OpenApp, data_dir: Path) -> None:
    at = open_app("settings")
    at.radio[0].set_value("openai").run()
    at = button(at, "Save settings").click().run()
    assert not at.exception
    assert at.error
    assert not (data_dir / "settings.toml").exists()


def test_an_answer_without_citations_shows_the_passages_given() -> None:
    """Small models sometimes cite nothing: the passages they were shown still appear, with file and page."""

    def script() -> None:
        from lectern.app import components
        from lectern.rag.types import Context

        contexts = [
            Context(
                number=1, chunk_id="a", source="/docs/light.pdf", page=2, text="Edith Varley designed it."
            ),
            Context(number=2, chunk_id="b", source="/docs/notes.md", text="Other notes."),
        ]
        components.citations([], contexts)

    at = AppTest.from_function(script).run()
    assert [e.label for e in at.expander] == ["Passage 1: light.pdf, page 2", "Passage 2: notes.md"]
    assert at.expander[0].markdown[0].value == "Edith Varley designed it\\."  # shown as plain text


def test_citations_name_slides_sheet_rows_and_ocr_pages() -> None:
    """A cited slide, block of rows or OCRed page is named by its location; OCR's text is marked as such."""

    def script() -> None:
        from lectern.app import components
        from lectern.rag.types import Citation

        components.citations(
            [
                Citation(
                    number=1, source="/d/ferry.pptx", heading="slide 2: Passengers", chunk_id="a", quote="q"
                ),
                Citation(
                    number=2,
                    source="/d/stock.xlsx",
                    heading="sheet Stock, rows 27-51",
                    chunk_id="b",
                    quote="q",
                ),
                Citation(number=3, source="/d/scan.pdf", page=4, heading="OCR", chunk_id="c", quote="q"),
            ]
        )

    at = AppTest.from_function(script).run()
    assert [e.label for e in at.expander] == [
        "[1] ferry.pptx, slide 2: Passengers",
        "[2] stock.xlsx, sheet Stock, rows 27-51",
        "[3] scan.pdf, page 4 (OCR)",
    ]
    captions = [c.value for c in at.caption]
    assert "recognition errors" in captions[-1] and "open the PDF at this page" in captions[-1]
    assert not any("recognition errors" in c for c in captions[:-1])


# -- signing in ----------------------------------------------------------------------------------
def test_a_password_guards_every_page(open_app: OpenApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lectern ui --host 0.0.0.0` requires a password; the app asks for it before anything else."""
    monkeypatch.setenv("LECTERN_UI_PASSWORD", "correct horse")
    at = open_app()
    assert "No documents yet" not in texts(at) and [t.label for t in at.text_input] == ["Password"]
    at.text_input[0].input("wrong")
    at = at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."] and "No documents yet" not in texts(at)
    at.text_input[0].input("correct horse")
    at = at.button[0].click().run()
    assert not at.exception and "No documents yet" in texts(at)


# -- work that outlives the page (app.jobs), and what the pages say about it ----------------------
def test_an_ingest_runs_as_a_job_and_every_page_follows_the_data(
    open_app: OpenApp, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest is the server's, not the run's: a second session on the Ask page sees the
    collection appear (sidebar, Ask box) on its next run, without starting anything itself."""
    from lectern.ingest.fake_embed import FakeEmbedder

    go, embed = threading.Event(), FakeEmbedder.embed
    monkeypatch.setattr(FakeEmbedder, "embed", lambda self, texts: (go.wait(60), embed(self, texts))[1])
    ask = open_app("ask")
    assert ask.chat_input[0].disabled
    assert any("Empty: add documents" in c.value for c in ask.sidebar.caption)
    at = button(ingest_folder_field(open_app(), SAMPLE_DOCS), "Ingest folder").click().run()
    assert [s.value for s in at.subheader][:1] == ["Ingesting"]  # the job's bar, while it runs
    assert any("The ingest into default is running" in c.value for c in ask.run().sidebar.caption)
    go.set()
    at = settle(at)
    assert [s.value for s in at.subheader][:1] == ["Last ingest"]
    ask.run()  # what the watcher's rerun does when the generation moved
    assert not ask.chat_input[0].disabled
    assert not any("Empty: add documents" in c.value for c in ask.sidebar.caption)


def ingest_folder_field(at: AppTest, folder: Path) -> AppTest:
    field = next(t for t in at.text_input if t.label.startswith("Folder or file path"))
    return field.set_value(str(folder)).run()


def test_the_progress_lines_tell_the_totals_and_the_time_left() -> None:
    from lectern.app import components
    from lectern.app.jobs import Job
    from lectern.ingest.report import Progress

    job = Job("ingest", "default", "default", "The ingest")
    assert components.ingest_status(job)[1].startswith("Starting: loading the embedding model")
    job.started -= 60
    job.report(
        Progress(files_total=1, pages=1, chunks=500, chunks_embedded=256, bytes_total=30_000_000,
                 bytes_done=7_500_000, current="/data/big.txt")
    )  # fmt: skip
    fraction, text = components.ingest_status(job)
    assert fraction == 0.25
    assert text.startswith("Files 0 of 1 · 7.5 MB of 30.0 MB · 1 page · chunks embedded 256 of about 2000")
    assert "big.txt · elapsed 1:0" in text and "about 3:0" in text and text.endswith(" left")
    job.report(
        Progress(files_total=1, pages=2, pages_total=5, bytes_total=10, bytes_done=4, current="/d/a.pdf")
    )
    assert " · pages 2 of 5 · " in components.ingest_status(job)[1]  # a PDF's pages, counted up front
    summary = Job("summary", "default", "default", "The summary")
    summary.report(0, 1)
    assert components.summary_status(summary)[1].startswith("Summarizing: 0 of 1 model call done")
    summary.report(2, 5)
    assert components.summary_status(summary)[1].startswith("Summarizing: 2 of 5 model calls done")


def test_failed_uploads_leave_the_uploads_folder(data_dir: Path) -> None:
    from lectern.rag.workspace import Workspace

    saved, _ = resources.save_uploads(
        [FakeUpload("broken.pdf", b"%PDF-1.7\nnot a pdf\n"), FakeUpload("good.txt", b"The pump hums.")],
        load_settings(),
        "default",
    )
    ws = Workspace()
    report = ws.ingest(saved)
    assert [r.status for r in report.results] == ["failed", "added"]
    resources.forget_uploads(saved, ws)
    ws.close()
    assert [p.name for p in (data_dir / "uploads" / "default").iterdir()] == ["good.txt"]


def test_a_failed_replacement_keeps_the_earlier_file_and_its_document(data_dir: Path) -> None:
    """An upload under a document's file name that then fails (here: not text) left the document
    pointing at the failed upload's bytes; now the earlier file is back, and a replacement that is
    ingested replaces it for good."""
    from lectern.rag.workspace import Workspace

    config = load_settings()
    folder = data_dir / "uploads" / "default"
    (first,), _ = resources.save_uploads(
        [FakeUpload("notes.txt", b"The pump hums at night.")], config, "default"
    )
    ws = Workspace()
    try:
        assert ws.ingest([first]).ok
        resources.forget_uploads([first], ws)
        before = {d.source: d.content_hash for d in ws.documents()}

        (again,), _ = resources.save_uploads(
            [FakeUpload("notes.txt", b"\x00\x01\x02" * 400)], config, "default"
        )
        assert again == first
        report = ws.ingest([again])
        assert [r.status for r in report.results] == ["failed"], report.results
        resources.forget_uploads([again], ws)
        assert first.read_bytes() == b"The pump hums at night."
        assert {d.source: d.content_hash for d in ws.documents()} == before
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # nothing set aside is left

        (third,), _ = resources.save_uploads(
            [FakeUpload("notes.txt", b"The pump is silent.")], config, "default"
        )
        assert [r.status for r in ws.ingest([third]).results] == ["updated"]
        resources.forget_uploads([third], ws)
        assert first.read_bytes() == b"The pump is silent."
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    finally:
        ws.close()


def test_a_blank_question_is_refused_and_a_pasted_one_is_shown_as_text(
    open_app: OpenApp, ingested: Path
) -> None:
    at = open_app("ask").chat_input[0].set_value("   ").run()  # nothing started: nothing to settle
    assert not at.exception and not at.chat_message
    assert any("blank" in w.value for w in at.warning)
    at = ask(at, "# Tower *who* built it?")
    assert at.chat_message[0].markdown[0].value == "\\# Tower \\*who\\* built it?"


def test_a_declined_question_says_the_model_was_not_asked_and_can_be_asked_anyway(
    open_app: OpenApp, ingested: Path
) -> None:
    at = ask(open_app("ask"), "Which zeppelin squadron bombed Quorvath?")  # nothing of it in the documents
    assert not at.exception
    notes = [i.value for i in at.info]
    assert any(n.startswith("The model was not asked") for n in notes), notes
    captions = [c.value for c in at.caption]
    assert "The model was not asked; these are the passages the search found:" in captions
    assert not any("the passages the model was given" in c for c in captions)
    at = settle(button(at, "Ask anyway").click().run())
    assert not at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2  # asked again, once
    # the model's answer is shown, not withdrawn for citing passages that do not name Quorvath
    assert at.chat_message[-1].markdown[0].value != NO_ANSWER
    assert not any("was withdrawn" in c.value for c in at.caption)
    assert not any(i.value.startswith("The model was not asked") for i in at.info)
    assert not any(b.label == "Ask anyway" for b in at.button)


def test_an_answer_citing_passages_that_do_not_name_the_subject_says_it_was_withdrawn(
    open_app: OpenApp, ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LECTERN_ANSWER__EVIDENCE", "false")  # past the gate, the subject check decides
    at = ask(open_app("ask"), "Which zeppelin squadron bombed Quorvath?")
    assert not at.exception
    assert at.chat_message[-1].markdown[0].value == NO_ANSWER
    withdrawn = [c.value for c in at.caption if "was withdrawn" in c.value]
    assert len(withdrawn) == 1 and withdrawn[0].startswith("The model's answer, “"), withdrawn


def test_settings_say_which_store_holds_which_collections(open_app: OpenApp, ingested: Path) -> None:
    at = open_app("settings")
    next(r for r in at.radio if r.label == "Store").set_value("milvus").run()
    said = " ".join(i.value for i in at.info)
    assert "faiss holds default" in said
    assert "lectern migrate --from faiss:NAME --to milvus:NAME" in said
