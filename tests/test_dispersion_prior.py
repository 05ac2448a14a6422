"""DESeq2's dispersion trend and prior variance, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from batchglm.dispersion.shrinkage import kl_prior_variance, prior_variance
from batchglm.dispersion.trend import _gamma_identity_fit, fit_trend


def _gamma_deviance(coef: np.ndarray, inv_mean: np.ndarray, alpha: np.ndarray) -> float:
    fitted = coef[0] + coef[1] * inv_mean
    if np.any(fitted <= 0):
        return np.inf
    return float(2.0 * np.sum((alpha - fitted) / fitted - np.log(alpha / fitted)))


def test_parametric_trend_halves_steps_that_leave_the_valid_region():
    # A tiny asymptote (as on real data, e.g. 1.4e-4 on Marioni et al.): the first IRLS step
    # from DESeq2's start (0.1, 1) makes fitted values negative; R's glm.fit halves it.
    rng = np.random.default_rng(3)
    mean = np.exp(rng.uniform(np.log(0.5), np.log(2e5), 4000))
    alpha = (1e-4 + 0.5 / mean) * rng.gamma(1.0, 1.0, mean.size)
    inv = 1.0 / mean
    start = np.array([0.1, 1.0])
    design = np.column_stack([np.ones_like(inv), inv])
    w = 1.0 / (design @ start) ** 2
    plain = np.linalg.solve(design.T @ (design * w[:, None]), design.T @ (w * alpha))
    assert np.any(design @ plain <= 0)  # the unhalved step is invalid
    got = _gamma_identity_fit(inv, alpha, start)
    assert got is not None
    best = optimize.minimize(
        _gamma_deviance,
        x0=[2e-4, 0.4],
        args=(inv, alpha),
        method="Nelder-Mead",
        options={"xatol": 1e-12, "fatol": 1e-12, "maxiter": 20000},
    )
    np.testing.assert_allclose(got, best.x, rtol=1e-4)
    trend = fit_trend(mean, alpha)
    assert trend.kind == "parametric"
    np.testing.assert_allclose(trend.coef, (1e-4, 0.5), rtol=0.3)


def test_kl_prior_variance_recovers_the_variance_it_was_drawn_with():
    # Residuals log(chi2_k / k) + N(0, v): the KL-closest v is the true one.
    rng = np.random.default_rng(11)
    for df, v in [(1, 0.5), (2, 1.2), (3, 0.3)]:
        n = 100_000
        resid = np.log(rng.chisquare(df, n) / df) + rng.normal(0.0, np.sqrt(v), n)
        assert kl_prior_variance(resid, df) == pytest.approx(v, abs=0.06)


def test_prior_variance_uses_kl_matching_up_to_three_residual_df():
    rng = np.random.default_rng(12)
    resid = np.log(rng.chisquare(2, 50_000) / 2) + rng.normal(0.0, 1.0, 50_000)
    pv, _ = prior_variance(resid, np.zeros(resid.size), 2)
    assert pv == pytest.approx(1.0, abs=0.08)
    with pytest.raises(ValueError, match=r"residual log dispersions in \(-10, 10\)"):
        kl_prior_variance(np.full(3, 20.0), 2)
