"""Weighted group-level test of mixed-model features whose group variance is at 0."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from scipy import stats

from batchglm.mixed.weighted_group_test import weighted_group_statistic


def _layout(rng: np.random.Generator, n_feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two conditions of 4 groups each, unequal sampling variances, random log levels."""
    design = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    v = rng.uniform(0.005, 0.3, (8, n_feat))
    z = rng.normal(size=(8, n_feat)) * np.sqrt(0.1 + v)
    return design, z, v


def test_weighted_statistic_is_weighted_least_squares_with_known_variances() -> None:
    """Against statsmodels WLS with weights 1 / (tau^2 + v_g) and the scale fixed at 1."""
    rng = np.random.default_rng(7)
    design, z, v = _layout(rng, 6)
    s2 = rng.uniform(0.15, 0.5, 6)
    lmat = np.array([[0.0, 1.0]])
    quad, rank = weighted_group_statistic(design, lmat, z, v, s2)
    assert rank == 1
    for f in range(6):
        tau2 = max(s2[f] - v[:, f].mean(), 0.0)
        w = 1.0 / (tau2 + v[:, f])
        fit = sm.WLS(z[:, f], design, weights=w).fit(
            cov_type="fixed scale", cov_kwds={"scale": 1.0}
        )
        expected = fit.params[1] ** 2 / fit.cov_params()[1, 1]
        np.testing.assert_allclose(quad[f], expected, rtol=1e-10)


def test_equal_sampling_variances_give_the_unweighted_test() -> None:
    """Equal v_g: every weight is 1 / s2, the statistic the unweighted regression's."""
    rng = np.random.default_rng(8)
    design, z, _ = _layout(rng, 5)
    v = np.full(z.shape, 0.04)
    s2 = np.array([0.1, 0.2, 0.3, 0.04, 0.5])
    lmat = np.array([[0.0, 1.0]])
    quad, _ = weighted_group_statistic(design, lmat, z, v, s2)
    ols = [sm.OLS(z[:, f], design).fit() for f in range(5)]
    expected = [
        o.params[1] ** 2 / (s2[f] * o.normalized_cov_params[1, 1]) for f, o in enumerate(ols)
    ]
    np.testing.assert_allclose(quad, expected, rtol=1e-10)


def test_rank_deficient_design_with_containing_factors() -> None:
    """Intercept, condition and 4 batch indicators (rank 5 of 6): the contrast is estimable."""
    rng = np.random.default_rng(9)
    batch = np.tile(np.eye(4), (2, 1))
    design = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4), batch])
    v = rng.uniform(0.01, 0.2, (8, 3))
    z = rng.normal(size=(8, 3))
    s2 = np.full(3, 0.3)
    quad, rank = weighted_group_statistic(design, np.array([[0.0, 1.0, 0, 0, 0, 0]]), z, v, s2)
    assert rank == 1
    full_rank = np.column_stack([np.repeat([0.0, 1.0], 4), batch])
    for f in range(3):
        w = 1.0 / (max(s2[f] - v[:, f].mean(), 0.0) + v[:, f])
        fit = sm.WLS(z[:, f], full_rank, weights=w).fit(
            cov_type="fixed scale", cov_kwds={"scale": 1.0}
        )
        np.testing.assert_allclose(quad[f], fit.params[0] ** 2 / fit.cov_params()[0, 0], rtol=1e-8)


def test_calibration_and_power_against_closed_forms() -> None:
    """600/20/20/20-like sampling variances, known group-level variance: simulated nulls are
    rejected at the nominal rate and DE features at the closed-form power of the weighted
    estimator (noncentral chi-squared), which exceeds that of the unweighted one."""
    rng = np.random.default_rng(11)
    n_feat, tau2, effect = 20_000, 0.06, 0.5
    design = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    v = np.tile(np.array([0.002, 0.07, 0.07, 0.07])[:, None], (2, n_feat))
    total = tau2 + v
    s2 = tau2 + v.mean(axis=0)
    lmat = np.array([[0.0, 1.0]])
    noise = rng.normal(size=(8, n_feat)) * np.sqrt(total)
    crit = stats.chi2.isf(0.05, 1)
    null, _ = weighted_group_statistic(design, lmat, noise, v, s2)
    assert abs((null > crit).mean() - 0.05) < 0.0045  # 3 binomial SE
    de, _ = weighted_group_statistic(design, lmat, noise + effect * design[:, [1]], v, s2)
    # Closed forms: Var(b1) of weighted least squares, and of the unweighted contrast of means.
    w = 1.0 / total[:, 0]
    var_w = np.linalg.inv(design.T @ (w[:, None] * design))[1, 1]
    var_u = total[:4, 0].sum() / 16 + total[4:, 0].sum() / 16
    power_w = stats.ncx2.sf(crit, 1, effect**2 / var_w)
    power_u = stats.ncx2.sf(crit, 1, effect**2 / var_u)
    assert abs((de > crit).mean() - power_w) < 0.01
    assert power_w > power_u + 0.03  # 0.600 against 0.557
