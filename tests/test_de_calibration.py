"""Calibration, power and false discoveries of the tests on simulated NB data.

The data are drawn here with numpy (not ``bg.simulate``) so that which features carry an
effect, and how large it is, is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import batchglm as bg

N_OBS = 200


def _design() -> np.ndarray:
    cond = np.tile([0.0, 1.0], N_OBS // 2)
    return np.column_stack([np.ones(N_OBS), cond])


def _draw(seed, n_features, mean_range, loc_effect=None, scale_effect=None):
    rng = np.random.default_rng(seed)
    x = _design()
    mu = np.exp(rng.uniform(*np.log(mean_range), n_features))
    r = np.exp(rng.uniform(np.log(1.0), np.log(20.0), n_features))
    sf = np.exp(rng.normal(0.0, 0.2, N_OBS))
    zero = np.zeros(n_features)
    lfc = zero if loc_effect is None else loc_effect
    sfc = zero if scale_effect is None else scale_effect
    m = sf[:, None] * mu[None, :] * np.exp(np.outer(x[:, 1], lfc))
    size = r[None, :] * np.exp(np.outer(x[:, 1], sfc))
    y = rng.negative_binomial(size, size / (size + m)).astype(float)
    return y, x, sf


def _ks(p):
    p = p[np.isfinite(p)]
    return stats.kstest(p, "uniform").pvalue


@pytest.fixture(scope="module")
def null_tests():
    y, x, sf = _draw(0, 1000, (5.0, 500.0))
    full = bg.fit(y, x, size_factors=sf)
    wald = bg.de.wald(full, coef="p1")
    lrt = bg.de.lrt(full=full, reduced=bg.fit(y, x[:, :1], size_factors=sf))
    scale = bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf)
    return wald, lrt, scale


@pytest.mark.parametrize("which", ["wald", "lrt", "scale_lrt"])
def test_null_pvalues_are_uniform(null_tests, which):
    de = dict(zip(["wald", "lrt", "scale_lrt"], null_tests, strict=True))[which]
    assert np.isfinite(de.pval).sum() >= 990
    assert _ks(de.pval) > 0.01
    assert 0.03 < np.nanmean(de.pval < 0.05) < 0.07
    assert np.nanmean(de.qval < 0.05) < 0.01


def test_null_location_tests_at_low_counts():
    # Means 0.5..5: many zeros and some under-dispersed features (r on its bound).
    y, x, sf = _draw(1, 1000, (0.5, 5.0))
    full = bg.fit(y, x, size_factors=sf)
    wald = bg.de.wald(full, coef="p1")
    lrt = bg.de.lrt(full=full, reduced=bg.fit(y, x[:, :1], size_factors=sf))
    assert _ks(wald.pval) > 0.01 and _ks(lrt.pval) > 0.01


@pytest.fixture(scope="module")
def effect_tests():
    rng = np.random.default_rng(2)
    n_features = 2000
    loc = np.zeros(n_features)
    loc[:200] = rng.choice([-1.0, 1.0], 200) * rng.uniform(0.4, 1.2, 200) * np.log(2.0)
    scale = np.zeros(n_features)
    scale[1000:1200] = rng.choice([-1.0, 1.0], 200) * np.log(4.0)
    y, x, sf = _draw(3, n_features, (5.0, 500.0), loc, scale)
    full = bg.fit(y, x, size_factors=sf)
    wald = bg.de.wald(full, coef="p1")
    lrt = bg.de.lrt(full=full, reduced=bg.fit(y, x[:, :1], size_factors=sf))
    scale_lrt = bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf)
    return {"wald": (wald, loc != 0), "lrt": (lrt, loc != 0), "scale_lrt": (scale_lrt, scale != 0)}


@pytest.mark.parametrize("which", ["wald", "lrt", "scale_lrt"])
def test_power_and_false_discoveries(effect_tests, which):
    de, truth = effect_tests[which]
    hit = de.qval < 0.05
    power = hit[truth].mean()
    fdp = (hit & ~truth).sum() / hit.sum()
    assert power > 0.85
    assert fdp < 0.1
    # Null features stay uniform in the presence of effects elsewhere.
    assert _ks(de.pval[~truth]) > 0.01


def test_wald_and_lrt_rank_agree(effect_tests):
    wald, _ = effect_tests["wald"]
    lrt, _ = effect_tests["lrt"]
    assert stats.spearmanr(wald.pval, lrt.pval).statistic > 0.995
    np.testing.assert_allclose(wald.log2fc, lrt.log2fc)
