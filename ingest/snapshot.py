"""The search structures of one generation of a collection: a FAISS index and a BM25 matrix.

Immutable once built, so readers share them. Rows deleted since the files were written stay in
both as tombstones (the BM25 matrix marks them dead, FAISS searches skip them), which is what lets
a delete write a list of ids instead of the whole index. The index kinds and how each is built or
searched also live here, and so do the snapshot's files (index-G.faiss, bm25-G.npz, dead-G.npy and
state.json, which names them): how they are written, checked and read. ingest.faiss_store, the SQLite
side, decides when to write which.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lectern.ingest.atomic import atomic_open, atomic_write_bytes

if TYPE_CHECKING:  # scipy loads with the first BM25 snapshot, not with the store
    from lectern.ingest.bm25 import BM25Matrix

HNSW_EF_SEARCH = 256
IVF_MIN_ROWS = 1024  # below this an ivf collection uses a flat index (nothing to train on)
# `auto` (the default kind) is exact and flat up to this many rows, an HNSW graph from there on.
# Measured at 100,000 MiniLM-like vectors on one core (bench/query_latency.py, docs/BENCHMARKS.md): a
# flat scan 19 ms a query, so about 4 ms at 20,000; HNSW (M=32, efSearch 256) 1.3 ms with recall@5
# 0.985 of the exact top 5, and about 0.6 ms a row to build.
AUTO_HNSW_ROWS = 20_000


def concrete_kind(kind: str, n: int) -> str:
    """The index an `auto` collection of `n` rows gets; any other kind is itself."""
    if kind == "auto":
        return "hnsw" if n >= AUTO_HNSW_ROWS else "flat"
    return kind


TRAIN_PER_LIST = 256  # an IVF index trains on at most this many rows a list (what FAISS samples itself)


def empty_index(
    kind: str, dimension: int, n: int, options: dict[str, Any], sample: Callable[[int], np.ndarray]
) -> Any:
    """An empty FAISS IndexIDMap2 (inner product) of the kind `n` rows get, rows to be added in
    batches; an IVF index is trained first on `sample(rows)`, at most TRAIN_PER_LIST rows a list."""
    import faiss

    base: Any
    kind = concrete_kind(kind, n)
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dimension, int(options.get("hnsw_m", 32)), faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf" and n >= IVF_MIN_ROWS:
        lists = ivf_lists(n, options)
        base = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT)
        base.train(np.ascontiguousarray(sample(min(n, TRAIN_PER_LIST * lists)), dtype=np.float32))
        base.nprobe = max(1, lists // 8)
    else:
        base = faiss.IndexFlatIP(dimension)
    return faiss.IndexIDMap2(base)


def ivf_lists(n: int, options: dict[str, Any]) -> int:
    lists = int(options.get("ivf_lists") or max(16, int(4 * np.sqrt(n))))
    return max(1, min(lists, n // 39))


def base_of(index: Any) -> Any:
    """The index under the id map (IndexFlatIP, IndexHNSWFlat or IndexIVFFlat)."""
    import faiss

    return faiss.downcast_index(index.index)


def needs_rebuild(kind: str, index: Any, rows_after: int, dead: int) -> bool:
    """Whether the next write must rebuild the index from SQLite rather than update it in place:
    more than a quarter of its rows dead where rows cannot be removed (HNSW, IVF), an auto index
    still flat at AUTO_HNSW_ROWS rows, or an ivf index still flat or trained when it had a quarter of
    today's rows or fewer."""
    import faiss

    if not can_remove(index) and dead > 0.25 * max(1, int(index.ntotal)):
        return True
    if kind == "auto":
        return rows_after >= AUTO_HNSW_ROWS and isinstance(base_of(index), faiss.IndexFlat)
    if kind == "ivf":
        base = base_of(index)
        if not isinstance(base, faiss.IndexIVF):
            return rows_after >= IVF_MIN_ROWS
        return ivf_lists(rows_after, {}) >= 2 * int(base.nlist)
    return False


