"""ingest.bm25.BM25Matrix: exact Okapi BM25, and incremental updates that equal a rebuild."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from lectern.ingest.bm25 import BM25Matrix

DOCS = [[0, 1, 1, 2], [1, 3], [2, 2, 2, 4, 5], [0, 5], [3, 4, 1], [6]]


def arrays(rows: list[list[int]]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int32) for r in rows]


def build(ids: list[int], rows: list[list[int]]) -> BM25Matrix:
    return BM25Matrix.from_arrays(np.array(ids, dtype=np.int64), arrays(rows), vocab_size=8)


def by_hand(rows: list[list[int]], query: list[int], k1: float = 1.2, b: float = 0.75) -> list[float]:
    n = len(rows)
    avgdl = sum(len(r) for r in rows) / n
    out = []
    for r in rows:
        score = 0.0
        for t in set(query):
            df = sum(t in other for other in rows)
            tf = r.count(t)
            if tf:
                idf = math.log1p((n - df + 0.5) / (df + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(r) / avgdl))
        out.append(score)
    return out


@pytest.mark.parametrize("query", [[1], [2, 5], [0, 3, 4, 4], [7]])
def test_scores_are_okapi_bm25(query: list[int]) -> None:
    got = build(list(range(10, 16)), DOCS).scores(query)
    assert got == pytest.approx(by_hand(DOCS, query), rel=1e-5)


def test_without_equals_a_rebuild_of_the_rest() -> None:
    """Deleting rows updates the statistics from their own terms: scores equal a rebuild without them."""
    ids = list(range(10, 16))
    full = build(ids, DOCS)
    gone = {
        11: arrays([DOCS[1]])[0],
        13: arrays([DOCS[3]])[0],
        99: np.array([1], dtype=np.int32),
    }  # 99: absent
    fewer = full.without(gone)
    rest_ids = [i for i in ids if i not in gone]
    rest = [DOCS[ids.index(i)] for i in rest_ids]
    assert fewer.n_live == 4 and list(fewer.dead_ids) == [11, 13]
    assert full.n_live == 6 and not len(full.dead_ids)  # immutable: the original is untouched
    for query in ([1], [2, 5], [0, 3, 4], [6]):
        live = fewer.scores(query)[fewer.live]
        assert live == pytest.approx(build(rest_ids, rest).scores(query), rel=1e-5)
        assert not fewer.scores(query)[~fewer.live].any()  # dead rows never score
    assert fewer.without({11: gone[11]}) is fewer  # already dead: nothing to do


def test_with_rows_appends_and_drops_the_dead() -> None:
    ids = list(range(10, 16))
    grown = (
        build(ids, DOCS)
        .without({12: arrays([DOCS[2]])[0]})
        .with_rows(np.array([20, 21]), arrays([[7, 7, 1], [2]]), vocab_size=9, drop_dead=True)
    )
    rows = [DOCS[0], DOCS[1], DOCS[3], DOCS[4], DOCS[5], [7, 7, 1], [2]]
    assert list(grown.ids) == [10, 11, 13, 14, 15, 20, 21] and grown.live.all()
    for query in ([1], [7], [2, 5]):
        assert grown.scores(query) == pytest.approx(by_hand(rows, query), rel=1e-5)
    kept = (
        build(ids, DOCS)
        .without({12: arrays([DOCS[2]])[0]})
        .with_rows(np.array([20]), arrays([[7]]), vocab_size=9, drop_dead=False)
    )
    assert list(kept.ids) == [*ids, 20] and list(kept.dead_ids) == [12]
    with pytest.raises(ValueError, match="ascending"):
        build(ids, DOCS).with_rows(np.array([3]), arrays([[1]]), vocab_size=8, drop_dead=False)


def test_saved_counts_reload_with_their_tombstones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    full = build(list(range(10, 16)), DOCS)
    path = tmp_path / "bm25.npz"
    with path.open("wb") as fh:
        full.save(fh)
    dead = np.array([11, 13], dtype=np.int64)
    loaded = BM25Matrix.load(str(path), dead)
    expected = full.without({11: arrays([DOCS[1]])[0], 13: arrays([DOCS[3]])[0]})
    assert list(loaded.dead_ids) == [11, 13]
    assert loaded.scores([1, 5]) == pytest.approx(expected.scores([1, 5]), rel=1e-6)
    np.testing.assert_array_equal(loaded.df, expected.df)


def test_an_old_format_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Format 1 held baked weights: read as counts they would give wrong scores, so it is rebuilt."""
    buf = io.BytesIO()
    np.savez(buf, ids=np.arange(2), data=np.ones(2), indices=np.arange(2), indptr=np.array([0, 1, 2]),
             shape=np.array([2, 2]), params=np.array([1.2, 0.75]))  # fmt: skip
    path = tmp_path / "old.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="another format"):
        BM25Matrix.load(str(path))
