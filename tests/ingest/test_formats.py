"""The documents people have: Word, PowerPoint, Excel and CSV, EPUB and images, each file written at test
time by the library people make them with. Each format's units, the location a citation names, and
every bad input: empty, corrupt, encrypted, a zip bomb, a huge image, too many rows."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from lectern.errors import CorruptDocument, DocumentError, EmptyDocument, EncryptedDocument, TooLarge
from lectern.ingest import archive, office
from lectern.ingest.document import OCR_HEADING, LoadedDocument, Unit
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.loaders import load
from lectern.ingest.pipeline import ingest
from lectern.ingest.settings import IngestSettings
from tests.fixtures.documents import (
    DEATHS,
    build_csv,
    build_deaths_xlsx,
    build_docx,
    build_epub,
    build_pptx,
    build_xlsx,
    make_bad_documents,
    make_documents,
    zip_bomb,
)


def unit_with(doc: LoadedDocument, words: str) -> Unit:
    found = [u for u in doc.units if words in u.text]
    assert found, (words, doc.units)
    return found[0]


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    folder = tmp_path_factory.mktemp("documents")
    return folder, make_documents(folder)


def test_each_format_names_where_its_facts_are(documents: tuple[Path, dict[str, tuple[str, str]]]) -> None:
    folder, facts = documents
    for name, (words, where) in facts.items():
        doc = load(folder / name)
        unit = unit_with(doc, words)
        assert unit.heading is not None and unit.heading.startswith(where), (name, unit)
        assert (doc.ocr_pages > 0) == (where == OCR_HEADING), name


def test_word_keeps_headings_tables_and_recorded_pages(tmp_path: Path) -> None:
    doc = load(build_docx(tmp_path / "orchard.docx"))
    assert doc.title == "Orchard handbook" and doc.format == "docx" and doc.pages == 2
    assert [(u.page, u.heading) for u in doc.units] == [
        (1, "Orchard handbook"),
        (1, "Orchard handbook > Pruning"),
        (2, "Orchard handbook > Harvest"),  # after the page break the author put in
    ]
    assert doc.units[2].text == (
        "Harvest\n| Variety | Picked in |\n|---|---|\n| Bramley | October |\n| Conference | September |"
    )


def test_a_word_file_without_page_breaks_has_no_pages(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Only one paragraph, on no recorded page.")
    document.save(str(tmp_path / "plain.docx"))
    doc = load(tmp_path / "plain.docx")
    assert [(u.page, u.heading, u.text) for u in doc.units] == [
        (None, None, "Only one paragraph, on no recorded page.")
    ]


def test_powerpoint_gives_a_unit_per_slide_with_its_notes(tmp_path: Path) -> None:
    doc = load(build_pptx(tmp_path / "ferry.pptx"))
    assert doc.title == "Quarterly ferry review" and doc.pages == 2
    assert [u.heading for u in doc.units] == ["slide 1: Ferry timetable", "slide 2: Passenger numbers"]
    assert doc.units[1].text == (
        "Passenger numbers\n\nNumbers rose in the summer months.\n\n"
        "Notes: The winter timetable adds a Sunday sailing at 9:40."
    )


def test_sheet_blocks_repeat_the_header_and_name_their_rows(tmp_path: Path) -> None:
    doc = load(build_xlsx(tmp_path / "stores.xlsx", rows=60))
    assert doc.pages == 2  # sheets
    assert doc.units[0] == Unit(
        "| Item | Value |\n|---|---|\n| Owner | Harbour trust |", heading="sheet Summary, rows 2-2"
    )
    stock = [u for u in doc.units if u.heading and u.heading.startswith("sheet Stock")]
    assert len(stock) >= 3
    spans = [tuple(map(int, re.findall(r"\d+", u.heading or ""))) for u in stock]
    assert spans[0][0] == 2 and spans[-1][1] == 62  # every row, once, in order
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans))
    for unit, (first, last) in zip(stock, spans, strict=True):
        lines = unit.text.split("\n")
        assert lines[:2] == ["| Part | Bin | Count |", "|---|---|---|"]  # each block stands alone
        assert len(lines) - 2 == last - first + 1
        assert len(unit.text) <= office.BLOCK_CHARS + 200
    assert "| brass hinge | B9 | 412 |" in stock[-1].text


def test_csv_sniffs_its_delimiter_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_bytes("produit;prix\ncrème brûlée;4,50\ncafé;2,10\n".encode("cp1252"))
    doc = load(path)
    assert doc.units == (
        Unit("| produit | prix |\n|---|---|\n| crème brûlée | 4,50 |\n| café | 2,10 |", heading="rows 2-3"),
    )
    assert load(build_csv(tmp_path / "rivers.csv")).units[0].heading == "rows 2-4"


def test_a_csv_in_utf16_without_a_bom_is_read_as_text_files_are(tmp_path: Path) -> None:
    """CSV files take their encoding from the rule text files are streamed by (decode.stream_encoding):
    UTF-16 without a byte-order mark is told by where its NULs fall, not read as UTF-8 with NULs."""
    path = tmp_path / "export.csv"
    path.write_bytes("river,length\nDanube,2850\nRhine,1230\n".encode("utf-16-le"))
    assert load(path).units == (
        Unit("| river | length |\n|---|---|\n| Danube | 2850 |\n| Rhine | 1230 |", heading="rows 2-3"),
    )


def test_a_header_only_csv_is_one_unit_and_a_blank_one_is_empty(tmp_path: Path) -> None:
    (tmp_path / "head.csv").write_text("a,b\n")
    assert load(tmp_path / "head.csv").units == (Unit("| a | b |\n|---|---|", heading="rows 1-1"),)
    (tmp_path / "blank.csv").write_text(",,\n\n,\n")
    with pytest.raises(EmptyDocument):
        load(tmp_path / "blank.csv")


def test_epub_chapters_in_reading_order(tmp_path: Path) -> None:
    doc = load(build_epub(tmp_path / "estuary.epub"))
    assert doc.title == "Tales of the estuary" and doc.pages == 2
    assert [u.heading for u in doc.units] == ["chapter 1: The mudflats", "chapter 2: The old mill"]
    assert doc.units[1].text == "The old mill\nThe miller kept his flour in oak barrels by the weir."


def test_a_drm_epub_is_refused_as_encrypted(tmp_path: Path) -> None:
    import zipfile

    path = build_epub(tmp_path / "drm.epub")
    with zipfile.ZipFile(path, "a") as book:
        book.writestr(
            "META-INF/encryption.xml", '<encryption><CipherReference URI="EPUB/chap_1.xhtml"/></encryption>'
        )
    with pytest.raises(EncryptedDocument, match="DRM"):
        load(path)


# --- bad input --------------------------------------------------------------------------------------


def test_every_bad_file_fails_alone_with_its_reason(tmp_path: Path) -> None:
    expected = make_bad_documents(tmp_path)
    for name, reason in expected.items():
        if reason == "ok":
            assert load(tmp_path / name).units, name
            continue
        with pytest.raises(DocumentError) as info:
            load(tmp_path / name)
        assert reason in info.value.detail, (name, info.value.detail)
        assert info.value.path == str(tmp_path / name)


def test_a_zip_bomb_is_refused_on_its_declared_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = zip_bomb(tmp_path / "bomb.docx", 8 << 20)
    with pytest.raises(TooLarge, match=r"unpacks 1,0\d\dx"):  # deflate packs zeros about 1000 to 1
        load(path)
    monkeypatch.setattr(archive, "MAX_RATIO", 10_000)
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 4 << 20)
    with pytest.raises(TooLarge, match=r"unpacks to 8 MiB \(at most 4 MiB\)"):
        load(path)


def test_a_spreadsheet_past_the_row_bound_is_refused_as_it_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(office, "MAX_ROWS", 100)
    path = build_xlsx(tmp_path / "big.xlsx", rows=150)
    with pytest.raises(TooLarge, match=r"more than 100 rows \(at sheet Stock\)"):
        load(path)
    assert load(build_xlsx(tmp_path / "fits.xlsx", rows=90)).units


def test_a_corrupt_member_is_the_files_error_not_a_traceback(tmp_path: Path) -> None:
    import zipfile

    source = build_docx(tmp_path / "good.docx")
    with zipfile.ZipFile(source) as good, zipfile.ZipFile(tmp_path / "broken.docx", "w") as broken:
        for info in good.infolist():
            data = good.read(info)
            broken.writestr(info, data[: len(data) // 2] if info.filename == "word/document.xml" else data)
    with pytest.raises(CorruptDocument, match="corrupt Word file"):
        load(tmp_path / "broken.docx")


def test_the_other_files_are_ingested_beside_the_bad_ones(tmp_path: Path) -> None:
    """Through a parse worker, as ingest runs: each bad file is reported failed with its reason."""
    expected = make_bad_documents(tmp_path / "docs")
    report = ingest(
        [tmp_path / "docs"],
        tmp_path / "col",
        FakeEmbedder(),
        IngestSettings(parse_workers=1, lock_timeout_s=2.0),
    )
    results = {Path(r.path).name: r for r in report.results}
    assert set(results) == set(expected)
    for name, reason in expected.items():
        r = results[name]
        if reason == "ok":
            assert r.status == "added" and r.chunks, (name, r.reason)
        else:
            assert r.status == "failed" and reason in (r.reason or ""), (name, r.reason)


# --- files as people and Office make them --------------------------------------------------------------

REALWORLD = Path(__file__).resolve().parents[1] / "fixtures" / "realworld"


def test_notes_above_a_sheet_s_table_are_a_unit_and_not_its_header(tmp_path: Path) -> None:
    doc = load(build_deaths_xlsx(tmp_path / "deaths.xlsx"))
    headings = [u.heading for u in doc.units]
    assert headings[0] == "sheet arts, rows 1-3"
    assert doc.units[0].text.startswith("Lots of people\nsimply cannot resist writing some notes")
    tables = [u for u in doc.units if u.text.startswith("|")]
    assert tables and all(
        u.text.startswith("| Name | Profession | Age | Date of birth | Date of death |") for u in tables
    )
    glenn = next(u for u in doc.units if "John Glenn" in u.text)
    assert glenn.heading is not None and glenn.heading.startswith("sheet other, rows ")
    assert "| John Glenn | astronaut | 95 | 1921-07-28 | 2016-12-08 |" in glenn.text


def test_a_sheet_that_records_its_extent_as_one_cell_is_read_whole(tmp_path: Path) -> None:
    path = build_deaths_xlsx(tmp_path / "deaths.xlsx", wrong_extent=True)
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    assert book.worksheets[0].calculate_dimension() == "A1:A1"  # the trap is set
    book.close()
    text = "\n".join(u.text for u in load(path).units)
    assert all(f"| {name} |" in text for people in DEATHS.values() for name, *_ in people)


def test_a_header_with_its_corner_left_blank_is_the_header(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in ([None, "Q1", "Q2"], ["North", 5, 6], ["South", 7, 8]):
        sheet.append(row)
    book.save(tmp_path / "quarters.xlsx")
    assert load(tmp_path / "quarters.xlsx").units == (
        Unit(
            "|  | Q1 | Q2 |\n|---|---|---|\n| North | 5 | 6 |\n| South | 7 | 8 |",
            heading="sheet Sheet, rows 2-3",
        ),
    )


def test_a_word_file_is_cited_at_the_page_each_passage_starts_on() -> None:
    """Saved by Word: it records where it broke the pages, some in the middle of a paragraph."""
    doc = load(REALWORLD / "par-rendered-page-breaks.docx")
    assert [(u.page, u.text) for u in doc.units] == [
        (1, "No page breaks\n\nPage break here>><<followed by more text."),
        (2, "Page break in>><<this hyperlink and another one here>><<with text following"),
        (4, "Two page>><<breaks>><<in one run."),
    ]
    assert doc.pages == 6


def test_a_powerpoint_file_s_tables_are_markdown_a_merged_cell_once() -> None:
    """Saved by PowerPoint for Mac: three slides of tables, one with merged cells."""
    doc = load(REALWORLD / "tbl-cell.pptx")
    assert [u.heading for u in doc.units] == ["slide 1", "slide 2", "slide 3"]
    assert "| unladen swallows | | | |" in doc.units[0].text
    assert doc.units[1].text.count("merged cell") == 2  # two tables, each with one merged cell
    assert doc.units[2].text == "| a | b | c |\n|---|---|---|\n| d | e | f |\n| g | h | i |"
