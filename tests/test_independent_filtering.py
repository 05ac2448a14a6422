"""Independent filtering (DESeq2's rule) against a brute-force reference and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control
from statsmodels.nonparametric.smoothers_lowess import lowess as sm_lowess

from batchglm.de.independent_filtering import independent_filtering, lowess


def test_lowess_matches_statsmodels():
    rng = np.random.default_rng(5)
    x = np.linspace(0.1, 0.95, 50)
    y = np.round(300 * np.sin(3 * x) + rng.normal(0, 15, 50))
    y[[4, 30]] += [400, -250]  # robustness weights must matter
    ref = sm_lowess(y, x, frac=0.2, it=3, delta=0.0, return_sorted=False)
    np.testing.assert_allclose(lowess(x, y, f=0.2), ref, rtol=1e-10, atol=1e-9)


def _simulated(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base_mean = np.exp(rng.uniform(-2, 8, n))
    base_mean[:200] = 0.0
    # Low-count features have no power: their p-values stay uniform.
    signal = (rng.uniform(size=n) < 0.2) & (base_mean > 5)
    p = rng.uniform(size=n)
    p[signal] = rng.beta(0.05, 5, signal.sum())
    p[:200] = np.nan
    return p, base_mean


def test_rejection_curve_and_choice_follow_deseq2_rule():
    p, base_mean = _simulated()
    out = independent_filtering(p, base_mean, alpha=0.1)
    theta = np.linspace(np.mean(base_mean == 0), 0.95, 50)
    np.testing.assert_allclose(out.num_rejections["theta"], theta)
    # Brute force: BH over the features at or above each quantile.
    counts = []
    for t in theta:
        keep = (base_mean >= np.quantile(base_mean, t)) & np.isfinite(p)
        counts.append(int((false_discovery_control(p[keep]) < 0.1).sum()))
    np.testing.assert_array_equal(out.num_rejections["numRej"], counts)
    curve = sm_lowess(
        np.asarray(counts, float), theta, frac=0.2, it=3, delta=0.0, return_sorted=False
    )
    resid = np.asarray(counts)[np.asarray(counts) > 0] - curve[np.asarray(counts) > 0]
    j = int(np.flatnonzero(np.asarray(counts) > curve.max() - np.sqrt(np.mean(resid**2)))[0])
    assert out.theta == pytest.approx(theta[j])
    assert out.threshold == pytest.approx(np.quantile(base_mean, theta[j]))
    assert j > 0  # low-count features were filtered here
    kept = (base_mean >= out.threshold) & np.isfinite(p)
    np.testing.assert_allclose(out.padj[kept], false_discovery_control(p[kept]), rtol=1e-12)
    assert np.isnan(out.padj[~kept]).all()
    np.testing.assert_array_equal(out.filtered, base_mean < out.threshold)


def test_few_rejections_filter_nothing():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=500)
    base_mean = np.exp(rng.uniform(0, 6, 500))
    out = independent_filtering(p, base_mean)
    assert out.num_rejections["numRej"].max() <= 10
    assert out.theta == 0.0 and not out.filtered.any()
    np.testing.assert_allclose(out.padj, false_discovery_control(p))


def test_errors():
    with pytest.raises(ValueError, match="must be 1-D of equal length"):
        independent_filtering(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(0, 1\), but 1.5"):
        independent_filtering(np.ones(3), np.ones(3), alpha=1.5)
