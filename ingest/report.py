"""What an ingest tells: its `Progress` as it goes (for progress bars), and its `IngestReport` at the
end, one `FileResult` per file (added, updated, unchanged, skipped or failed, with the reason)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lectern.errors import DocumentError


@dataclass
class FileResult:
    path: str
    status: str  # added | updated | unchanged | skipped | failed
    chunks: int = 0
    pages: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    ocr_pages: int = 0  # pages or images read by OCR (from the cache or recognised now)
    ocr_cached: int = 0
    ocr_seconds: float = 0.0


@dataclass
class IngestReport:
    collection: str
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # a progress callback raised Stopped: the files finished before it are kept

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def added(self) -> list[FileResult]:
        return self._with("added")

    @property
    def updated(self) -> list[FileResult]:
        return self._with("updated")

    @property
    def unchanged(self) -> list[FileResult]:
        return self._with("unchanged")

    @property
    def skipped(self) -> list[FileResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("added", "updated"))

    @property
    def pages(self) -> int:
        return sum(r.pages for r in self.results if r.status in ("added", "updated"))

    @property
    def ok(self) -> bool:
        return not self.failed

    def _ocr(self) -> tuple[int, int, float]:
        done = [r for r in self.results if r.status in ("added", "updated")]
        return (
            sum(r.ocr_pages for r in done),
            sum(r.ocr_cached for r in done),
            sum(r.ocr_seconds for r in done),
        )

    @property
    def ocr_pages_per_s(self) -> float | None:
        """Pages recognised per second of a parse worker's time (cache hits left out); None without any."""
        pages, cached, seconds = self._ocr()
        return (pages - cached) / seconds if pages > cached and seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        ocr_pages, ocr_cached, _ = self._ocr()
        rate = self.ocr_pages_per_s
        return {
            "collection": self.collection,
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "chunks": self.chunks,
            "pages": self.pages,
            "ocr_pages": ocr_pages,
            "ocr_cached": ocr_cached,
            "ocr_pages_per_s": round(rate, 3) if rate is not None else None,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
        }


@dataclass
class Progress:
    """Where an ingest stands, for progress bars."""

    files_total: int
    files_done: int = 0
    pages: int = 0  # pages done: of the file in hand, up to its last chunk embedded
    # pages to do: the PDFs' counted before they are parsed (ingest.pdf.page_count), the other files'
    # added as each is parsed (a PDF's count corrected then too)
    pages_total: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    current: str | None = None
    ocr_pages: int = 0  # pages read by OCR so far, told page by page as the parse workers finish them
    bytes_total: int = 0  # the size of the files to parse (known once they are hashed)
    bytes_done: int = 0  # of those, the files finished, and how far into a streamed text file

    @property
    def fraction(self) -> float:
        """How much of the work is done, 0 to 1: by bytes when sizes are known, else by files."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return self.files_done / self.files_total if self.files_total else 0.0


ProgressFn = Callable[[Progress], None]


def failure_reason(err: DocumentError) -> str:
    """How a failed file's reason reads in the report (every runner)."""
    return f"{err.reason}: {err.detail}"
