"""The Python API: one object per collection that ingests, searches, answers, chats and summarizes.

    ws = lectern.Workspace(collection="docs")
    ws.ingest(["./my-docs"])
    ws.ask("Who designed the tower?")
    ws.summarize(source="./my-docs/report.pdf", method="map_reduce")

Heavy objects (the embedder, the LLM) are built on first use and kept in rag.model_cache.MODELS,
shared by every Workspace of the process, keyed by what was loaded (not by the whole settings).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lectern.errors import (
    CollectionNotFound,
    DocumentError,
    DocumentNotFound,
    InvalidInput,
    InvalidName,
)
from lectern.ingest.collection import embed_settings_for, open_collection
from lectern.ingest.embed_base import Embedder
from lectern.ingest.pipeline import delete, ingest
from lectern.ingest.report import IngestReport, ProgressFn
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.sources import source_key
from lectern.ingest.store_backends import open_backend, parse_location
from lectern.ingest.stores import Backend, DocumentRow, Store, Target
from lectern.rag.limits import check_question
from lectern.rag.settings import Settings, load_settings

if TYPE_CHECKING:  # langchain-core and the search stack load when a method needs them, not for `lectern list`
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel

    from lectern.ingest.migrate import MigrateReport
    from lectern.rag.agent import Agent
    from lectern.rag.chat import ChatSession
    from lectern.rag.evidence import Calibration
    from lectern.rag.qa import QAChain, QAOptions
    from lectern.rag.retrieval import Filters, Hit, LecternRetriever, Searcher
    from lectern.rag.types import Answer, SummaryResult

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: str) -> str:
    """Collection names become folder names: nothing that could escape the collections folder."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(f"invalid collection name {name!r}: use letters, digits, '_', '-' and '.' (max 64)")
    return name


def shared_embedder(embed: EmbedSettings, models_dir: Path) -> Embedder:
    """The process's embedder for these settings (rag.model_cache.MODELS)."""
    from lectern.rag.model_cache import MODELS

    return MODELS.embedder(embed, models_dir)


def shared_llm(settings: Settings) -> BaseChatModel:
    """The process's chat model for these settings, with their generation parameters (MODELS)."""
    from lectern.rag.model_cache import MODELS

    return MODELS.llm(settings.llm, settings.models_dir)


def shared_reranker(path: str) -> Any:
    """The process's cross-encoder in this folder (MODELS)."""
    from lectern.rag.model_cache import MODELS

    return MODELS.reranker(path)


def structured_llm(llm: BaseChatModel, schema_file: Path | None) -> BaseChatModel:
    """The model for structured answers: on the backends that run a model here, a copy whose replies
    are decoded under the JSON schema of `schema_file` (answer.json_schema) or, by default, of
    rag.qa.StructuredAnswer; the answer and its citations still come from the chain. Other models
    are only asked for JSON (the prompt), as before."""
    from lectern.rag.llm import TemplatedChatModel
    from lectern.rag.llm.structured import load_schema

    loaded = None if schema_file is None else load_schema(schema_file, "answer.json_schema")
    schema = answer_schema(loaded, "answer.json_schema", str(schema_file))
    if not isinstance(llm, TemplatedChatModel):
        return llm
    return llm.model_copy(update={"response_schema": schema})


def answer_schema(schema: dict[str, Any] | None, field: str, where: str) -> dict[str, Any]:
    """The schema a structured answer is decoded under: rag.qa.StructuredAnswer's when none is given,
    else `schema`, which needs a required string property "answer" (what the chain cites);
    InvalidInput naming `field` and `where` (the file, the request's field) otherwise."""
    from lectern.rag.qa import StructuredAnswer

    if schema is None:
        return StructuredAnswer.model_json_schema()
    answer = (schema.get("properties") or {}).get("answer") or {}
    if answer.get("type") != "string" or "answer" not in schema.get("required", []):
        raise InvalidInput(field, where, 'needs a required string property "answer" (what the chain cites)')
    return schema


def qa_options(settings: Settings, profile: str | None = None) -> QAOptions:
    """The QA chain's options from the settings, for a collection built with embedding `profile`
    (its manifest's): the one place they are read, whoever builds the chain (chain_from_settings,
    the agent). The gate's calibration and the selection's cosine weight hold for the profile they
    were fitted with (fitted_embedder): other embedders choose by words."""
    from lectern.rag.qa import QAOptions

    answer, fitted = settings.answer, fitted_embedder(profile)
    return QAOptions(
        k=settings.retrieval.k,
        variant=answer.prompt,
        max_new_tokens=settings.llm.max_new_tokens,
        min_score=settings.retrieval.min_score,
        structured=answer.structured or answer.json_schema is not None,
        context=answer.context,
        sentences=answer.sentences,
        neighbours=answer.neighbours,
        order=answer.order,
        evidence=answer.evidence,
        calibration=evidence_calibration(settings, profile),
        meaning=answer.meaning if fitted else 0.0,
        by_meaning=answer.by_meaning if fitted else 0,
        verify=answer.verify,
        together=answer.together,
        subject=answer.subject,
        facts=answer.facts,
    )


