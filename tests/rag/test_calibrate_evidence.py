"""bench/calibrate_evidence.py's fitting: the logistic fit recovers a known model, the threshold keeps
the asked share of answerable questions, and cross-validation keeps a question's rows together."""

from __future__ import annotations

import numpy as np

from bench.calibrate_evidence import cross_validated, fit, probability, rates, threshold_keeping


def test_fit_recovers_the_weights_of_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4000, 2))
    true = np.array([6.0, 3.0, -4.0])
    y = (rng.uniform(size=4000) < probability(true, x)).astype(float)
    assert np.allclose(fit(x, y), true, atol=0.6)


def test_threshold_keeps_the_asked_share_and_rates_count_both_sides() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    threshold = threshold_keeping(p, keep=0.8)
    assert threshold == 0.3 and (p >= threshold).mean() == 0.8
    y = np.array([1, 1, 0, 0])
    assert rates(np.array([0.9, 0.2, 0.1, 0.6]), y, 0.5) == {"answerable_kept": 0.5, "hidden_abstained": 0.5}


def test_cross_validation_scores_every_row_out_of_fold() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(40, 1))
    y = np.array([1.0, 0.0] * 20)
    groups = [i // 2 for i in range(40)]  # a question's two rows
    out = cross_validated(x, y, groups, folds=5, seed=0)
    assert out.shape == (40,) and ((out > 0) & (out < 1)).all()
