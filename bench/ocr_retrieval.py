"""Retrieval on an OCRed copy of R-manual pages against the same pages with their text layer.

    nice -n 15 HF_HUB_OFFLINE=1 .venv/bin/python -m bench.ocr_retrieval [--dpi 150] [--engine tesseract]
        [--neighbours 1] [--mode hybrid]

The questions (bench/data/ocr_questions.jsonl, written for this bench: each names its manual, its page
and a phrase of the page that answers it) are about 12 pages of the R manuals (r-doc-pdf); the pages
beside each (--neighbours on either side, the same chapter's neighbours: hard distractors) are
ingested with them. Each page is one document, two ways: the page cut out of the manual with its text
layer (`ingest.ocr = off`), and the page rendered in grey at --dpi and wrapped as an image-only PDF
(JPEG, quality 95, as bench/ocr_quality.py makes it), read by OCR. Each copy goes into a collection of
its own (the accurate profile), and the questions are asked of each: article_hit@k is whether the
question's page is among the top k documents, answer_hit@k whether the answer's phrase is in the top k
chunks' text (the metrics of `lectern eval retrieval`). Issue 28's target: the OCRed copy's
article_hit within 0.05 of the text layer's.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import cast

from bench.ingest_speed import R_MANUALS
from bench.ocr_quality import scanned
from lectern.ingest.document import OcrEngineName
from lectern.rag.evaluate import QAItem, RankedChunk, eval_searcher, retrieval_metrics
from lectern.rag.settings import load_settings

QUESTIONS = Path(__file__).resolve().parent / "data" / "ocr_questions.jsonl"


def text_copy(path: Path, number: int) -> bytes:
    """The page cut out of the manual, its text layer kept."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.add_page(PdfReader(path).pages[number - 1])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pages_wanted(questions: list[dict[str, object]], neighbours: int) -> list[tuple[str, int]]:
    """Each question's page and its neighbours, within the manual."""
    from pypdf import PdfReader

    sizes: dict[str, int] = {}
    wanted: set[tuple[str, int]] = set()
    for q in questions:
        manual, page = str(q["manual"]), cast(int, q["page"])
        if manual not in sizes:
            sizes[manual] = len(PdfReader(R_MANUALS / f"{manual}.pdf").pages)
        wanted |= {
            (manual, p) for p in range(page - neighbours, page + neighbours + 1) if 1 <= p <= sizes[manual]
        }
    return sorted(wanted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--engine", default="tesseract", choices=["tesseract", "rapidocr"])
    parser.add_argument("--neighbours", type=int, default=1)
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "bm25"])
    args = parser.parse_args()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    pages = pages_wanted(questions, args.neighbours)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lectern-ocr-retrieval-") as tmp:
        for copy in ("text layer", "OCR"):
            folder = Path(tmp) / copy.replace(" ", "-")
            folder.mkdir()
            for manual, number in pages:
                source = R_MANUALS / f"{manual}.pdf"
                data = (
                    text_copy(source, number) if copy == "text layer" else scanned(source, number, args.dpi)
                )
                (folder / f"{manual}-p{number}.pdf").write_bytes(data)
            items = [
                QAItem(q["question"], folder / f"{q['manual']}-p{q['page']}.pdf", q["manual"], q["answers"])
                for q in questions
            ]
            settings = load_settings(data_dir=Path(tmp) / "data")
            settings.ingest.embed.profile = "accurate"
            settings.ingest.ocr = "off" if copy == "text layer" else "auto"
            settings.ingest.ocr_engine = cast(OcrEngineName, args.engine)
            settings.ingest.ocr_dpi = args.dpi
            started = time.perf_counter()
            with eval_searcher(sorted(folder.iterdir()), settings, Path(tmp)) as searcher:
                print(
                    f"{copy}: {len(pages)} pages ingested in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )

                def run(question: str, n: int) -> list[RankedChunk]:
                    hits = searcher.search(question, k=n, mode=args.mode)
                    return [RankedChunk(h.chunk.source, h.chunk.text) for h in hits]

                rows[copy] = retrieval_metrics(items, run)
    names = [k for k in rows["text layer"] if k != "mean_query_ms"]
    print(
        f"\n{len(questions)} questions on {len(pages)} pages; OCR by {args.engine} at {args.dpi} dpi; {args.mode}\n"
    )
    print("| copy | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for copy, m in rows.items():
        print(f"| {copy} | " + " | ".join(f"{m[k]:.3f}" for k in names) + " |")
    diff = {k: rows["OCR"][k] - rows["text layer"][k] for k in names}
    print("| OCR - text layer | " + " | ".join(f"{diff[k]:+.3f}" for k in names) + " |")


if __name__ == "__main__":
    main()
