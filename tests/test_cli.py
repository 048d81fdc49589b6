"""Tests of the `lectern` CLI with typer's CliRunner, the fake embedder and a tmp data dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from tests.conftest import CMU_DATA
from tests.fixtures.bad_inputs import text_pdf
from tests.fixtures.documents import build_image

CMU = CMU_DATA / "S08"
TINY_ARTICLES = ("data/set4/a2", "data/set4/a3")
EVAL_KEYS = {
    "article_hit@1",
    "article_hit@5",
    "article_hit@10",
    "answer_hit@1",
    "answer_hit@5",
    "answer_hit@10",
    "MRR@10",
    "mean_query_ms",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "otters.txt").write_text("Otters\n\nThe river otters of Glenmore eat crayfish at dawn.\n")
    (folder / "harbour.pdf").write_bytes(text_pdf())
    return folder


def run(runner: CliRunner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_help(runner: CliRunner) -> None:
    result = run(runner, "--help")
    assert result.exit_code == 0
    for command in ("ingest", "delete", "list", "search", "ask", "chat", "summarize", "eval", "ui"):
        assert command in result.output
    assert run(runner, "eval", "retrieval", "--help").exit_code == 0


def test_ingest_prints_report_and_search_finds_source_and_page(runner: CliRunner, docs: Path) -> None:
    result = run(runner, "ingest", str(docs), "-c", "notes")
    assert result.exit_code == 0, result.output
    assert "added" in result.output and "otters.txt" in result.output and "harbour.pdf" in result.output
    assert "added 2, updated 0, unchanged 0, skipped 0, failed 0" in result.output

    again = run(runner, "ingest", str(docs), "-c", "notes")
    assert again.exit_code == 0 and "unchanged 2" in again.output

    found = run(runner, "search", "ferry leaves morning", "-c", "notes", "-k", "2")
    assert found.exit_code == 0, found.output
    first = found.output.splitlines()[0]
    assert "harbour.pdf p.2" in first

    as_json = run(runner, "search", "crayfish otters", "-c", "notes", "--json", "-k", "1")
    hits = json.loads(as_json.output)
    assert Path(hits[0]["source"]).name == "otters.txt" and "crayfish" in hits[0]["text"]


def test_list_and_delete(runner: CliRunner, docs: Path) -> None:
    assert run(runner, "ingest", str(docs), "-c", "notes").exit_code == 0
    listed = run(runner, "list", "-c", "notes", "--json")
    assert listed.exit_code == 0
    assert sorted(Path(d["source"]).name for d in json.loads(listed.output)) == ["harbour.pdf", "otters.txt"]
    table = run(runner, "list", "-c", "notes")
    assert "otters.txt" in table.output and "collections: notes" in table.output

    deleted = run(runner, "delete", str(docs / "otters.txt"), "-c", "notes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted" in deleted.output and "(1 chunks)" in deleted.output
    remaining = json.loads(run(runner, "list", "-c", "notes", "--json").output)
    assert [Path(d["source"]).name for d in remaining] == ["harbour.pdf"]
    found = run(runner, "search", "crayfish otters", "-c", "notes", "--json")
    assert all(Path(h["source"]).name != "otters.txt" for h in json.loads(found.output))

    missing = run(runner, "delete", str(docs / "otters.txt"), "-c", "notes")
    assert missing.exit_code == 1 and "not in collection" in missing.output


def test_ingest_include_and_exclude_flags(runner: CliRunner, docs: Path) -> None:
    """--include replaces ingest.include; --exclude adds to ingest.exclude (the default's hidden files
    stay excluded)."""
    (docs / "notes.txt").write_text("Notes\n\nThe harbour master keeps notes.\n")
    (docs / ".hidden.txt").write_text("Hidden\n\nA hidden file.\n")
    result = run(
        runner, "ingest", str(docs), "-c", "notes", "--include", "*.txt", "--exclude", "notes.*", "--json"
    )
    assert result.exit_code == 0, result.output
    added = sorted(Path(f["path"]).name for f in json.loads(result.output)["files"] if f["status"] == "added")
    assert added == ["otters.txt"]


def test_ingest_with_a_corrupt_file_exits_1_and_names_it(runner: CliRunner, docs: Path) -> None:
    (docs / "broken.pdf").write_bytes(text_pdf()[:300])
    result = run(runner, "ingest", str(docs), "-c", "notes")
    assert result.exit_code == 1
    assert "broken.pdf" in result.output and "corrupt" in result.output
    assert "failed 1" in result.output
    as_json = run(runner, "ingest", str(docs), "-c", "notes", "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    failed = [f for f in data["files"] if f["status"] == "failed"]
    assert [Path(f["path"]).name for f in failed] == ["broken.pdf"] and "corrupt" in failed[0]["reason"]


def test_ingest_reads_scans_by_ocr_and_says_so(runner: CliRunner, docs: Path) -> None:
    """--ocr off leaves an image unread, with its reason; auto reads it, and the report counts OCR pages;
    a citation of it says where it is and that OCR read it."""
    build_image(docs / "logbook.png")
    off = run(runner, "ingest", str(docs), "-c", "notes", "--ocr", "off")
    assert off.exit_code == 1 and "logbook.png" in off.output and "ingest.ocr is off" in off.output
    auto = run(runner, "ingest", str(docs), "-c", "notes", "--json")
    assert auto.exit_code == 0, auto.output
    data = json.loads(auto.output)
    assert (data["added"], data["ocr_pages"]) == (1, 1)
    found = run(runner, "search", "gannets lighthouse keeper", "-c", "notes")
    assert "logbook.png § OCR" in found.output
    assert run(runner, "ingest", str(docs), "-c", "notes", "--ocr", "sometimes").exit_code == 2


@pytest.mark.parametrize("command", [["search", "anything"], ["delete", "x.txt"], ["ask", "why?"], ["list"]])
def test_unknown_collection_exits_2(runner: CliRunner, docs: Path, command: list[str]) -> None:
    assert run(runner, "ingest", str(docs), "-c", "notes").exit_code == 0
    result = run(runner, *command, "-c", "nope")
    assert result.exit_code == 2
    assert "no collection named 'nope'" in result.output and "notes" in result.output


def test_invalid_collection_name_exits_2(runner: CliRunner) -> None:
    result = run(runner, "search", "x", "-c", "../etc")
    assert result.exit_code == 2 and "invalid collection name" in result.output


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_collection_keeps_its_profile(
    runner: CliRunner, docs: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The CLI applies the library's rule: another profile than the collection's is exit 2, naming both."""
    from lectern.rag.settings import load_settings
    from tests.rag.test_workspace_ingest import made_with_profile

    monkeypatch.delenv("LECTERN_INGEST__EMBED__MODEL")
    made_with_profile(load_settings(), "quick", "fast")
    if how == "flag":
        result = run(runner, "ingest", str(docs), "-c", "quick", "--profile", "accurate")
    else:
        monkeypatch.setenv("LECTERN_INGEST__EMBED__PROFILE", "accurate")
        result = run(runner, "search", "otters", "-c", "quick")
    assert result.exit_code == 2, result.output
    assert "created with profile 'fast', not 'accurate'" in " ".join(result.output.split())


