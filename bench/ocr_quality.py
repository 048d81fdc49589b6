"""OCR against PDFium's text layer on the R manuals: character error rate at 150, 200 (lectern's
default) and 300 dpi, CPU seconds a page and pages/s, for each OCR engine (ingest.ocr_engine).

    nice -n 15 .venv/bin/python -m bench.ocr_quality [--pages 6] [--dpi 150 200 300]
        [--engines tesseract rapidocr] [--workers 2] [--threads N]

Pages are taken evenly across the manuals (r-doc-pdf), skipping nearly empty ones. Each page is rendered
in grey at each resolution by PDFium and wrapped as an image-only PDF (JPEG at quality 95, as a good
scanner writes), then loaded by lectern as any scanned PDF is (ingest.loaders.load_pdf, `ingest.ocr =
auto`, rendered back at that resolution, no OCR cache). The reference is the loader's text of the
original page (the text layer, cleaned the same way). The character error rate is the edit distance
over the reference's length, whitespace runs counted as one space. The pages of one engine and
resolution are read by --workers processes at once, as ingest's parse workers read them (each with
--threads ONNX Runtime threads for RapidOCR; Tesseract's library is single-threaded): pages/s is pages
over the wall time of that batch, and the CPU seconds a page (rendering and recognising) are the
figure that does not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import cast

from bench.ingest_speed import R_MANUALS, corpus, machine
from lectern.ingest.document import LoadOptions, OcrEngineName
from lectern.ingest.loaders import load_pdf

MIN_CHARS = 400  # a page with less text than this is left out (title pages, blank versos)
_SPACES = re.compile(r"\s+")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), bit-parallel (Myers, Hyyrö): a page of
    3,000 characters against another in milliseconds."""
    if not a:
        return len(b)
    m = len(a)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    peq: dict[str, int] = {}
    for i, ch in enumerate(a):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    pv, mv, score = mask, 0, m
    for ch in b:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return score


def normalised(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalised(reference), normalised(hypothesis)
    return levenshtein(ref, hyp) / max(len(ref), 1)


def pick_pages(files: list[Path], n: int) -> list[tuple[Path, int, str]]:
    """n pages with text, evenly across the files' pages: (file, page number, the loader's text)."""
    from lectern.ingest.loaders import load_pdf

    pages: list[tuple[Path, int, str]] = []
    for path in files:
        doc = load_pdf(path, LoadOptions(ocr="off"))
        pages += [(path, u.page or 0, u.text) for u in doc.units if len(u.text) >= MIN_CHARS]
    step = max(len(pages) // max(n, 1), 1)
    return pages[step // 2 :: step][:n]


def scanned(path: Path, number: int, dpi: int) -> bytes:
    """The page rendered in grey at dpi, as an image-only PDF of the same page size."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(path))
    try:
        image = doc[number - 1].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        doc.close()
    out = io.BytesIO()
    image.save(out, "PDF", resolution=float(dpi), quality=95)
    return out.getvalue()


def read(job: tuple[Path, LoadOptions]) -> tuple[str, float]:
    """One scanned page loaded as lectern loads a scan: its text and the CPU seconds it cost."""
    image_pdf, options = job
    cpu_started = time.process_time()
    doc = load_pdf(image_pdf, options)
    assert doc.ocr_pages == 1, f"{image_pdf} was not read by OCR"
    return "\n".join(u.text for u in doc.units), time.process_time() - cpu_started


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, nargs="+", default=[R_MANUALS])
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--dpi", type=int, nargs="+", default=[150, 200, 300])
    parser.add_argument("--engines", nargs="+", default=["tesseract"], choices=["tesseract", "rapidocr"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/lectern-ocr-bench"))
    args = parser.parse_args()
    files = [p for p in corpus(args.docs) if p.suffix.lower() == ".pdf"]
    pages = pick_pages(files, args.pages)
    args.scratch.mkdir(parents=True, exist_ok=True)
    print(machine(), f"load average {os.getloadavg()[0]:.2f}")
    print("| engine | dpi | file | page | chars | CER | CPU seconds |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[tuple[str, int], tuple[int, int, float, float, int]] = {}  # edits, chars, wall, CPU, pages
    with ProcessPoolExecutor(args.workers) as pool:
        for engine in args.engines:
            for dpi in args.dpi:
                jobs = []
                for path, number, _ in pages:
                    image_pdf = args.scratch / f"{path.stem}-p{number}-{dpi}.pdf"
                    image_pdf.write_bytes(scanned(path, number, dpi))
                    engine_name = cast(OcrEngineName, engine)
                    options = LoadOptions("auto", dpi, None, args.threads, engine_name)  # no OCR cache
                    jobs.append((image_pdf, options))
                list(pool.map(read, jobs[: args.workers]))  # each worker builds its engine (once a process)
                started = time.perf_counter()
                results = list(pool.map(read, jobs))
                wall = time.perf_counter() - started
                edits = chars = 0
                cpu = 0.0
                for (path, number, reference), (text, page_cpu) in zip(pages, results, strict=True):
                    ref = normalised(reference)
                    page_edits = levenshtein(ref, normalised(text))
                    edits, chars, cpu = edits + page_edits, chars + len(ref), cpu + page_cpu
                    print(
                        f"| {engine} | {dpi} | {path.name} | {number} | {len(ref)} "
                        f"| {page_edits / max(len(ref), 1):.2%} | {page_cpu:.2f} |",
                        flush=True,
                    )
                totals[engine, dpi] = (edits, chars, wall, cpu, len(pages))
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.workers} worker(s)")
    print("| engine | dpi | pages | CER (all characters) | CPU seconds a page | pages/s |")
    print("|---|---|---|---|---|---|")
    for (engine, dpi), (edits, chars, wall, cpu, n) in totals.items():
        print(f"| {engine} | {dpi} | {n} | {edits / max(chars, 1):.2%} | {cpu / n:.2f} | {n / wall:.2f} |")


if __name__ == "__main__":
    main()