def build_retriever(settings: Settings, searcher: Searcher, **options: Any) -> LecternRetriever:
    """The retriever over `searcher` as the retrieval settings configure it (options override:
    k, mode, filters...)."""
    from lectern.rag.retrieval import LecternRetriever

    r = settings.retrieval
    defaults: dict[str, Any] = {
        "k": r.k,
        "mode": r.mode,
        "mmr": r.mmr,
        "reranker": shared_reranker(r.reranker) if r.reranker else None,
        "rerank_candidates": r.rerank_candidates,
    }
    return LecternRetriever(searcher=searcher, **{**defaults, **options})


def chain_from_settings(
    settings: Settings,
    searcher: Searcher,
    *,
    llm: BaseChatModel | None = None,
    mode: str | None = None,
    filters: Filters | None = None,
    **changes: Any,
) -> QAChain:
    """The QA chain over `searcher`'s collection as the settings configure it: Workspace.qa_chain,
    the server's RAG models and the answer eval all build theirs here. `changes` replace QAOptions
    fields (`k` is the retriever's too); `mode` and `filters` are the retriever's. A structured
    answer's model decodes under answer.json_schema's schema; `llm` replaces the settings' model and
    is used as given (the server's queued model carries a request's schema itself)."""
    from lectern.rag.qa import Corpus, QAChain

    options = dataclasses.replace(qa_options(settings, searcher.collection.manifest.profile), **changes)
    retrieval: dict[str, Any] = {"k": changes["k"]} if changes.get("k") is not None else {}
    if mode is not None:
        retrieval["mode"] = mode
    if filters is not None:
        retrieval["filters"] = filters
    model = llm
    if model is None:
        model = shared_llm(settings)
        if options.structured:
            model = structured_llm(model, settings.answer.json_schema)
    return QAChain(model, build_retriever(settings, searcher, **retrieval), options, Corpus.of(searcher))


def fitted_embedder(profile: str | None) -> bool:
    """Whether a collection built with embedding `profile` scores cosines on the scale lectern's
    fits were made on (MiniLM, the accurate profile): the meaning gate and selection's weight."""
    return profile == "accurate"


def evidence_calibration(settings: Settings, profile: str | None) -> Calibration:
    """The abstention model for a collection built with embedding `profile` (its manifest's) and
    answer.gate: rag.evidence.MEANING and WORDS were fitted with MiniLM's cosine scores (the accurate
    profile); other embedders score on another scale, so only the question-word coverage is used
    with them, as with gate = "coverage". answer.evidence_threshold replaces the fitted threshold."""
    from lectern.rag.evidence import COVERAGE_ONLY, MEANING, WORDS

    model = COVERAGE_ONLY
    if fitted_embedder(profile):
        model = {"meaning": MEANING, "words": WORDS, "coverage": COVERAGE_ONLY}[settings.answer.gate]
    threshold = settings.answer.evidence_threshold
    return model if threshold is None else dataclasses.replace(model, threshold=threshold)


def migrate_collection(source: str, destination: str, settings: Settings) -> MigrateReport:
    """Copy the collection at location `source` (`faiss:NAME`, `milvus:URI/NAME`: ingest.store_backends.
    parse_location) to `destination`, named as the source when the location names none: chunks and
    vectors as stored (ingest.migrate). A location without a name, or a collection that is not
    there, is a clear error before anything is copied."""
    from lectern.ingest.migrate import migrate

    src_backend, src_name = parse_location(source, settings.store, settings.data_dir)
    dst_backend, dst_name = parse_location(destination, settings.store, settings.data_dir)
    if src_name is None:
        raise InvalidInput("--from", source, "name the collection: faiss:NAME or milvus:URI/NAME")
    src = Target(src_backend, check_name(src_name))
    if not src.exists():
        raise CollectionNotFound(src_name, src_backend.names())
    dst = Target(dst_backend, check_name(dst_name or src_name))
    return migrate(src, dst, settings.ingest.lock_timeout_s)


