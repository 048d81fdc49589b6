"""Typed settings of the ingestion layer; the root object that holds them is rag.settings.Settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from lectern.ingest.document import OcrEngineName, OcrMode
from lectern.ingest.pdf import STREAM_BUDGET, TEXT_BUDGET

Profile = Literal["accurate", "fast"]
DEFAULT_PROFILE: Profile = "accurate"
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


class EmbedSettings(BaseModel):
    """Which embedder and how it runs.

    `profile` picks a packaged embedder when `model` is unset: `accurate` is MiniLM, `fast` a static
    model2vec embedder distilled from it once per machine and kept in the user's cache. Unset, a
    collection keeps the profile it was created with, and a new one gets `accurate` (the rule:
    ingest.collection.embed_settings_for). `model` names any sentence-transformers model folder (or
    `fake` for the deterministic test embedder).
    """

    profile: Profile | None = Field(
        None,
        description="`accurate` (MiniLM) or `fast` (a static model distilled from MiniLM once per machine "
        "into `cache_dir`); unset, a collection keeps the profile it was created with (`accurate` for a new "
        "one), and asking for another one is an error.",
    )
    model: str | None = Field(
        None,
        description="Any sentence-transformers model folder instead of a profile (`fake`: the test embedder).",
    )
    # measured on R-manual chunks, 2 cores: ONNX Runtime int8 8% faster at 8 than at 16 (12% at 4),
    # torch fp32 and ONNX fp32 the same from 4 to 16; larger batches pad more and ran slower
    batch_size: int = Field(8, ge=1, description="Chunks embedded per call.")
    device: str = Field("auto", description="`auto`, `cpu`, `cuda` or `cuda:N`.")
    precision: Literal["auto", "fp32", "bf16", "onnx-fp32", "onnx-int8"] = Field(
        "auto",
        description="On a CPU, `fp32` or `bf16` (torch) or `onnx-fp32` or `onnx-int8` (ONNX Runtime); `auto` "
        "measures them once per machine (kept in `cache_dir`) and takes the fastest that keeps the vectors "
        "within its bar and beats fp32 by 10%, ONNX Runtime's before bf16 (CUDA runs fp16; "
        "docs/BENCHMARKS.md says why).",
    )
    query_backend: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="A question's vector on a CPU: `auto` runs the model on ONNX Runtime (exported once per "
        "machine into `cache_dir`; 3-5 ms against 11-19 ms in torch) and falls back to one lean fp32 torch "
        "pass for a model that is not a BERT with mean pooling; `onnx` insists, with a clear error.",
    )
    # Measured at idle: 3.3 ms a question on two threads, 4.4-6.0 ms on one
    query_threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime threads for one question (unset: two where there are two cores).",
    )

    @property
    def chosen_profile(self) -> Profile | None:
        """The profile that builds the embedder: None when `model` names one instead."""
        return None if self.model else (self.profile or DEFAULT_PROFILE)


class ChunkSettings(BaseModel):
    """Chunk size in word pieces of the embedder's own tokenizer, so that nothing is truncated."""

    chunk_tokens: int = Field(
        200,
        ge=16,
        description="Chunk size in the embedder's word pieces (MiniLM's), so no chunk is truncated.",
    )
    overlap_tokens: int = Field(40, ge=0, description="Word pieces a chunk shares with the one before it.")


class IndexSettings(BaseModel):
    """The dense index a new collection is built with (ingest.snapshot)."""

    kind: IndexKind = Field(
        "auto",
        description="`auto`: exact (`flat`) up to 20,000 chunks and an HNSW graph beyond (recall@5 0.985 of "
        "the exact top 5 at 100,000 chunks, 1.3 ms against a 19 ms scan); or always `flat`, `hnsw` or "
        "`ivf`; chosen when a collection is created.",
    )
    hnsw_m: int = Field(32, ge=2, le=256, description="Links per node of an HNSW graph.")
    ivf_lists: int = Field(
        0, ge=0, description="Lists of an IVF index (0: chosen from the collection's size)."
    )


class RaySettings(BaseModel):
    """The `ray` ingestion runner (ingest.ray_runner; the `ray` extra)."""

    address: str | None = Field(
        None,
        description="Unset: Ray started on this machine for the ingest and stopped after; `auto`: the "
        "cluster this node joined (`ray start`); `ray://host:10001`: a remote cluster through Ray Client "
        "(`--address`).",
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="The CPUs a Ray started here is told of (unset: this machine's cores, at least the "
        "actors' and one parse task's).",
    )
    embed_actors: int | None = Field(
        None, ge=1, description="Embedding actors (unset: one per GPU of the cluster, else one)."
    )
    actor_cpus: float = Field(
        1.0, gt=0.0, description="CPUs an embedding actor holds (its torch threads on a CPU)."
    )
    # int8's activation scale is per batch: a chunk's vector moves with its batch-mates
    embed_batch: int | None = Field(
        None,
        ge=1,
        description="Chunks per call of an embedding actor: unset, one file's chunks in the local runner's "
        "slices, so the vectors are the local runner's; a number, bigger batches for GPUs, the vectors then "
        "within the precision's noise.",
    )


