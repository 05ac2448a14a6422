"""Poisson family: elementwise derivatives, domain errors, fits against statsmodels GLM."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

import batchglm as bg
from batchglm.families import get_family

from reference import numerical_hessian

FAM = get_family("poisson")
N_REF = 12  # features compared with statsmodels


@pytest.fixture
def grid():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 60, size=200).astype(float)
    y[:4] = [0, 1, 1000, 10**6]
    el = rng.uniform(np.log(1e-4), np.log(1e4), size=200)
    return y, el, np.zeros(200)


def test_loglik_matches_scipy(grid):
    y, el, es = grid
    ref = stats.poisson.logpmf(y, np.exp(el))
    np.testing.assert_allclose(FAM.loglik(y, el, es), ref, rtol=1e-12, atol=1e-9)


def test_derivatives_match_finite_differences(grid):
    y, el, es = grid
    h = 1e-6
    d = FAM.derivatives(y, el, es, 2)
    assert d.d_scale is None and d.d2_scale is None and d.d2_cross is None
    fd = (FAM.loglik(y, el + h, es) - FAM.loglik(y, el - h, es)) / (2 * h)
    np.testing.assert_allclose(d.d_loc, fd, rtol=1e-5, atol=1e-4)
    up, dn = FAM.derivatives(y, el + h, es, 2), FAM.derivatives(y, el - h, es, 2)
    np.testing.assert_allclose(d.d2_loc, (up.d_loc - dn.d_loc) / (2 * h), rtol=1e-5, atol=1e-4)


def test_sample_has_requested_moments():
    y = FAM.sample(np.random.default_rng(0), np.full(200_000, np.log(20.0)), np.zeros(200_000))
    assert np.all(y == np.floor(y))
    assert abs(y.mean() - 20.0) < 0.1
    assert abs(y.var() - 20.0) < 0.5


def test_domain_errors():
    y = np.ones((5, 3))
    dmat = np.ones((5, 1))
    bad = y.copy()
    bad[2, 1] = -1.0
    with pytest.raises(
        ValueError,
        match=r"'poisson' needs non-negative counts.*-1.0 at "
        r"observation 2, feature 1",
    ):
        bg.fit(bad, dmat, family="poisson")
    bad = y.copy()
    bad[3, 2] = 0.5
    with pytest.raises(
        ValueError,
        match=r"'poisson' needs integer counts.*0.5 at observation 3, "
        r"feature 2",
    ):
        bg.fit(bad, dmat, family="poisson")
    bad = y.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"must be finite.*nan at observation 1, feature 0"):
        bg.fit(bad, dmat, family="poisson")


def test_scale_design_is_an_error():
    y = np.ones((6, 2))
    dmat = np.ones((6, 1))
    with pytest.raises(ValueError, match=r"'poisson' has no scale parameter"):
        bg.fit(y, dmat, dmat, family="poisson")
    with pytest.raises(ValueError, match=r"'poisson' has no scale parameter"):
        bg.fit(y, dmat, constraints_scale=np.eye(1), family="poisson")


@pytest.fixture(scope="module")
def regression():
    """Non-saturated design with size factors: intercept, a group and a covariate."""
    rng = np.random.default_rng(5)
    n = 150
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2), rng.normal(size=n)])
    sf = rng.uniform(0.5, 2.0, size=n)
    coef = np.column_stack([rng.uniform(-1, 4, 30), rng.normal(0, 0.5, 30), rng.normal(0, 0.3, 30)])
    y = rng.poisson(sf[:, None] * np.exp(x @ coef.T)).astype(float)
    res = bg.fit(y, x, size_factors=sf, family="poisson")
    return x, sf, y, res


def test_fit_reaches_statsmodels_glm(regression):
    x, sf, y, res = regression
    assert res.converged.all()
    deficits = []
    for j in range(N_REF):
        ref = sm.GLM(y[:, j], x, family=sm.families.Poisson(), offset=np.log(sf)).fit(tol=1e-12)
        deficits.append(ref.llf - res.loglik.iloc[j])
        np.testing.assert_allclose(res.coef_loc.iloc[j], ref.params, atol=1e-6)
        # Canonical link: observed and expected information coincide.
        np.testing.assert_allclose(res.se_loc.iloc[j], ref.bse, rtol=1e-5)
    assert max(deficits) <= 1e-4


def test_standard_errors_are_inverse_observed_information(regression):
    x, sf, y, res = regression
    for j in range(3):

        def ll(a, j=j):
            return stats.poisson.logpmf(y[:, j], sf * np.exp(x @ a)).sum()

        hess = numerical_hessian(ll, res.coef_loc.iloc[j].to_numpy())
        cov = np.linalg.inv(-hess)
        np.testing.assert_allclose(res.covariance()[j], cov, rtol=1e-4, atol=1e-10)


def test_result_has_no_scale(regression):
    _, _, _, res = regression
    n_feat = res.coef_loc.shape[0]
    assert res.coef_scale.shape == (n_feat, 0)
    assert res.se_scale.shape == (n_feat, 0)
    assert res.covariance().shape == (n_feat, 3, 3)
    assert list(res.covariance(0).index.get_level_values("model")) == ["loc"] * 3
    assert "scale=[]" in repr(res)


def test_all_zero_and_separated_features_are_flagged():
    dmat = np.column_stack([np.ones(20), np.repeat([0.0, 1.0], 10)])
    y = np.zeros((20, 3))
    y[10:, 1] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    y[:, 2] = np.arange(20) % 4
    res = bg.fit(y, dmat, family="poisson")
    assert list(res.status) == ["all_zero", "separated", "converged"]
    assert np.isfinite(res.coef_loc.to_numpy()).all()
