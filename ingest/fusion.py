"""lectern's own hybrid fusion (the faiss backend's): both candidate lists scored exactly in both
spaces (no candidate gets a made-up zero because the other list missed it), each score rescaled to
[0, 1] over the candidates, mixed with the configured weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lectern.ingest.stores import Scored


def rescale(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] over the candidates; a constant list maps to 1 (all equally good)."""
    if len(values) == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


def fuse(
    dense: list[tuple[int, float]],
    lexical: list[tuple[int, float]],
    qvec: np.ndarray,
    vectors: Callable[[Sequence[int]], dict[int, np.ndarray]],
    bm25_scores: Callable[[Sequence[int]], dict[int, float]] | None,
    dense_weight: float,
    bm25_weight: float,
) -> Scored:
    """The union of both lists, best first. `vectors` reads stored vectors by id (a row deleted since
    the snapshot is absent, and is no candidate); `bm25_scores` scores ids BM25 missed (None: no terms)."""
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
    if not ids:
        return []
    dense_map = dict(dense)
    missing = [i for i in ids if i not in dense_map]
    if missing:
        found = vectors(missing)  # by id: rows deleted since the snapshot are absent
        dense_map.update({i: float(v @ qvec) for i, v in found.items()})
        ids = [i for i in ids if i in dense_map]  # a deleted row is no candidate
    lex_map = dict(lexical)
    if bm25_scores is not None:
        lex_missing = [i for i in ids if i not in lex_map]
        if lex_missing:
            lex_map.update(bm25_scores(lex_missing))
    d = np.array([dense_map.get(i, 0.0) for i in ids], dtype=np.float32)
    b = np.array([lex_map.get(i, 0.0) for i in ids], dtype=np.float32)
    total = (dense_weight + bm25_weight) or 1.0
    fused = (dense_weight * rescale(d) + bm25_weight * rescale(b)) / total
    order = np.argsort(-fused, kind="stable")
    return [(ids[j], float(fused[j]), float(d[j]), float(b[j])) for j in order]
