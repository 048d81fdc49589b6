"""Typed settings of the ingestion layer; the root object that holds them is rag.settings.Settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from lectern.ingest.load import OcrMode

Profile = Literal["accurate", "fast"]
DEFAULT_PROFILE: Profile = "accurate"
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


class EmbedSettings(BaseModel):
    """Which embedder and how it runs.

    `profile` picks a packaged embedder when `model` is unset: `accurate` is MiniLM, `fast` a static
    model2vec embedder distilled from it once per machine and kept in the user's cache. Unset, a
    collection keeps the profile it was created with, and a new one gets `accurate` (the rule:
    ingest.pipeline.embed_settings_for). `model` names any sentence-transformers model folder (or
    `fake` for the deterministic test embedder).
    """

    profile: Profile | None = None
    model: str | None = None
    # measured on R-manual chunks, 2 cores: ONNX Runtime int8 8% faster at 8 than at 16 (12% at 4),
    # torch fp32 and ONNX fp32 the same from 4 to 16; larger batches pad more and ran slower
    batch_size: int = Field(8, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # On a CPU (CUDA runs fp16): fp32 or bf16 autocast in torch, or ONNX Runtime fp32 or int8 (the
    # `onnx` extra); auto: the fastest of those measured on this machine, once (ingest.cpu_precision)
    precision: Literal["auto", "fp32", "bf16", "onnx-fp32", "onnx-int8"] = "auto"
    # a question's vector on a CPU: auto = ONNX Runtime fp32 where it is installed and the model is a
    # BERT with mean pooling (the export ingest.onnx_embed makes), else one lean fp32 torch pass
    query_backend: Literal["auto", "onnx", "torch"] = "auto"
    # ONNX Runtime threads for one question (None: two where there are two cores; idle ones sleep).
    # Measured at idle: 3.3 ms a question on two threads, 4.4-6.0 ms on one
    query_threads: int | None = Field(None, ge=1)

    @property
    def chosen_profile(self) -> Profile | None:
        """The profile that builds the embedder: None when `model` names one instead."""
        return None if self.model else (self.profile or DEFAULT_PROFILE)


class ChunkSettings(BaseModel):
    """Chunk size in word pieces of the embedder's own tokenizer, so that nothing is truncated."""

    chunk_tokens: int = Field(200, ge=16)
    overlap_tokens: int = Field(40, ge=0)


class IndexSettings(BaseModel):
    # auto: exact (flat) up to 20,000 chunks, an HNSW graph beyond (ingest.snapshot.AUTO_HNSW_ROWS)
    kind: IndexKind = "auto"
    hnsw_m: int = Field(32, ge=2, le=256)
    ivf_lists: int = Field(0, ge=0)  # 0: chosen from the collection's size


class RaySettings(BaseModel):
    """The `ray` ingestion runner (ingest.ray_runner; the `ray` extra)."""

    # None: Ray starts on this machine for the ingest and stops after it; "auto": the cluster this
    # machine belongs to (`ray start`); "ray://host:10001": a remote cluster through Ray Client
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # on this machine only; None: its cores (at least actors + 1)
    embed_actors: int | None = Field(None, ge=1)  # None: one per GPU of the cluster, or one without GPUs
    actor_cpus: float = Field(1.0, gt=0.0)  # CPUs an embedding actor holds (torch threads on CPU)
    # chunks per call of an embedding actor. None: one file's chunks per call, embedded in the local
    # runner's slices, so the vectors are the local runner's (int8's activation scale is per batch:
    # a chunk's vector moves with its batch-mates); a number: bigger batches for GPUs, vectors then
    # within the precision's noise of the local runner's
    embed_batch: int | None = Field(None, ge=1)


class IngestSettings(BaseModel):
    # local: parse workers beside the embedder on this machine; ray: Ray Data tasks and actors on
    # this machine or a cluster (ingest.pipeline.RUNNERS)
    runner: str = "local"
    ray: RaySettings = RaySettings()
    embed: EmbedSettings = EmbedSettings()
    chunk: ChunkSettings = ChunkSettings()
    index: IndexSettings = IndexSettings()
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=lambda: [".git/**", "**/.*", "**/__pycache__/**"])
    # Processes parsing while the main process embeds; 0 = inline; None = one per core, less one
    # for a transformer embedder (torch keeps a core busy), all of them for a static one.
    parse_workers: int | None = Field(None, ge=0)
    # A file with no parse result this long after the ingest waits for it fails, its worker stopped (a parser
    # stuck on a hostile file); inline parsing (parse_workers = 0) cannot be stopped.
    parse_timeout_s: float = Field(900.0, gt=0.0)
    lock_timeout_s: float = Field(30.0, ge=0.0)
    # Symbolic links that lead outside the folder being ingested are skipped (and reported) unless
    # this is on; links inside it are always followed. `lectern ingest --follow-links`.
    follow_links: bool = False
    # Text files larger than this are chunked, embedded and written a batch at a time in the main
    # process (memory stays flat) rather than parsed whole in a worker (bench/large_text_memory.py).
    stream_bytes: int = Field(8 << 20, ge=0)
    # OCR (ingest.ocr): auto reads images, and PDF pages with little text for their area and an image
    # on them; force reads every PDF page by OCR instead of its text layer; off reads no image at all
    ocr: OcrMode = "auto"
    # a PDF page is rendered at this resolution for OCR: on R-manual pages 150 dpi ran words together
    # (3.7-3.9% of characters wrong), 200 had 0.8-2.2%, 300 under 1% at 1.7x the time of 200
    ocr_dpi: int = Field(200, ge=50, le=600)
    # OCR results, keyed by the page image's hash: None is <cache_dir>/ocr (rag.workspace fills it in)
    ocr_cache: str | None = None


StoreBackend = Literal["faiss", "milvus"]


class StoreSettings(BaseModel):
    """Where collections live (ingest.stores.BACKENDS). `faiss`: folders under the data dir. `milvus`:
    a Milvus database at `uri`: a file path runs embedded milvus-lite (unset: <data dir>/milvus.db),
    `http://host:19530` a Milvus server, with `token` ("user:password" or an API key)."""

    backend: StoreBackend = "faiss"
    uri: str | None = None
    token: SecretStr | None = None
    # how Milvus fuses its dense and BM25 searches (hybrid_search): reciprocal rank or weighted
    # (the weighted ranker takes retrieval.dense_weight and retrieval.bm25_weight)
    ranker: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = Field(60, ge=1)
