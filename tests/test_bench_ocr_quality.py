"""bench/ocr_quality.py's edit distance (bit-parallel) against the textbook dynamic programme."""

from __future__ import annotations

import random

from bench.ocr_quality import cer, levenshtein


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_levenshtein_matches_the_dynamic_programme() -> None:
    rng = random.Random(28)
    for _ in range(500):
        a = "".join(rng.choice("abc ") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == edit_distance(a, b), (a, b)


def test_cer_counts_whitespace_runs_as_one_space() -> None:
    assert cer("the  ferry\nleaves", "the ferry leaves") == 0.0
    assert cer("the ferry", "theferry") == 1 / 9
