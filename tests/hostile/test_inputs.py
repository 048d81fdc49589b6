"""The smaller hostile inputs: hard links, file names that are not UTF-8, arguments that are not
files, empty and huge queries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.cli.edge import EXIT_FAILED_FILES, EXIT_USAGE
from tests.hostile.conftest import no_traceback


def ingest_json(runner: CliRunner, *paths: Path | str) -> tuple[int, dict]:
    result = runner.invoke(app, ["ingest", *map(str, paths), "-c", "c", "--json"])
    no_traceback(result.output)
    return result.exit_code, json.loads(result.stdout)


def test_a_hard_linked_file_is_ingested_once(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Otters eat crayfish at dawn.\n")
    os.link(folder / "a.txt", folder / "b.txt")
    rc, report = ingest_json(runner, folder)
    assert rc == 0 and report["added"] == 1 and report["skipped"] == 1, report
    (skipped,) = [f for f in report["files"] if f["status"] == "skipped"]
    assert skipped["path"].endswith("b.txt") and "a hard link" in skipped["reason"]
    hits = runner.invoke(app, ["search", "otters", "-c", "c", "--json"]).stdout
    assert len(json.loads(hits)) == 1


def test_a_file_name_that_is_not_utf8_is_ingested_and_shown_escaped(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9 notes.txt")  # Latin-1 bytes on a UTF-8 system
    (folder / name).write_text("Otters eat crayfish at dawn.\n")
    rc, report = ingest_json(runner, folder)
    assert rc == 0 and report["added"] == 1, report
    (added,) = report["files"]
    assert added["path"].endswith("caf\\xe9 notes.txt")  # valid JSON text, the byte spelled out
    listing = runner.invoke(app, ["list", "-c", "c"])
    assert listing.exit_code == 0 and "caf\\xe9 notes.txt" in listing.output
    found = runner.invoke(app, ["search", "otters", "-c", "c"])
    assert found.exit_code == 0 and "caf\\xe9 notes.txt" in found.output
    again = runner.invoke(app, ["ingest", str(folder), "-c", "c"])
    assert again.exit_code == 0 and "unchanged 1" in " ".join(again.output.split())
    gone = runner.invoke(app, ["delete", str(folder / name), "-c", "c"])
    assert gone.exit_code == 0, gone.output


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("fifo", "not a regular file (a pipe, socket or device)"),
        ("zero", "not a regular file (a pipe, socket or device)"),
        ("loop", "symbolic link loop"),
        ("dangling", "dangling symbolic link"),
        ("missing", "no such file or directory"),
    ],
)
def test_an_argument_that_is_not_a_file_gets_its_reason(
    runner: CliRunner, tmp_path: Path, make: str, reason: str
) -> None:
    path = tmp_path / make
    if make == "fifo":
        os.mkfifo(path)
    elif make == "zero":
        path = Path("/dev/zero")
    elif make == "loop":
        os.symlink(tmp_path / "loop2", path)
        os.symlink(path, tmp_path / "loop2")
    elif make == "dangling":
        os.symlink(tmp_path / "nowhere", path)
    rc, report = ingest_json(runner, path)
    assert rc == EXIT_FAILED_FILES, report
    (failed,) = report["files"]
    assert failed["status"] == "failed" and reason in failed["reason"], failed


@pytest.fixture
def notes(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Otters eat crayfish at dawn.\n")
    assert runner.invoke(app, ["ingest", str(folder), "-c", "c"]).exit_code == 0


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_search_is_a_usage_error(runner: CliRunner, notes: None, query: str) -> None:
    result = runner.invoke(app, ["search", query, "-c", "c"])
    no_traceback(result.output)
    assert result.exit_code == EXIT_USAGE and "query" in result.output and "empty" in result.output


def test_a_huge_question_is_refused_before_the_model_loads(
    runner: CliRunner, notes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lectern.rag.workspace

    loads: list[object] = []
    monkeypatch.setattr(lectern.rag.workspace, "shared_llm", lambda *a: loads.append(a))
    for extra in ([], ["--agent"]):
        result = runner.invoke(app, ["ask", "why " * 25_000, "-c", "c", *extra])
        no_traceback(result.output)
        assert result.exit_code == EXIT_USAGE and "max_question_tokens" in result.output, result.output
    assert loads == []


@pytest.mark.parametrize("declared", ["utf-16", "utf-32", "shift_jis", "no-such-charset"])
def test_an_html_charset_the_bytes_contradict_is_detected_and_warned(tmp_path: Path, declared: str) -> None:
    """Latin-1 bytes under <meta charset="utf-16"> were stored as CJK mojibake, without a word."""
    from lectern.ingest.loaders import load

    page = f'<html><head><meta charset="{declared}"><title>Caf\xe9</title></head>'
    page += "<body><p>Le caf\xe9 cr\xe8me des loutres, servi \xe0 l'aube.</p></body></html>"
    data = page.encode("latin-1")
    path = tmp_path / "page.html"
    path.write_bytes(data + b" " * (-len(data) % 4))  # a whole number of UTF-16/32 code units
    doc = load(path)
    assert "Le café crème des loutres" in doc.units[0].text and doc.title == "Café"
    assert any(declared in w and "its bytes are not" in w for w in doc.warnings), doc.warnings


def test_an_html_charset_that_is_right_is_used_without_a_word(tmp_path: Path) -> None:
    from lectern.ingest.loaders import load

    path = tmp_path / "page.html"
    path.write_bytes('<meta charset="cp1251"><p>Выдры едят раков.</p>'.encode("cp1251"))
    doc = load(path)
    assert "Выдры едят раков" in doc.units[0].text and doc.warnings == ()


@pytest.mark.parametrize("page_text", ["Application for a fishing permit", ""])
def test_acroform_field_values_are_indexed(tmp_path: Path, page_text: str) -> None:
    """Field values were not indexed, and a form of fields only failed as 'scanned PDF?'."""
    from lectern.ingest.loaders import load
    from tests.hostile.corpus import form_pdf

    fields = {"applicant": "Ada Otterley", "river": "Brennock Canal", "species": "crayfish"}
    doc = load(form_pdf(tmp_path / "form.pdf", fields, page_text))
    text = "\n".join(u.text for u in doc.units)
    assert all(f"{name}: {value}" in text for name, value in fields.items()), text
    assert page_text in text


def test_a_fields_only_form_is_ingested_and_found(runner: CliRunner, tmp_path: Path) -> None:
    from tests.hostile.corpus import form_pdf

    folder = tmp_path / "forms"
    folder.mkdir()
    form_pdf(folder / "permit.pdf", {"applicant": "Ada Otterley", "species": "crayfish"})
    rc, report = ingest_json(runner, folder)
    assert rc == 0 and report["added"] == 1, report
    hits = json.loads(runner.invoke(app, ["search", "Otterley", "-c", "c", "--json"]).stdout)
    assert hits and "applicant: Ada Otterley" in hits[0]["text"]


def _long_text(path: Path, size: int, encoding: str = "utf-8") -> Path:
    line = "Les loutres du bassin mangent des écrevisses à l'aube . . . . . 12\n\n\nThe herons wait.\r\n"
    with path.open("w", encoding=encoding, newline="") as fh:
        for _ in range(size // len(line.encode(encoding))):
            fh.write(line)
    return path


def _streamed_peak(path: Path) -> int:
    import tracemalloc

    from lectern.ingest.loaders import stream_text

    tracemalloc.start()
    try:
        doc, units, warnings = stream_text(path)
        assert sum(1 for _ in units) > 4 and warnings == [] and doc.title.startswith("Les loutres")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_a_long_text_file_streams_in_flat_memory(tmp_path: Path, encoding: str) -> None:
    """A 300 MB text file peaked at 4.6 GB: it was read, decoded and cleaned whole. Streamed, what
    is held at once does not grow with the file."""
    small = _streamed_peak(_long_text(tmp_path / "small.txt", 4 << 20, encoding))
    large = _streamed_peak(_long_text(tmp_path / "large.txt", 16 << 20, encoding))
    assert large < 1.25 * small + (1 << 20) and large < 16 << 20, (small, large)


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "utf-16"])
def test_a_streamed_text_has_the_units_of_the_whole(
    tmp_path: Path, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same units, offsets and so chunk ids as read whole, blocks cut anywhere (here mid-line)."""
    from lectern.ingest import decode, loaders

    monkeypatch.setattr(decode, "STREAM_BLOCK", 4099)
    path = _long_text(tmp_path / "text.txt", 2 << 20, encoding)
    whole = loaders.load_text(path).units
    assert len(whole) >= 4 and list(loaders.stream_text(path)[1]) == list(whole)


def test_a_hard_link_to_a_stored_document_is_not_ingested_again(runner: CliRunner, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.txt").write_text("Otters eat crayfish at dawn.\n")
    os.link(first / "a.txt", second / "copy.txt")
    assert ingest_json(runner, first)[1]["added"] == 1
    rc, report = ingest_json(runner, second)
    assert rc == 0 and report["added"] == 0 and report["skipped"] == 1, report
    assert "a hard link), already in the collection" in report["files"][0]["reason"]
    assert ingest_json(runner, first)[1]["unchanged"] == 1  # the stored one itself is still itself