def test_data_dir_flag(runner: CliRunner, docs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    assert run(runner, "ingest", str(docs), "-c", "notes", "--data-dir", str(other)).exit_code == 0
    assert (other / "collections" / "notes" / "manifest.json").is_file()


def test_ui_serves_the_app_without_the_developer_toolbar(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No "Deploy" button or developer menu in the served app: `lectern ui` passes toolbarMode.
    (The real exec, and a SIGTERM reaching Streamlit, is tests/app/test_ui_process.py.)"""
    import lectern.cli

    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(lectern.cli.ui, "replace_process", lambda cmd, env: calls.append((cmd, env)))
    result = run(runner, "ui", "-c", "notes", "--port", "8642", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 0, result.output
    [(cmd, env)] = calls
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "minimal"
    assert cmd[cmd.index("--server.port") + 1] == "8642" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[0] == sys.executable and cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("main.py")
    assert env["LECTERN_COLLECTION"] == "notes" and env["LECTERN_DATA_DIR"] == str(tmp_path / "d")


@pytest.fixture
def tiny_qa(tmp_path: Path) -> Path:
    if not (CMU / "question_answer_pairs.txt").is_file():
        pytest.skip("the CMU QA data is not available")
    qa = tmp_path / "qa"
    lines = (CMU / "question_answer_pairs.txt").read_text(encoding="latin-1").splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[-1].strip() in TINY_ARTICLES]
    qa.mkdir()
    (qa / "question_answer_pairs.txt").write_text("\n".join(keep) + "\n", encoding="latin-1")
    for article in TINY_ARTICLES:
        target = qa / f"{article}.txt.clean"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CMU / f"{article}.txt.clean", target)
    return qa


def test_eval_retrieval_json(runner: CliRunner, tiny_qa: Path) -> None:
    result = run(runner, "eval", "retrieval", "--qa-dir", str(tiny_qa), "--json", "--mode", "bm25")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert set(metrics) == EVAL_KEYS
    for key in EVAL_KEYS - {"mean_query_ms"}:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["article_hit@10"] == 1.0  # two articles: one of the top ten is always right
    assert metrics["article_hit@1"] > 0.5


def test_eval_retrieval_bad_dir_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, "eval", "retrieval", "--qa-dir", str(tmp_path))
    assert result.exit_code == 2 and "question_answer_pairs.txt" in result.output


def test_ui_beyond_loopback_needs_a_password_or_a_logged_opt_out(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The UI reads and ingests any file the server can: --host beyond loopback required nothing."""
    import lectern.cli

    calls: list[dict[str, str]] = []
    monkeypatch.setattr(lectern.cli.ui, "replace_process", lambda cmd, env: calls.append(env))
    monkeypatch.delenv("LECTERN_UI_PASSWORD", raising=False)
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        result = run(runner, "ui", "--host", host)
        assert result.exit_code == 2 and "exposes the web UI" in result.output and calls == [], host
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert run(runner, "ui", "--host", host).exit_code == 0 and "LECTERN_UI_PASSWORD" not in calls.pop()

    result = run(runner, "ui", "--host", "0.0.0.0", "--no-password")
    assert result.exit_code == 0 and "without a password (--no-password)" in result.output
    calls.pop()
    secret = tmp_path / "password"
    secret.write_text("correct horse\n")
    result = run(runner, "ui", "--host", "0.0.0.0", "--password-file", str(secret))
    assert result.exit_code == 0 and calls.pop()["LECTERN_UI_PASSWORD"] == "correct horse"
    secret.write_text("\n")
    assert run(runner, "ui", "--host", "0.0.0.0", "--password-file", str(secret)).exit_code == 2
    monkeypatch.setenv("LECTERN_UI_PASSWORD", "from the environment")
    assert run(runner, "ui", "--host", "0.0.0.0").exit_code == 0
    assert calls.pop()["LECTERN_UI_PASSWORD"] == "from the environment"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB file system (tmpfs), where this machine lets the tests mount one (root)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_an_ingest_that_fills_the_disk_is_a_clear_error_and_keeps_what_was_written(
    runner: CliRunner, small_disk: Path, tmp_path: Path
) -> None:
    """On a full disk SQLite's COMMIT failed and rolled back by itself; lectern's own ROLLBACK then
    raised 'cannot rollback - no transaction is active', an internal error that hid the cause."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [
        "river",
        "otter",
        "crayfish",
        "dawn",
        "lighthouse",
        "keeper",
        "tower",
        "granite",
        "canal",
        "lock",
        "harbour",
        "storm",
    ]
    for i in range(30):
        (corpus / f"doc{i:02d}.txt").write_text(" ".join(words[(i + j) % 12] for j in range(20000)) + ".\n")
    data = ["--data-dir", str(small_disk / "data"), "--collection", "c"]
    result = runner.invoke(app, ["ingest", str(corpus), *data])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "the disk filled up while writing" in said and "internal error" not in said
    listed = runner.invoke(app, ["list", "--json", *data])
    assert listed.exit_code == 0, listed.output
    kept = [Path(d["source"]).name for d in json.loads(listed.output)]
    assert kept and len(kept) < 30 and kept == sorted(kept)  # those written before the disk filled
    found = runner.invoke(app, ["search", "otter crayfish", *data])
    assert found.exit_code == 0 and Path(kept[0]).stem in found.output