class Workspace:
    """lectern's Python API over one collection. Settings come from the usual sources plus kwargs."""

    def __init__(
        self, collection: str | None = None, settings: Settings | None = None, **overrides: Any
    ) -> None:
        self.settings = settings or load_settings(**overrides)
        self.name = check_name(collection or self.settings.collection)
        self._collection: Store | None = None
        self._backend: Backend | None = None

    # -- collections ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The collection's folder (the faiss backend's; see `target` for any backend)."""
        return self.settings.collections_dir / self.name

    @property
    def backend(self) -> Backend:
        """Where the collections live (store.backend: ingest.store_backends.BACKENDS)."""
        if self._backend is None:
            self._backend = open_backend(self.settings.store, self.settings.data_dir)
        return self._backend

    @property
    def target(self) -> Target:
        return Target(self.backend, self.name)

    @property
    def exists(self) -> bool:
        return self.backend.exists(self.name)

    def collections(self) -> list[str]:
        return self.backend.names()

    def collection(self) -> Store:
        """The collection, opened; CollectionNotFound (naming the collections there are) unless it
        exists. The CLI and the server call it before a model loads: a mistyped name costs none."""
        if not self.exists:
            raise CollectionNotFound(self.name, self.collections())
        if self._collection is None:
            self._collection = self.backend.open(self.name)
        return self._collection

    def embed_settings(self) -> EmbedSettings:
        """The collection's own embedder (ingest.collection.embed_settings_for holds the rule)."""
        return embed_settings_for(self.target, self.settings.ingest.embed)

    @property
    def embedder(self) -> Embedder:
        return shared_embedder(self.embed_settings(), self.settings.models_dir)

    def drop(self) -> None:
        """Delete the whole collection."""
        self.close()
        self.backend.drop(self.name)

    def close(self) -> None:
        if self._collection is not None:
            self._collection.close()
            self._collection = None

    # -- ingestion -----------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> IngestReport:
        """Ingest files and folders. `include` globs replace ingest.include for this ingest, and
        `exclude` globs are passed over besides ingest.exclude (`lectern ingest --include/--exclude`)."""
        embedder = self.embedder
        ingest_settings = self.settings.ingest
        ocr_cache = ingest_settings.ocr_cache or str(self.settings.cache_dir / "ocr")
        config = ingest_settings.model_copy(
            update={
                "embed": self.embed_settings(),
                "ocr_cache": ocr_cache,
                "include": list(include) or ingest_settings.include,
                "exclude": [*ingest_settings.exclude, *exclude],
            }
        )
        if not self.exists:
            open_collection(self.target, embedder, config).close()
        return ingest([Path(p) for p in paths], self.target, embedder, config, progress, force)

    def ensure_ingested(self, source: str | Path) -> str:
        """The collection's key for the document at `source`, ingested first when the collection
        does not hold it yet (or does not exist yet): `lectern summarize FILE` takes any file.
        DocumentError with the reason when it cannot be ingested."""
        key = self._source(source)
        if self.exists and key in self.collection().content_hashes():
            return key
        report = self.ingest([source])
        if not report.ok:
            raise DocumentError(str(source), report.failed[0].reason or "could not be ingested")
        return key

    def delete(self, sources: Sequence[str | Path]) -> dict[str, int]:
        """Remove documents: chunks removed per source as given, -1 for one the collection does not
        hold; CollectionNotFound when there is no such collection."""
        self.collection()
        return delete(self.target, [str(s) for s in sources], self.settings.ingest.lock_timeout_s)

    def documents(self) -> list[DocumentRow]:
        return self.collection().documents() if self.exists else []

    # -- retrieval -----------------------------------------------------------------------------
    def searcher(self) -> Searcher:
        from lectern.rag.retrieval import Searcher

        return Searcher(self.collection(), self.embedder, self.settings.retrieval)

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: str | None = None,
        sources: Sequence[str | Path] = (),
        page_min: int | None = None,
        page_max: int | None = None,
        mmr: bool | None = None,
    ) -> list[Hit]:
        from lectern.rag.retrieval import Filters

        filters = Filters(tuple(self.known_source(s) for s in sources), page_min, page_max)
        return self.searcher().search(query, k=k, mode=mode, filters=filters, mmr=mmr)

    def retriever(self, searcher: Searcher | None = None, **options: Any) -> LecternRetriever:
        return build_retriever(self.settings, searcher or self.searcher(), **options)

    def known_source(self, source: str | Path, *, from_cwd: bool = True) -> str:
        """The collection's key for a document asked for by path; DocumentNotFound when it holds none
        (a filter on a mistyped name would otherwise return no hits and look like a poor search).
        A relative path is taken from the current folder (`from_cwd`, the CLI's rule), or, where the
        current folder means nothing to the asker (`lectern serve`'s clients), as the end of one
        ingested path: `docs/a.pdf` names `/data/docs/a.pdf`, and must name no other document."""
        documents = self.collection().content_hashes()
        text = str(source)
        if from_cwd or Path(text).is_absolute():
            key = self._source(source)
        else:
            parts = [p for p in Path(text).parts if p != "."]
            tail = "/" + "/".join(parts)
            found = [d for d in documents if d.endswith(tail)] if parts and ".." not in parts else []
            if len(found) > 1:
                raise InvalidInput("source", text, f"names {len(found)} documents ({', '.join(sorted(found)[:3])}"
                                   f"{'...' if len(found) > 3 else ''}): give more of its path")  # fmt: skip
            key = found[0] if found else text
        if key not in documents:
            raise DocumentNotFound(text, self.name, sorted(documents))
        return key

    def _source(self, source: str | Path) -> str:
        text = str(source)
        if self.exists and text in self.collection().content_hashes():
            return text
        return source_key(Path(text))

    # -- generation ----------------------------------------------------------------------------
    @property
    def llm(self) -> BaseChatModel:
        return shared_llm(self.settings)

    def qa_chain(self, *, llm: BaseChatModel | None = None, **changes: Any) -> QAChain:
        """The QA chain over this collection, as the settings configure it (chain_from_settings:
        `changes` replace QAOptions fields, `mode` and `filters` the retriever's)."""
        return chain_from_settings(self.settings, self.searcher(), llm=llm, **changes)

    def check_question(self, question: str) -> str:
        """The question, refused when empty or far too long (before any model loads), or over
        answer.max_question_tokens of the model's tokenizer."""
        limit = self.settings.answer.max_question_tokens
        check_question(question, max_tokens=limit)
        return check_question(question, self.llm, limit)

    def ask(self, question: str, **options: Any) -> Answer:
        return self.qa_chain(**options).invoke(self.check_question(question))

    def stream_ask(self, question: str, **options: Any) -> Iterator[str | Answer]:
        """Text as the model writes it, then the Answer with its citations."""
        return self.qa_chain(**options).stream_answer(self.check_question(question))

    def agent(self, *, llm: BaseChatModel | None = None, **options: Any) -> Agent:
        """A tool-calling agent over this collection (rag.agent): `.invoke(question) -> AgentResult`.
        Options are Agent's (max_steps, token_budget, max_new_tokens, plan); `llm` replaces the
        settings' model. Its answers follow the answer settings (qa_options), as the QA chain's do.
        `plan` is on unless given: plan and execute answered 14 of 25 multi-hop questions with
        Qwen2.5 1.5B where the tool loop answered 4 (docs/AGENT.md)."""
        from lectern.rag.agent import build_agent
        from lectern.rag.tools import SourceBook, build_tools

        book = SourceBook()
        searcher = self.searcher()
        merged = {
            "options": qa_options(self.settings, searcher.collection.manifest.profile),
            "term_weights": searcher.term_weights,
            "plan": True,
            **options,
        }
        return build_agent(llm or self.llm, build_tools(self, book), book, **merged)

    def chat_session(self, **changes: Any) -> ChatSession:
        """Conversations over this collection (rag.chat): each follow-up rewritten as a standalone
        question, answered by this collection's QA chain (qa_chain: `changes` replace its options)."""
        from lectern.rag.chat import ChatSession, ConversationStore

        store = ConversationStore.for_data_dir(self.settings.data_dir)
        limit = self.settings.answer.max_question_tokens
        return ChatSession(self.llm, self.qa_chain(**changes), store, max_question_tokens=limit)

    def chat(self, question: str, conversation_id: str = "default") -> Answer:
        check_question(question)
        return self.chat_session().ask(conversation_id, question)

    def scope_documents(
        self, *, source: str | Path | None = None, query: str | None = None, k: int = 20
    ) -> tuple[list[Document], str]:
        """Chunks to summarize, in document order: one source, a query's hits, or the collection."""
        from lectern.rag.retrieval import Hit

        col = self.collection()
        if source is not None:
            key = self._source(source)
            chunks = col.chunks_of(key)
            if not chunks:
                raise DocumentNotFound(str(source), self.name, [d.source for d in col.documents()])
            hits = [Hit(c, 1.0, collection=self.name) for c in chunks]
            return [h.to_document() for h in hits], f"document {source}"
        if query is not None:
            found = self.search(query, k=k)
            found.sort(key=lambda h: (h.chunk.source, h.chunk.ordinal))
            return [h.to_document() for h in found], f"query {query!r}"
        docs: list[Document] = []
        for row in col.documents():
            docs.extend(Hit(c, 1.0, collection=self.name).to_document() for c in col.chunks_of(row.source))
        return docs, f"collection {self.name}"

    def summarize(
        self,
        *,
        source: str | Path | None = None,
        query: str | None = None,
        method: str = "auto",
        progress: Any = None,
        token_max: int | None = None,
    ) -> SummaryResult:
        from lectern.rag.summarize import summarize

        docs, scope = self.scope_documents(source=source, query=query)
        return summarize(
            self.llm,
            docs,
            method=method,
            token_max=token_max,
            max_new_tokens=self.settings.llm.max_new_tokens,
            progress=progress,
            batch_size=self.settings.llm.batch_size,
            scope=scope,
            support=self.settings.summary.support,
            unsupported=self.settings.summary.unsupported,
        )
