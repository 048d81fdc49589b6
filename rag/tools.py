"""lectern's tools over one collection, as langchain-core tools with typed arguments, for an agent
(rag.agent) or any tool-calling model:

    book = SourceBook()
    tools = build_tools(ws, book)      # search, read, summarize, list_documents
    llm.bind_tools(tools)

Every chunk a tool shows the model is numbered once in the `SourceBook` ([n], the same number when
it comes back), so the agent's final answer cites chunks as the QA chain's does; a tool returns
(text for the model, the Contexts it showed) as content and artifact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.documents import Document
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from lectern.errors import InvalidInput
from lectern.rag.prompts import format_sources
from lectern.rag.types import Context

if TYPE_CHECKING:
    from lectern.rag.retrieval import Hit
    from lectern.rag.types import SummaryResult

MAX_K = 10
_PAGES = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class Library(Protocol):
    """What the tools use of a collection. rag.workspace.Workspace is one; it is named by its shape
    here, not imported, since the Workspace builds the tools (Workspace.agent)."""

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        sources: Sequence[str | Path] = (),
        page_min: int | None = None,
        page_max: int | None = None,
    ) -> list[Hit]: ...

    def scope_documents(self, *, source: str | Path | None = None) -> tuple[list[Document], str]: ...

    def summarize(
        self, *, source: str | Path | None = None, query: str | None = None, method: str = "auto"
    ) -> SummaryResult: ...

    def documents(self) -> Sequence[Any]: ...  # DocumentRow: source, title, pages, chunks


class SourceBook:
    """The chunks the tools have shown, numbered in order of first appearance (by chunk id)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Context] = {}

    def add(self, docs: list[Document]) -> list[Context]:
        """The documents as numbered Contexts; a chunk seen before keeps its number."""
        out = []
        for doc in docs:
            key = str(doc.metadata.get("chunk_id") or doc.page_content)
            if key not in self._by_id:
                self._by_id[key] = Context.from_document(len(self._by_id) + 1, doc)
            out.append(self._by_id[key])
        return out

    @property
    def contexts(self) -> list[Context]:
        return list(self._by_id.values())


class SearchArgs(BaseModel):
    query: str = Field(description="What to look for, in a few words.")
    k: int = Field(4, ge=1, le=MAX_K, description="How many passages to return.")
    source: str | None = Field(None, description="Only this document (a name from list_documents).")
    pages: str | None = Field(None, description="Only these pages: '3' or '2-5'.")


class ReadArgs(BaseModel):
    source: str = Field(description="A document name from list_documents.")
    page: int = Field(1, ge=1, description="The page to read (1 for documents without pages).")


class SummarizeArgs(BaseModel):
    source: str | None = Field(None, description="The document to summarize.")
    query: str | None = Field(None, description="Or: summarize the passages about this.")
    method: str = Field("auto", description="auto, stuff, refine or map_reduce.")


class NoArgs(BaseModel):
    pass


def page_range(pages: str | None) -> tuple[int | None, int | None]:
    """'3' -> (3, 3), '2-5' -> (2, 5), None -> (None, None); anything else is InvalidInput."""
    if pages is None or not str(pages).strip():
        return None, None
    match = _PAGES.match(str(pages))
    if not match:
        raise InvalidInput("pages", pages, "a page number or a range such as '2-5'")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if high < low:
        raise InvalidInput("pages", pages, "the range's end is before its start")
    return low, high


def build_tools(ws: Library, book: SourceBook) -> list[BaseTool]:
    """search, read, summarize and list_documents over `ws`'s collection, numbering into `book`."""

    def shown(docs: list[Document], empty: str) -> tuple[str, list[Context]]:
        contexts = book.add(docs)
        return (format_sources(contexts) if contexts else empty), contexts

    def search(
        query: str, k: int = 4, source: str | None = None, pages: str | None = None
    ) -> tuple[str, list[Context]]:
        low, high = page_range(pages)
        hits = ws.search(query, k=k, sources=[source] if source else (), page_min=low, page_max=high)
        return shown([h.to_document() for h in hits], "No passage matches.")

    def read(source: str, page: int = 1) -> tuple[str, list[Context]]:
        docs, _ = ws.scope_documents(source=source)
        on_page = [d for d in docs if (d.metadata.get("page") or 1) == page]
        if not on_page:
            last = max((d.metadata.get("page") or 1 for d in docs), default=0)
            return shown([], f"{source} has no page {page} (pages 1-{last}).")
        return shown(on_page, "")

    def summarize(
        source: str | None = None, query: str | None = None, method: str = "auto"
    ) -> tuple[str, list[Context]]:
        if (source is None) == (query is None):
            raise InvalidInput("summarize", {"source": source, "query": query}, "give a source or a query")
        result = ws.summarize(source=source, query=query, method=method)
        return result.summary, []  # a summary is the model's words, not a chunk to cite

    def list_documents() -> tuple[str, list[Context]]:
        rows = ws.documents()
        if not rows:
            return "The collection holds no documents.", []
        lines = [
            f"- {r.source}" + (f" ({r.title})" if r.title else "") + f": {r.pages} pages, {r.chunks} chunks"
            for r in rows
        ]
        return "\n".join(lines), []

    specs: list[tuple[Any, type[BaseModel], str]] = [
        (search, SearchArgs, "Search the documents; returns numbered passages [n] to cite."),
        (read, ReadArgs, "Read one page of a document; returns its numbered passages."),
        (summarize, SummarizeArgs, "Summarize a document, or the passages about a query."),
        (list_documents, NoArgs, "List the documents in the collection."),
    ]
    return [
        StructuredTool.from_function(
            func=func,
            name=func.__name__,
            description=description,
            args_schema=schema,
            response_format="content_and_artifact",
        )
        for func, schema, description in specs
    ]
