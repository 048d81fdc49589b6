"""PDFium against pypdf on the same PDFs: seconds, pages/s, characters, and word agreement per file.

    .venv/bin/python -m bench.pdf_parsers [--docs DIR ...]

Each file is read by both parsers in the same process, alternately (so load from other jobs hits
both alike); the text is cleaned as the loader cleans it. Word agreement is the share of words both
read in the same order (ingest.pdf.word_agreement), whitespace, case and line-end hyphenation aside.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.ingest_speed import R_MANUALS, corpus
from lectern.ingest import pdf
from lectern.ingest.decode import clean_text


def words_of(text: pdf.PdfText) -> list[list[str]]:
    return [
        pdf.comparable_words(clean_text(p, dehyphenate=True)) if isinstance(p, str) else []
        for p in text.pages
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, nargs="+", default=[R_MANUALS])
    args = parser.parse_args()
    files = corpus(args.docs)
    seconds = {name: 0.0 for name in pdf.PARSERS}
    chars = {name: 0 for name in pdf.PARSERS}
    pages = 0
    matched_total = words_total = 0.0
    print("| file | pages | pdfium s | pypdf s | chars pdfium / pypdf | word agreement |")
    print("|---|---|---|---|---|---|")
    for path in files:
        data = path.read_bytes()
        texts: dict[str, pdf.PdfText] = {}
        took: dict[str, float] = {}
        for name, read in pdf.PARSERS.items():
            t0 = time.perf_counter()
            texts[name] = read(path, data)
            took[name] = time.perf_counter() - t0
            seconds[name] += took[name]
        n = len(texts["pypdf"].pages)
        pages += n
        counts = {
            name: sum(len(clean_text(p, dehyphenate=True)) for p in t.pages if isinstance(p, str))
            for name, t in texts.items()
        }
        for name in chars:
            chars[name] += counts[name]
        a, b = words_of(texts["pdfium"]), words_of(texts["pypdf"])
        flat_a = [w for page in a for w in page]
        flat_b = [w for page in b for w in page]
        agreement = pdf.word_agreement(flat_a, flat_b)
        matched_total += agreement * (len(flat_a) + len(flat_b))
        words_total += len(flat_a) + len(flat_b)
        print(
            f"| {path.name} | {n} | {took['pdfium']:.2f} | {took['pypdf']:.2f} "
            f"| {counts['pdfium'] / max(1, counts['pypdf']):.3f} | {agreement:.4f} |",
            flush=True,
        )
    print(
        f"\n{len(files)} files, {pages} pages: pdfium {seconds['pdfium']:.2f} s "
        f"({pages / seconds['pdfium']:.0f} pages/s), pypdf {seconds['pypdf']:.2f} s "
        f"({pages / seconds['pypdf']:.0f} pages/s), {seconds['pypdf'] / seconds['pdfium']:.1f}x; "
        f"characters pdfium/pypdf {chars['pdfium'] / chars['pypdf']:.3f}; "
        f"word agreement {matched_total / words_total:.4f}"
    )


if __name__ == "__main__":
    main()
