"""Cook's distances (DESeq2's definition) against statsmodels fits and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

import batchglm as bg
from batchglm.de.cooks import (
    cooks_distance,
    default_cutoff,
    design_cells,
    find_outliers,
    robust_dispersion,
)


def _robust_alpha(normed: np.ndarray, groups: np.ndarray) -> float:
    """DESeq2's robustMethodOfMomentsDisp for one feature, written with scipy.stats."""
    variances = []
    for g in np.unique(groups):
        v = normed[groups == g]
        if v.size < 3:
            continue
        trim, scale = (
            (1 / 3, 2.04) if v.size <= 3 else (1 / 4, 1.86) if v.size <= 23 else (1 / 8, 1.51)
        )
        centre = stats.trim_mean(v, trim)
        variances.append(scale * stats.trim_mean((v - centre) ** 2, trim))
    m = normed.mean()
    return max((max(variances) - m) / m**2, 0.04)


@pytest.fixture(scope="module")
def two_groups():
    rng = np.random.default_rng(11)
    groups = np.repeat([0, 1], [5, 4])
    sf = rng.uniform(0.6, 1.6, 9)
    mu = (
        sf[:, None]
        * np.exp(rng.uniform(1.5, 5, 12))[None, :]
        * np.where(groups[:, None] == 1, 2.0, 1.0)
    )
    y = rng.negative_binomial(8, 8 / (8 + mu)).astype(float)
    y[2, 3] = 40 * y[:, 3].max() + 50  # one wild count
    x = np.column_stack([np.ones(9), groups])
    return y, x, sf, groups


def test_cooks_distance_matches_statsmodels_fit_and_weights(two_groups):
    y, x, sf, groups = two_groups
    res = bg.fit(y, x, size_factors=sf)
    cooks = cooks_distance(y, res).to_numpy()
    alpha_fit = np.exp(-res.coef_scale.to_numpy()[:, 0])
    for j in range(y.shape[1]):  # reference, feature by feature
        family = sm.families.NegativeBinomial(alpha=alpha_fit[j])
        fitted = sm.GLM(y[:, j], x, family=family, offset=np.log(sf)).fit(tol=1e-12)
        mu = fitted.mu
        # Hat values of the weighted design, written out densely per feature.
        sw = np.sqrt(family.weights(mu))
        xw = sw[:, None] * x
        h = np.diag(xw @ np.linalg.inv(xw.T @ xw) @ xw.T)
        # DESeq2's robust dispersion, at the size factors scaled to geometric mean 1.
        a = _robust_alpha(y[:, j] / (sf / np.exp(np.mean(np.log(sf)))), groups)
        ref = (y[:, j] - mu) ** 2 / (mu + a * mu**2) * h / (2 * (1 - h) ** 2)
        np.testing.assert_allclose(cooks[:, j], ref, rtol=1e-5)
    assert np.argmax(cooks[:, 3]) == 2
    assert cooks[2, 3] > default_cutoff(9, 2)


def test_robust_dispersion_uses_the_largest_cell_variance():
    rng = np.random.default_rng(2)
    normed = rng.gamma(2.0, 20.0, size=(30, 5))
    normed[:, 4] = 0.0
    cells = np.repeat([0, 1, 2], [3, 25, 2])  # the last cell is too small to count
    got = robust_dispersion(normed, cells)
    for j in range(4):
        assert got[j] == pytest.approx(_robust_alpha(normed[:, j], cells), rel=1e-12)
    assert np.isnan(got[4])


def test_design_cells_and_default_cutoff():
    x = np.array([[1, 0], [1, 1], [1, 0], [1, 1.0]])
    np.testing.assert_array_equal(design_cells(x), [0, 1, 0, 1])
    assert default_cutoff(12, 2) == pytest.approx(stats.f.ppf(0.99, 2, 10))
    assert default_cutoff(2, 2) == np.inf


def test_find_outliers_summaries(two_groups):
    y, x, sf, _ = two_groups
    res = bg.fit(y, x, size_factors=sf)
    cooks = cooks_distance(y, res).to_numpy()
    cutoff = default_cutoff(9, 2)
    out = find_outliers(y, res, cutoff, min_replicates=5)
    np.testing.assert_allclose(out.max_cooks, cooks.max(axis=0), rtol=1e-12)
    # Only the 5-observation group is replaceable at min_replicates=5.
    np.testing.assert_array_equal(out.replaceable, np.arange(9) < 5)
    np.testing.assert_allclose(out.max_cooks_kept, cooks[5:].max(axis=0), rtol=1e-12)
    hits = set(zip(out.replace_obs.tolist(), out.replace_feature.tolist(), strict=True))
    expected = {(i, j) for i, j in zip(*np.nonzero(cooks > cutoff), strict=True) if i < 5}
    assert hits == expected and (2, 3) in hits
    assert out.count_at_max[3] == y[2, 3] and out.n_above_max[3] == 0


def test_cooks_need_a_count_family():
    rng = np.random.default_rng(0)
    res = bg.fit(rng.normal(size=(8, 2)), np.ones((8, 1)), family="normal")
    with pytest.raises(ValueError, match="Cook's distances need an NB or Poisson fit"):
        cooks_distance(np.zeros((8, 2)), res)
