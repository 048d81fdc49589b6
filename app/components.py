"""Rendering pieces the pages share: error boxes, progress bars, the ingest report, citations."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from lectern.app.jobs import Job
from lectern.errors import LecternError
from lectern.ingest.report import IngestReport, Progress
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


def plural(n: int, word: str) -> str:
    """ "1 page", "2 pages"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def clock(seconds: float) -> str:
    """0:07, 12:45, 1:02:03."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def timing(job: Job, fraction: float) -> str:
    """· elapsed 0:42 · about 3:10 left (the time left once there is a rate to go by)."""
    left = job.remaining(fraction)
    return f" · elapsed {clock(job.elapsed)}" + (f" · about {clock(left)} left" if left is not None else "")


def ingest_status(job: Job) -> tuple[float, str]:
    """An ingest job's bar: the share done, and files, bytes, pages, chunks embedded of the estimate,
    the time taken and left, the file in hand."""
    p: Progress | None = job.progress
    if p is None:
        return 0.0, "Starting: loading the embedding model…" + timing(job, 0.0)
    fraction = p.fraction
    parts = [f"Files {p.files_done} of {p.files_total}"]
    if p.bytes_total:
        parts.append(f"{megabytes(p.bytes_done)} of {megabytes(p.bytes_total)}")
    parts.append(f"pages {p.pages} of {p.pages_total}" if p.pages_total else plural(p.pages, "page"))
    if p.chunks:
        estimate = round(p.chunks / fraction) if 0 < fraction < 1 and p.bytes_total else p.chunks
        parts.append(f"chunks embedded {p.chunks_embedded} of about {max(estimate, p.chunks)}")
    if p.ocr_pages:
        parts.append(f"OCR {plural(p.ocr_pages, 'page')}")
    if p.current and p.files_done < p.files_total:
        parts.append(file_name(p.current))
    return fraction, " · ".join(parts) + timing(job, fraction)


def summary_status(job: Job) -> tuple[float, str]:
    """A summary job's bar: model calls done of the total (known before the first call)."""
    if not isinstance(job.progress, tuple):
        return 0.0, "Preparing the passages (and loading the models)…" + timing(job, 0.0)
    done, total = job.progress
    fraction = done / max(total, 1)
    return fraction, f"Summarizing: {done} of {plural(total, 'model call')} done" + timing(job, fraction)


def job_bar(job: Job, status: Callable[[Job], tuple[float, str]]) -> None:
    """A running job's bar and its Stop button (a stop takes effect at the job's next step)."""
    fraction, text = status(job)
    if job.stopping:
        text = "Stopping after the current step… · " + text
    bar, stop = st.columns([6, 1], vertical_alignment="bottom")
    bar.progress(min(1.0, fraction), text=text)
    if stop.button("Stop", key=f"stop-{job.id}", disabled=job.stopping):
        job.stop()


def follow(job: Job, status: Callable[[Job], tuple[float, str]]) -> None:
    """Show a running job's bar, redrawn every second (a fragment: the rest of the page stays as it
    is); when the job ends, the whole page runs again to show its result."""

    @st.fragment(run_every=1.0)
    def live() -> None:
        if not job.running:
            st.rerun()
        job_bar(job, status)

    live()


def ingest_report(report: IngestReport) -> None:
    """Counts per outcome, a table of every file, and each failure with its reason as an error."""
    s = report.summary()
    cols = st.columns(5)
    for col, key in zip(cols, ("added", "updated", "unchanged", "skipped", "failed"), strict=True):
        col.metric(key.capitalize(), s[key])
    if report.stopped:
        st.warning("Stopped: the files finished before the stop are kept; ingest again to add the rest.")
    st.caption(f"{plural(s['pages'], 'page')}, {plural(s['chunks'], 'chunk')} in {s['seconds']:.1f} s")
    if s["ocr_pages"]:
        speed = f", {s['ocr_pages_per_s']:.2f} pages/s a worker" if s["ocr_pages_per_s"] else ""
        st.caption(f"OCR: {plural(s['ocr_pages'], 'page')} ({s['ocr_cached']} from the cache{speed})")
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


def citations(cites: Sequence[Citation], contexts: Sequence[Context] = (), asked: bool = True) -> None:
    """One expander per numbered citation: the passage, with the sentences that hold the answer
    highlighted, its file and (for PDFs) the page to open. `asked`: False when the model was not
    asked (the evidence gate declined), so the passages are not called what it was given."""
    if not cites:
        if contexts:
            passages_given(contexts, asked)
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


def passages_given(contexts: Sequence[Context], asked: bool = True) -> None:
    """When the model cited nothing, the passages it was given (or, not asked, the passages found),
    so the answer can still be checked."""
    if asked:
        st.caption("The answer cites no source; these are the passages the model was given:")
    else:
        st.caption("The model was not asked; these are the passages the search found:")
    for c in contexts:
        place = location(c.page, c.heading)
        where = f", {place}" if place else ""
        with st.expander(f"Passage {c.number}: {file_name(c.source)}{where}"):
            st.markdown(plain(c.text))
            st.caption(f"`{c.source}`")
