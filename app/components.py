"""Rendering pieces the pages share: error boxes, progress bars, the ingest report, citations."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from lectern.errors import LecternError
from lectern.ingest.pipeline import IngestReport, Progress
from lectern.rag.types import Citation, Context, location

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#+\-.!|~$])")


def plain(text: str) -> str:
    """Document text shown as written: "2. Building" is a heading in a PDF, not a Markdown list."""
    return _MARKDOWN.sub(r"\\\1", text)


class Outcome:
    """Whether the guarded block failed (st.error already shown)."""

    failed = False


@contextmanager
def shown_errors() -> Iterator[Outcome]:
    """Turn lectern's errors into one st.error sentence; the app keeps running."""
    outcome = Outcome()
    try:
        yield outcome
    except LecternError as err:
        outcome.failed = True
        st.error(str(err), icon=":material/error:")
    except ValidationError as err:
        outcome.failed = True
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        st.error(f"invalid setting {where}: {first['msg']}", icon=":material/error:")
    except OSError as err:
        outcome.failed = True
        st.error(
            f"{getattr(err, 'filename', None) or 'file system'}: {err.strerror or err}",
            icon=":material/error:",
        )


def file_name(source: str) -> str:
    return Path(source).name or source


def ingest_progress() -> Callable[[Progress], None]:
    """A live progress bar (files) with pages and chunks counted under it."""
    bar = st.progress(0.0, text="Looking for files…")

    def update(p: Progress) -> None:
        total = max(p.files_total, 1)
        embedding = p.chunks_embedded / p.chunks if p.chunks else 0.0
        done = min(1.0, (p.files_done + (0 if p.files_done >= total else embedding * 0.99)) / total)
        current = f" · {file_name(p.current)}" if p.current and p.files_done < p.files_total else ""
        ocr = f" · OCR {p.ocr_pages} pages" if p.ocr_pages else ""
        bar.progress(
            done,
            text=f"Files {p.files_done}/{p.files_total} · pages {p.pages} · chunks {p.chunks} "
            f"(embedded {p.chunks_embedded}){ocr}{current}",
        )

    return update


def summary_progress() -> Callable[[int, int], None]:
    bar = st.progress(0.0, text="Summarizing…")

    def update(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Summarizing: step {done} of {total}")

    return update


def ingest_report(report: IngestReport) -> None:
    """Counts per outcome, a table of every file, and each failure with its reason as an error."""
    s = report.summary()
    cols = st.columns(5)
    for col, key in zip(cols, ("added", "updated", "unchanged", "skipped", "failed"), strict=True):
        col.metric(key.capitalize(), s[key])
    st.caption(f"{s['pages']} pages, {s['chunks']} chunks in {s['seconds']:.1f} s")
    if s["ocr_pages"]:
        speed = f", {s['ocr_pages_per_s']:.2f} pages/s a worker" if s["ocr_pages_per_s"] else ""
        st.caption(f"OCR: {s['ocr_pages']} pages ({s['ocr_cached']} from the cache{speed})")
    rows = [
        {
            "file": file_name(r.path),
            "status": r.status,
            "pages": r.pages,
            "OCR pages": r.ocr_pages,
            "chunks": r.chunks,
            "reason": r.reason or "; ".join(r.warnings),
        }
        for r in report.results
    ]
    if rows:
        st.dataframe(rows, hide_index=True)
    for r in report.failed:
        st.error(f"{file_name(r.path)} failed: {r.reason}", icon=":material/error:")


def highlighted(text: str, sentences: Sequence[str]) -> str:
    """The passage as Markdown, with the sentences that support the answer on a coloured background."""
    spans = sorted(
        (start, start + len(sentence))
        for sentence in sentences
        if sentence and (start := text.find(sentence)) >= 0
    )
    out, at = [], 0
    for start, end in spans:
        if start < at:
            continue
        out.append(plain(text[at:start]))
        out.append(":orange-background[" + plain(text[start:end]).replace("]", "\\]") + "]")
        at = end
    out.append(plain(text[at:]))
    return "".join(out)


OCR_NOTE = "read by OCR from an image: the text may hold recognition errors"


def citation_title(c: Citation) -> str:
    where = f", {c.location}" if c.location else ""
    return f"[{c.number}] {file_name(c.source)}{where}"


def citations(cites: Sequence[Citation], contexts: Sequence[Context] = ()) -> None:
    """One expander per numbered citation: the passage, with the sentences that hold the answer
    highlighted, its file and (for PDFs) the page to open."""
    if not cites:
        if contexts:
            passages_given(contexts)
        return
    passages = {c.chunk_id: c.text for c in contexts}
    st.caption("Sources")
    for c in cites:
        with st.expander(citation_title(c)):
            st.markdown(highlighted(passages.get(c.chunk_id, c.quote), c.highlights))
            where = f"`{c.source}`"
            if c.location:
                open_at = (
                    " (open the PDF at this page)"
                    if c.page is not None and c.source.lower().endswith(".pdf")
                    else ""
                )
                where += f" — {c.location}{open_at}"
            if c.ocr:
                where += f" — {OCR_NOTE}"
            st.caption(where)


def passages_given(contexts: Sequence[Context]) -> None:
    """When the model cited nothing, the passages it was given, so the answer can still be checked."""
    st.caption("The answer cites no source; these are the passages the model was given:")
    for c in contexts:
        place = location(c.page, c.heading)
        where = f", {place}" if place else ""
        with st.expander(f"Passage {c.number}: {file_name(c.source)}{where}"):
            st.markdown(plain(c.text))
            st.caption(f"`{c.source}`")