def can_remove(index: Any) -> bool:
    """Only a flat index can drop rows under FAISS's id map: an HNSW graph cannot remove at all, and
    IVF lists keep their internal ids while IndexIDMap2 renumbers its map, so labels would shift.
    The others keep deleted rows as tombstones until a rebuild."""
    import faiss

    return isinstance(base_of(index), faiss.IndexFlat)


class Snapshot:
    """FAISS and BM25 of one generation, immutable once built: safe to share between readers.

    `persisted`: these are the structures state.json points to (else they were rebuilt from SQLite
    in memory and the next writer must write them in full)."""

    def __init__(self, generation: int, index: Any, bm25: BM25Matrix, persisted: bool = False) -> None:
        import faiss

        if int(index.ntotal) != len(bm25.ids):
            raise ValueError(f"FAISS holds {index.ntotal} rows, BM25 {len(bm25.ids)}")
        self.generation = generation
        self.index = index
        self.bm25 = bm25
        self.persisted = persisted
        self.dead = bm25.dead_ids
        self.size = bm25.n_live
        self._faiss = faiss
        self._exclude: Any = None
        if len(self.dead):
            inner = faiss.IDSelectorBatch(np.ascontiguousarray(self.dead, dtype=np.int64))
            self._exclude = (faiss.IDSelectorNot(inner), inner)  # keep the inner one alive
        self._last: tuple[tuple[int, ...], np.ndarray] = ((), np.zeros(0, dtype=np.float32))

    def _params(self, selector: Any) -> Any:
        """Search parameters of the index's own kind (IVF refuses the generic ones)."""
        faiss = self._faiss
        base = base_of(self.index)
        if isinstance(base, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(base.nprobe))
        if isinstance(base, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(base.hnsw.efSearch))
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    def _bm25_scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """All BM25 scores for a query; the last one is kept, as hybrid fusion asks twice."""
        key = tuple(sorted(set(term_ids)))
        last = self._last
        if last[0] != key or not key:
            last = (key, self.bm25.scores(key))
            self._last = last  # one tuple store: safe to race, at worst recomputed
        return last[1]

    def dense(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top k live rows by inner product; `allowed` (live row ids from SQLite) filters first."""
        if self.size == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        params = None
        keep: Any = None
        if allowed is not None:
            if len(allowed) == 0:
                return []
            keep = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = self._params(keep)
        elif self._exclude is not None:
            params = self._params(self._exclude[0])
        scores, ids = self.index.search(q, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def lexical(
        self, term_ids: Sequence[int], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if self.size == 0 or not term_ids or k <= 0:
            return []
        scores = self._bm25_scores(term_ids)
        if allowed is not None:
            mask = np.isin(self.bm25.ids, allowed)
            scores = np.where(mask, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.bm25.ids[i]), float(scores[i])) for i in top]

    def bm25_scores_for(self, term_ids: Sequence[int], ids: Sequence[int]) -> dict[int, float]:
        """Exact BM25 scores of given chunks, for fusing with dense candidates."""
        if not term_ids or not ids:
            return {i: 0.0 for i in ids}
        scores = self._bm25_scores(term_ids)
        pos = np.searchsorted(self.bm25.ids, np.asarray(ids, dtype=np.int64))
        out: dict[int, float] = {}
        for i, p in zip(ids, pos, strict=True):
            ok = p < len(self.bm25.ids) and self.bm25.ids[p] == i
            out[i] = float(scores[p]) if ok else 0.0
        return out


# --- on disk: the files of one generation, and state.json that names them ---------------------------

STATE = "state.json"
_FILES = ("index-*.faiss", "bm25-*.npz", "dead-*.npy")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(folder: Path) -> dict[str, Any]:
    """Which files hold which generation's snapshot; generation -1 before the first is written."""
    try:
        return dict(json.loads((folder / STATE).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {"generation": -1}


def read_tombstones(folder: Path, state: dict[str, Any]) -> np.ndarray | None:
    """The deleted row ids the state names (empty when none); None when the file is missing or damaged."""
    name = state.get("dead")
    if not name:
        return np.zeros(0, dtype=np.int64)
    try:
        data = (folder / name).read_bytes()
        if sha256(data) != state.get("dead_sha256"):
            return None
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.int64)
    except (OSError, ValueError, EOFError):
        return None


def load_files(
    folder: Path, state: dict[str, Any], dimension: int, live_rows: Callable[[], int]
) -> Snapshot | None:
    """The snapshot the state names, checked against its hashes and against SQLite (`dimension`, and
    `live_rows()` chunks); None when anything is missing, damaged or disagrees: it is then rebuilt."""
    import faiss

    try:
        faiss_bytes = (folder / state["faiss"]).read_bytes()
        bm25_path = folder / state["bm25"]
        if sha256(faiss_bytes) != state.get("faiss_sha256") or sha256_file(bm25_path) != state.get(
            "bm25_sha256"
        ):
            return None  # damaged in place: rebuild from SQLite, never trust
        dead = read_tombstones(folder, state)
        if dead is None:
            return None
        index = faiss.deserialize_index(np.frombuffer(faiss_bytes, dtype=np.uint8))
        from lectern.ingest.bm25 import BM25Matrix

        bm25 = BM25Matrix.load(str(bm25_path), dead)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # a snapshot we cannot read is rebuilt, never trusted
    if index.d != dimension or index.ntotal != len(bm25.ids):
        return None
    if bm25.n_live != live_rows() or len(bm25.dead_ids) != len(dead):
        return None
    return Snapshot(int(state["generation"]), index, bm25, persisted=True)


def write_tombstones(folder: Path, generation: int, dead: np.ndarray) -> tuple[dict[str, Any], int]:
    """dead-G.npy: the state entries that name it, and the bytes written."""
    name = f"dead-{generation}.npy"
    buf = io.BytesIO()
    np.save(buf, dead)
    data = buf.getvalue()
    atomic_write_bytes(folder / name, data)
    return {"dead": name, "dead_sha256": sha256(data)}, len(data)


def write_files(folder: Path, snap: Snapshot) -> tuple[dict[str, Any], int]:
    """The index, the BM25 counts and the tombstones written in full: the state that names them (not
    yet published) and the bytes written."""
    import faiss

    gen = snap.generation
    faiss_name, bm25_name = f"index-{gen}.faiss", f"bm25-{gen}.npz"
    digest = hashlib.sha256()
    with atomic_open(folder / faiss_name, "wb") as fh:

        def write(block: bytes) -> None:  # FAISS writes the index a MiB at a time: no copy of it here
            digest.update(block)
            fh.write(block)

        faiss.write_index(snap.index, faiss.PyCallbackIOWriter(write))  # type: ignore[attr-defined]
        faiss_size = fh.tell()
    with atomic_open(folder / bm25_name) as fh:
        snap.bm25.save(fh)
    state: dict[str, Any] = {
        "generation": gen,
        "faiss": faiss_name,
        "bm25": bm25_name,
        "faiss_sha256": digest.hexdigest(),
        "bm25_sha256": sha256_file(folder / bm25_name),
        "rows": int(snap.index.ntotal),
        "dead": None,
    }
    written = faiss_size + (folder / bm25_name).stat().st_size
    if len(snap.dead):
        entries, size = write_tombstones(folder, gen, snap.dead)
        state.update(entries)
        written += size
    return state, written


def publish(folder: Path, state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """state.json written last, then the snapshot files it no longer names are removed; the state as
    written and its size."""
    state = {**state, "written": time.time()}
    body = json.dumps(state).encode()
    atomic_write_bytes(folder / STATE, body)
    keep = {state.get("faiss"), state.get("bm25"), state.get("dead")}
    for pattern in _FILES:
        for old in folder.glob(pattern):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    return state, len(body)
