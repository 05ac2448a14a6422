"""Cook's distances in parallel feature blocks: per-feature values, whatever the threads."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import batchglm as bg
from batchglm.de.cooks import cooks_distance, find_outliers, max_cooks_distance


@pytest.fixture(scope="module")
def fitted():
    # 3 groups of 8, 400 features: with 2 or 3 threads, several blocks of >= 64 features.
    rng = np.random.default_rng(2026)
    groups = np.repeat([0, 1, 2], 8)
    sf = rng.uniform(0.7, 1.4, groups.size)
    base = np.exp(rng.uniform(1.0, 5.0, 400))
    mu = sf[:, None] * base[None, :] * np.array([1.0, 1.5, 0.7])[groups][:, None]
    y = rng.negative_binomial(10, 10 / (10 + mu)).astype(float)
    hit = rng.choice(400, 25, replace=False)
    y[rng.integers(0, groups.size, hit.size), hit] = 60 * y[:, hit].max(axis=0) + 80
    x = np.column_stack([np.ones(groups.size), groups == 1, groups == 2]).astype(float)
    return y, x, sf, groups, bg.fit(y, x, size_factors=sf)


def _reference_cooks(y, x, sf, groups, res, j):
    """DESeq2's distance of feature ``j`` written out with dense per-feature algebra."""
    mu = sf * np.exp(x @ res.coef_loc.to_numpy()[j])
    r = np.exp(res.coef_scale.to_numpy()[j, 0])
    w = mu / (1 + mu / r)
    xw = x * np.sqrt(w)[:, None]
    h = np.diag(xw @ np.linalg.solve(xw.T @ xw, xw.T))
    normed = y[:, j] / (sf / stats.gmean(sf))
    var = []
    for g in np.unique(groups):  # every group has 8: trim 1/4, scale 1.86
        v = normed[groups == g]
        centre = stats.trim_mean(v, 0.25)
        var.append(1.86 * stats.trim_mean((v - centre) ** 2, 0.25))
    m = normed.mean()
    alpha = max((max(var) - m) / m**2, 0.04)
    p = x.shape[1]
    return (y[:, j] - mu) ** 2 / (mu + alpha * mu**2) * h / (p * (1 - h) ** 2)


def test_blocked_distances_match_dense_reference(fitted):
    y, x, sf, groups, res = fitted
    picked = np.array([399, 0, 137, 64, 65, 250, 128])  # unsorted, across block edges
    got = cooks_distance(y, res, features=picked, n_jobs=3).to_numpy()
    best = max_cooks_distance(y, res, features=picked, n_jobs=2)
    for col, j in enumerate(picked):
        ref = _reference_cooks(y, x, sf, groups, res, j)
        np.testing.assert_allclose(got[:, col], ref, rtol=1e-9)
        np.testing.assert_allclose(best[col], ref.max(), rtol=1e-9)


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_outliers_do_not_depend_on_threads(fitted, n_jobs):
    y, _, _, _, res = fitted
    one = find_outliers(y, res, 1.0, min_replicates=7, n_jobs=1)
    many = find_outliers(y, res, 1.0, min_replicates=7, n_jobs=n_jobs)
    assert one.replace_obs.size >= 25
    for name in ("max_cooks", "max_cooks_kept", "count_at_max"):
        np.testing.assert_allclose(getattr(many, name), getattr(one, name), rtol=1e-12)
    np.testing.assert_array_equal(many.above, one.above)
    np.testing.assert_array_equal(many.n_above_max, one.n_above_max)
    # Same pairs in the same order (by observation, then feature).
    np.testing.assert_array_equal(many.replace_obs, one.replace_obs)
    np.testing.assert_array_equal(many.replace_feature, one.replace_feature)
    order = np.lexsort((one.replace_feature, one.replace_obs))
    np.testing.assert_array_equal(order, np.arange(order.size))
    full = max_cooks_distance(y, res, n_jobs=n_jobs)
    np.testing.assert_allclose(full, one.max_cooks, rtol=1e-12)


def test_bad_n_jobs_raises(fitted):
    y, _, _, _, res = fitted
    with pytest.raises(ValueError, match="`n_jobs` must be at least 1, but 0 was given"):
        find_outliers(y, res, 1.0, n_jobs=0)
    with pytest.raises(ValueError, match="`n_jobs` must be at least 1, but 0 was given"):
        max_cooks_distance(y, res, n_jobs=0)
