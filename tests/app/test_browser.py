"""The real page in a real browser: `lectern ui` with the packaged models, driven by Playwright.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; skipped without them.
Saves a screenshot to artifacts/ui.png.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import ROOT, SAMPLE_DOCS
from tests.fixtures.ui_server import CHROMIUM, child_env, chromium, lectern_ui

ARTIFACTS = ROOT / "artifacts"
STARTUP_S = 60
ANSWER_MS = 420_000  # first use loads MiniLM and converts the GGUF model: minutes on 2 cores

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`lectern ui` on a free port with a fresh data dir, the default embedder and the default model (Qwen 0.5B)."""
    env = child_env()
    env["LECTERN_LLM__MODEL"] = "packaged:qwen2.5-0.5b"  # the default on this kind of machine
    lectern = Path(sys.executable).with_name("lectern")
    cmd = [str(lectern), "ui", "--data-dir", str(tmp_path / "data")]
    with lectern_ui(cmd, env, tmp_path, tmp_path / "server.log", STARTUP_S) as url:
        yield url


def test_upload_ask_and_see_citations(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect = sync_api.expect
        page.goto(server)
        expect(page.get_by_role("heading", name="Library · default")).to_be_visible()
        expect(page.get_by_role("button", name="Deploy")).to_have_count(0)  # a served app, no dev toolbar

        # upload and ingest: the report and the document list come back
        page.locator('input[type="file"]').set_input_files(str(SAMPLE_DOCS / "marrow_point_light.pdf"))
        page.get_by_role("button", name="Ingest uploaded files").click()
        expect(page.get_by_text("Last ingest")).to_be_visible(timeout=ANSWER_MS)
        expect(page.get_by_text("5 pages", exact=True)).to_be_visible()
        added = page.locator('[data-testid="stMetric"]', has_text="Added")
        expect(added.locator('[data-testid="stMetricValue"]')).to_have_text("1")

        # ask: a streamed answer with at least one numbered citation
        page.get_by_role("link", name="Ask").click()
        box = page.get_by_placeholder("Ask a question")
        expect(box).to_be_enabled()
        box.fill("Who designed the tower?")
        box.press("Enter")
        citation = page.locator('[data-testid="stExpander"]', has_text="marrow_point_light.pdf").first
        expect(citation).to_be_visible(timeout=ANSWER_MS)
        answer = page.locator('[data-testid="stChatMessage"]').nth(1)
        numbered = answer.locator('[data-testid="stExpander"]', has_text="] marrow_point_light.pdf").count()
        # small models rarely write [n] themselves; lectern then cites sentence by sentence
        assert numbered >= 1, answer.inner_text()[:600]
        citation.locator("summary").click()
        page.wait_for_timeout(1000)  # let the expander finish opening before the screenshot
        expect(citation.get_by_text("page", exact=False).first).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)

        # a reload shows the same conversation (its id is in the URL)
        assert "conversation=" in page.url
        page.reload()
        expect(page.get_by_text("Who designed the tower?")).to_be_visible()
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(2)
