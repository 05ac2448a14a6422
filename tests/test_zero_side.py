"""Separated features with a handful of reads: the conditional Poisson floor.

The reference is the exact binomial test of "all reads outside the zero group" with the
size-factor share (scipy.stats.binomtest), computed independently of the library.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

import batchglm as bg
from batchglm.de.zero_side import zero_side_floor


def _table(seed: int) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, g = 10, 200
    sf = np.exp(rng.normal(0.0, 0.2, n))
    mu = sf[:, None] * np.exp(rng.uniform(np.log(5), np.log(500), g))[None, :]
    y = rng.negative_binomial(10, 10 / (10 + mu)).astype(float)
    obs = pd.DataFrame({"condition": ["a"] * 5 + ["b"] * 5}, index=[f"s{i}" for i in range(n)])
    y[:, 0] = [0, 0, 0, 0, 0, 3, 0, 0, 0, 0]  # 3 reads, one sample of b
    y[:, 1] = [0, 0, 0, 0, 0, 1, 0, 1, 1, 0]  # 1 read in each of three samples of b
    y[:, 2] = [0, 0, 0, 0, 0, 30, 25, 41, 33, 28]  # clearly on only in b
    return y, obs, sf


def test_few_reads_against_zeros_are_not_more_significant_than_poisson_sampling() -> None:
    y, obs, sf = _table(3)
    res = bg.fit(y, "~ condition", obs=obs, size_factors=sf)
    tab = bg.de.wald(res, coef="condition[T.b]", dispersion="map", data=y).summary()
    share_b = sf[5:].sum() / sf.sum()
    for j in (0, 1):
        total = int(y[:, j].sum())
        exact = stats.binomtest(total, total, share_b, alternative="greater").pvalue
        assert tab["status"].iloc[j] == "separated"
        assert tab["pvalue"].iloc[j] >= min(1.0, 2 * exact) * (1 - 1e-9)
    # Without the floor the likelihood ratio of gene 0 was below 0.06 (the floor is ~0.25).
    assert tab["pvalue"].iloc[0] > 0.2
    # Plenty of reads against zeros: the likelihood ratio still decides.
    assert tab["pvalue"].iloc[2] < 1e-6


def test_floor_closed_form() -> None:
    mu_full = np.array([[1e-12, 1e-12, 2.0, 3.0]]).T @ np.ones((1, 2))
    mu_red = np.array([[1.0, 1.0, 1.0, 1.0]]).T @ np.ones((1, 2))
    floor = zero_side_floor(np.array([3.0, 0.0]), mu_full, mu_red)
    np.testing.assert_allclose(floor, [min(1.0, 2 * 0.5**3), 1.0], rtol=1e-14)
    # No observation on the zero side: no floor.
    assert zero_side_floor(np.array([5.0]), np.ones((4, 1)), np.ones((4, 1)))[0] == 0.0
