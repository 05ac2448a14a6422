"""Tail probabilities from ``scipy.special`` against ``scipy.stats``, far into the tail.

The DE path avoids importing ``scipy.stats`` (about 2 s); these wrappers must give the
same p-values, including down to about 1e-300, and the same edge conventions.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from batchglm.de.multiple_testing import bh_qvalues
from batchglm.families import tails


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("df", [1.0, 2.0, 3.5, 12.0, 150.0])
def test_chi2_far_tail(df: float) -> None:
    x = np.concatenate([np.linspace(0.01, 10, 50), np.geomspace(10, 2000, 200)])
    ref = stats.chi2.sf(x, df)
    keep = ref > 1e-300
    assert ref[keep].min() < 1e-250
    assert _rel(tails.chi2_sf(x, df)[keep], ref[keep]) < 1e-12
    assert _rel(tails.chi2_cdf(x[:50], df), stats.chi2.cdf(x[:50], df)) < 1e-12


@pytest.mark.parametrize(("dfn", "dfd"), [(1.0, 3.0), (1.0, 40.7), (2.0, 85.0), (4.0, 1e4)])
def test_f_far_tail(dfn: float, dfd: float) -> None:
    x = np.concatenate([np.linspace(0.01, 10, 50), np.geomspace(10, 1e150, 400)])
    ref = stats.f.sf(x, dfn, dfd)
    keep = ref > 1e-300
    assert ref[keep].min() < 1e-200
    assert _rel(tails.f_sf(x, dfn, dfd)[keep], ref[keep]) < 1e-12
    assert tails.f_ppf(0.99, dfn, dfd) == pytest.approx(stats.f.ppf(0.99, dfn, dfd), rel=1e-12)


@pytest.mark.parametrize("df", [2.0, 5.5, 30.0, np.inf])
def test_t_and_normal_far_tail(df: float) -> None:
    x = np.concatenate([-np.linspace(0.0, 5.0, 20), np.geomspace(0.1, 1e150, 300)])
    ref = stats.t.sf(x, df)
    keep = ref > 1e-300
    assert _rel(tails.t_sf(x, df)[keep], ref[keep]) < 1e-12
    z = np.linspace(-37.0, 37.0, 301)
    assert _rel(tails.norm_sf(z), stats.norm.sf(z)) < 1e-12
    assert _rel(tails.norm_cdf(z), stats.norm.cdf(z)) < 1e-12
    q = np.array([1e-300, 1e-10, 0.025, 0.5, 0.975])
    np.testing.assert_allclose(tails.norm_ppf(q), stats.norm.ppf(q), rtol=1e-12, atol=0)


def test_edge_conventions_match_scipy_stats() -> None:
    x = np.array([-1.0, 0.0, 1e-300, 2.0, np.inf, np.nan])
    for df in (0.0, -1.0, np.nan, 1.0, 4.0):
        np.testing.assert_array_equal(tails.chi2_sf(x, df), stats.chi2.sf(x, df))
        np.testing.assert_array_equal(tails.chi2_cdf(x, df), stats.chi2.cdf(x, df))
        np.testing.assert_array_equal(tails.f_sf(x, 2.0, df), stats.f.sf(x, 2.0, df))
        np.testing.assert_array_equal(tails.t_sf(x, df), stats.t.sf(x, df))
    assert np.isnan(tails.f_ppf(0.99, 3.0, 0.0))
    # Per-feature degrees of freedom broadcast as in scipy.stats.
    dfs = np.array([1.0, 2.0, 0.0, 7.0])
    np.testing.assert_array_equal(tails.f_sf(3.0, 1.0, dfs), stats.f.sf(3.0, 1.0, dfs))


def test_bh_matches_scipy_with_ties_and_untested() -> None:
    rng = np.random.default_rng(7)
    p = np.concatenate([rng.uniform(size=400), rng.uniform(size=50) * 1e-6, [0.0, 1.0, 0.3]])
    p = np.concatenate([p, p[:40]])  # ties
    rng.shuffle(p)
    with_nan = np.concatenate([p, [np.nan, np.nan]])
    q = bh_qvalues(with_nan)
    np.testing.assert_allclose(q[:-2], stats.false_discovery_control(p), rtol=1e-14, atol=0)
    assert np.isnan(q[-2:]).all()
