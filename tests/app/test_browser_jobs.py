"""Work that outlives the page, in a real browser: `lectern ui` with the fake models, driven by Playwright.

One server for the module (each test its own collection, in the URL). Where a test must act while
an ingest or an answer is under way, the server holds it there: a sitecustomize.py on its path
makes the fake embedder (or the fake model) wait while a file named `hold` exists, for text that
carries a marker word; the test removes the file to let it go on. No sleeps, no timing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import ROOT, SAMPLE_DOCS
from tests.conftest import FAKE_MODELS
from tests.fixtures.ui_server import CHROMIUM, EXPECT_MS, child_env, chromium, lectern_ui

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
STARTUP_S = 120
MARK = "gatemark"  # text with this word waits while HOLD exists
GATE = """
import os, time
from pathlib import Path

HOLD = Path(os.environ["UI_TEST_GATE"]) / "hold"


def _held(text):
    while "gatemark" in text and HOLD.exists():
        time.sleep(0.05)


def _install():
    from lectern.ingest.fake_embed import FakeEmbedder
    from lectern.rag.fake import FakeChatModel

    embed, stream = FakeEmbedder.embed, FakeChatModel._stream

    def held_embed(self, texts):
        _held(" ".join(texts))
        return embed(self, texts)

    def held_stream(self, messages, *args, **kwargs):
        _held(" ".join(str(m.content) for m in messages))
        yield from stream(self, messages, *args, **kwargs)

    FakeEmbedder.embed, FakeChatModel._stream = held_embed, held_stream


if os.environ.get("UI_TEST_GATE"):
    _install()
"""


@dataclass
class Server:
    url: str
    hold: Path  # while it exists, text with MARK waits
    data: Path
    log: Path

    def at(self, collection: str, page: str = "") -> str:
        return f"{self.url}/{page}?collection={collection}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui")
    gate = root / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(GATE)
    env = child_env()
    env.update(
        FAKE_MODELS,
        LECTERN_INGEST__PARSE_WORKERS="1",  # a worker parses (spawned by a job); the fake embeds here
        LECTERN_ANSWER__EVIDENCE="false",  # the marker word is in no passage: the model must be asked
        UI_TEST_GATE=str(gate),
        PYTHONPATH=os.pathsep.join([str(gate), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    log = root / "server.log"
    cmd = [sys.executable, "-m", "lectern.cli", "ui", "--data-dir", str(root / "data")]
    with lectern_ui(cmd, env, root, log, STARTUP_S) as url:
        yield Server(url, gate / "hold", root / "data", log)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def expect() -> Any:
    return pytest.importorskip("playwright.sync_api").expect  # its deadline: ui_server.chromium


def new_page(browser: Any) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(EXPECT_MS)  # a deadline only, as for expect
    return page


def notes(folder: Path) -> Path:
    """Three text files; the second one waits in the embedder while the hold file exists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a_first.txt").write_text("The ferry to Holm leaves at dawn from pier two.")
    (folder / "b_second.txt").write_text(f"The {MARK} lighthouse keeper rows out on Fridays.")
    (folder / "c_third.txt").write_text("Tide tables are posted at the harbour office.")
    return folder


def ingest_folder(page: Any, folder: Path) -> None:
    page.get_by_role("tab", name="Folder on the server").click()
    field = page.get_by_placeholder("/path/to/documents")
    field.fill(str(folder))
    field.press("Enter")
    page.get_by_role("button", name="Ingest folder").click()


def test_an_ingest_survives_a_reload_and_a_page_change_and_can_be_stopped(
    server: Server, browser: Any, expect: Any, tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes")
    server.hold.touch()
    try:
        page = new_page(browser)
        page.goto(server.at("stopped"))
        ingest_folder(page, folder)
        expect(page.get_by_text("Files 1 of 3")).to_be_visible()  # held in the second file
        page.reload()
        expect(page.get_by_text("Files 1 of 3")).to_be_visible()  # the page found the job again
        page.get_by_role("link", name="Ask").click()
        expect(page.get_by_text("The ingest into stopped is running")).to_be_visible()  # the sidebar
        page.get_by_role("link", name="Library").click()
        expect(page.get_by_text("Files 1 of 3")).to_be_visible()
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_text("Stopping after the current step")).to_be_visible()
    finally:
        server.hold.unlink()
    expect(page.get_by_text("Stopped: the files finished before the stop are kept")).to_be_visible()
    expect(page.get_by_text("a_first.txt", exact=True).first).to_be_visible()
    deletes = page.get_by_role("button", name="Delete")
    expect(deletes).to_have_count(1)  # the first file was kept; the second was stopped, the third not begun


def test_a_question_survives_a_reload_mid_answer_and_a_second_one_waits(
    server: Server, browser: Any, expect: Any, tmp_path: Path
) -> None:
    page = new_page(browser)
    page.goto(server.at("asked"))
    ingest_folder(page, SAMPLE_DOCS)
    expect(page.get_by_text("Last ingest")).to_be_visible()
    page.get_by_role("link", name="Ask").click()
    box = page.get_by_placeholder("Ask a question")
    expect(box).to_be_enabled()
    question = f"Who designed the tower? ({MARK})"
    server.hold.touch()
    try:
        box.fill(question)
        box.press("Enter")
        expect(page.get_by_text("Searching the documents")).to_be_visible()
        page.reload()
        expect(page.get_by_text(question)).to_be_visible()  # stored before it was answered
        expect(page.get_by_text("Searching the documents")).to_be_visible()  # still being answered
        box = page.get_by_placeholder("Ask a question")
        box.fill("And when was it built?")
        box.press("Enter")
        expect(page.get_by_text("is still running: wait for it to end")).to_be_visible()
    finally:
        server.hold.unlink()
    messages = page.locator('[data-testid="stChatMessage"]')
    expect(messages).to_have_count(2)
    expect(messages.nth(1).locator('[data-testid="stExpander"]').first).to_be_visible()  # cited
    page.reload()
    expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(2)


def test_two_sessions_see_each_others_ingest_and_the_sidebar_follows(
    server: Server, browser: Any, expect: Any, tmp_path: Path
) -> None:
    """B watches an empty collection while A ingests into it: B's sidebar says an ingest is running,
    then, without a reload, stops saying "Empty", and B's Ask box is enabled."""
    folder = notes(tmp_path / "notes")
    a, b = new_page(browser), new_page(browser)
    b.goto(server.at("shared", "ask"))
    expect(b.get_by_text("Empty: add documents in the Library")).to_be_visible()
    expect(b.get_by_placeholder("Ask a question")).to_be_disabled()
    server.hold.touch()
    try:
        a.goto(server.at("shared"))
        ingest_folder(a, folder)
        expect(a.get_by_text("Files 1 of 3")).to_be_visible()
        expect(b.get_by_text("The ingest into shared is running")).to_be_visible()
    finally:
        server.hold.unlink()
    expect(a.get_by_text("Last ingest")).to_be_visible()
    expect(b.get_by_text("Empty: add documents in the Library")).to_have_count(0)
    expect(b.get_by_placeholder("Ask a question")).to_be_enabled()
    b.get_by_role("link", name="Library").click()
    expect(b.get_by_role("button", name="Delete")).to_have_count(3)