class IngestSettings(BaseModel):
    """How files are found, parsed, chunked, embedded and indexed (ingest.pipeline)."""

    runner: str = Field(
        "local",
        description="`local` (parse workers beside the embedder) or `ray` (Ray Data on this machine or a "
        "cluster; the `ray` extra; `--runner`).",
    )
    ray: RaySettings = RaySettings()
    embed: EmbedSettings = EmbedSettings()
    chunk: ChunkSettings = ChunkSettings()
    index: IndexSettings = IndexSettings()
    include: list[str] = Field(
        default_factory=list,
        description="Glob patterns a file must match to be ingested (empty: every file).",
    )
    exclude: list[str] = Field(
        default_factory=lambda: [".git/**", "**/.*", "**/__pycache__/**"],
        description="Glob patterns of files and folders passed over (`--exclude`).",
    )
    parse_workers: int | None = Field(
        None,
        ge=0,
        description="Processes parsing while the main process embeds: 0 parses inline; unset, one per core "
        "less one for a transformer embedder, all of them for a static one.",
    )
    parse_timeout_s: float = Field(
        900.0,
        gt=0.0,
        description="A file with no parse result this long after the ingest began to wait for it fails and "
        "its worker is stopped (a parser stuck on a hostile file; inline parsing cannot be stopped).",
    )
    lock_timeout_s: float = Field(
        30.0, ge=0.0, description="How long a second writer of a collection waits for the first, saying so."
    )
    follow_links: bool = Field(
        False,
        description="Follow symbolic links that lead outside the folder being ingested (`--follow-links`); "
        "links inside it are always followed.",
    )
    stream_bytes: int = Field(
        8 << 20,
        ge=0,
        description="Text files larger than this are chunked, embedded and written a batch at a time: memory "
        "grows only with the collection's index, about 3-5 KB a chunk at 384 dimensions (docs/BENCHMARKS.md).",
    )
    ocr: OcrMode = Field(
        "auto",
        description="`auto` reads images, and PDF pages with little text for their area and an image on "
        "them, by OCR (in the parse workers, cached by the page image's hash); `force` reads every "
        "PDF page by OCR, `off` none (`--ocr`; docs/DOCUMENTS.md).",
    )
    ocr_engine: OcrEngineName = Field(
        "tesseract",
        description="`tesseract`: Tesseract 5 (tesserocr, tessdata_fast English), 1.3 CPU seconds an R-manual "
        "page at 150 dpi; `rapidocr`: PP-OCRv4, 15 s, but it reads Chinese too. Both ship in wheels "
        "(docs/DOCUMENTS.md).",
    )
    ocr_dpi: int = Field(
        200,
        ge=50,
        le=600,
        description="The resolution a PDF page is rendered at for OCR: Tesseract got 2.4% of R-manual "
        "characters wrong at 150 dpi, 0.6% at 200 for 1.1x the time, 0.1-0.6% at 300 for 1.6x.",
    )
    ocr_cache: str | None = Field(
        None, description="Where OCR results are kept, by the page image's hash (unset: `<cache_dir>/ocr`)."
    )
    # A PDF's decompression budgets (ingest.pdf): past either, the file fails alone as a decompression
    # bomb, in bounded memory, before or while its parser reads it.
    pdf_max_stream_bytes: int = Field(
        STREAM_BUDGET,
        ge=1 << 16,
        le=1 << 32,
        description="What one compressed (Flate) stream of a PDF, other than an image, may inflate to, "
        "checked a MiB at a time before a parser sees it; past it the file fails as a decompression bomb. "
        "A page's text stream is a few KB to a few MB; PDFium holds about 13 times a stream while it reads "
        "the page, so 32 MiB keeps a page under half a GB.",
    )
    pdf_max_text_chars: int = Field(
        TEXT_BUDGET,
        ge=1000,
        le=1 << 34,
        description="The characters of text one PDF may hold, counted page by page as they are extracted; "
        "past it the file fails as a decompression bomb (one of many small pages). R's 2415-page reference "
        "manual is 6 M characters; the default is 128 Mi.",
    )


StoreBackend = Literal["faiss", "milvus"]


class StoreSettings(BaseModel):
    """Where collections live (ingest.store_backends.BACKENDS). `faiss`: folders under the data dir. `milvus`:
    a Milvus database at `uri`: a file path runs embedded milvus-lite (unset: <data dir>/milvus.db),
    `http://host:19530` a Milvus server, with `token` ("user:password" or an API key)."""

    backend: StoreBackend = Field(
        "faiss",
        description="`faiss` (folders under `<data dir>/collections`) or `milvus` (the `milvus` extra; "
        "docs/STORAGE.md).",
    )
    uri: str | None = Field(
        None,
        description="For `milvus`: a file path runs embedded milvus-lite (unset: `<data dir>/milvus.db`), "
        "`http://host:19530` a Milvus server.",
    )
    token: SecretStr | None = Field(None, description="For a Milvus server: `user:password` or an API key.")
    ranker: Literal["rrf", "weighted"] = Field(
        "weighted",
        description="How Milvus fuses its dense and BM25 searches: `weighted` with `retrieval.dense_weight` "
        "and `bm25_weight` (better on CMU S08 and S09), or reciprocal rank (`rrf`, with `rrf_k`).",
    )
    rrf_k: int = Field(60, ge=1, description='The constant of reciprocal-rank fusion (`ranker = "rrf"`).')
