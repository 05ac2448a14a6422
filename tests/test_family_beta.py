"""Beta family: derivatives, domain errors, fits against statsmodels' BetaModel."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import special, stats
from statsmodels.othermod.betareg import BetaModel

import batchglm as bg
from batchglm.families import get_family

from reference import numerical_hessian

FAM = get_family("beta")
N_REF = 8  # features compared with statsmodels


def _beta_logpdf(y, mu, phi):
    return stats.beta.logpdf(y, mu * phi, (1 - mu) * phi)


@pytest.fixture
def grid():
    rng = np.random.default_rng(3)
    y = rng.uniform(1e-4, 1 - 1e-4, size=200)
    y[:3] = [1e-8, 0.5, 1 - 1e-8]
    el = rng.uniform(-7, 7, size=200)
    es = rng.uniform(np.log(0.05), np.log(1e5), size=200)
    return y, el, es


def test_loglik_matches_scipy(grid):
    y, el, es = grid
    ref = _beta_logpdf(y, special.expit(el), np.exp(es))
    np.testing.assert_allclose(FAM.loglik(y, el, es), ref, rtol=1e-9, atol=1e-8)


def test_derivatives_match_finite_differences(grid):
    y, el, es = grid
    h = 1e-6
    d = FAM.derivatives(y, el, es, 2)
    fd_l = (FAM.loglik(y, el + h, es) - FAM.loglik(y, el - h, es)) / (2 * h)
    fd_s = (FAM.loglik(y, el, es + h) - FAM.loglik(y, el, es - h)) / (2 * h)
    # Finite differences of terms of size phi * log(y) lose about 1e-16 * |ll| / h.
    tol = {"rtol": 1e-5, "atol": 1e-4 + 1e-9 * np.abs(FAM.loglik(y, el, es)).max()}
    np.testing.assert_allclose(d.d_loc, fd_l, **tol)
    np.testing.assert_allclose(d.d_scale, fd_s, **tol)
    up_l, dn_l = FAM.derivatives(y, el + h, es, 2), FAM.derivatives(y, el - h, es, 2)
    up_s, dn_s = FAM.derivatives(y, el, es + h, 2), FAM.derivatives(y, el, es - h, 2)
    np.testing.assert_allclose(d.d2_loc, (up_l.d_loc - dn_l.d_loc) / (2 * h), **tol)
    np.testing.assert_allclose(d.d2_cross, (up_l.d_scale - dn_l.d_scale) / (2 * h), **tol)
    np.testing.assert_allclose(d.d2_cross, (up_s.d_loc - dn_s.d_loc) / (2 * h), **tol)
    np.testing.assert_allclose(d.d2_scale, (up_s.d_scale - dn_s.d_scale) / (2 * h), **tol)


def test_sample_has_requested_moments():
    rng = np.random.default_rng(0)
    mu, phi = 0.3, 20.0
    y = FAM.sample(rng, np.full(200_000, special.logit(mu)), np.full(200_000, np.log(phi)))
    assert np.all((y > 0) & (y < 1))
    assert abs(y.mean() - mu) < 0.002
    assert abs(y.var() - mu * (1 - mu) / (1 + phi)) < 2e-4


def test_sample_stays_inside_the_unit_interval():
    # Tiny precision puts nearly all mass at 0 and 1, where draws round to the boundary.
    y = FAM.sample(np.random.default_rng(1), np.zeros(10_000), np.full(10_000, np.log(1e-3)))
    assert np.all((y > 0) & (y < 1))


@pytest.mark.parametrize(
    ("value", "shown"), [(0.0, "0.0"), (1.0, "1.0"), (1.5, "1.5"), (-0.25, "-0.25")]
)
def test_values_outside_the_open_unit_interval_are_errors(value, shown):
    y = np.full((6, 3), 0.5)
    y[4, 2] = value
    with pytest.raises(
        ValueError,
        match=rf"'beta' needs values strictly between 0 and 1, but "
        rf"`data` has 1 values at or outside 0 and 1; the first "
        rf"is {shown} at observation 4, feature 2",
    ):
        bg.fit(y, np.ones((6, 1)), family="beta")


def test_nan_and_size_factors_are_errors():
    y = np.full((6, 3), 0.5)
    y[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"must be finite.*nan at observation 0, feature 1"):
        bg.fit(y, np.ones((6, 1)), family="beta")
    with pytest.raises(
        ValueError,
        match=r"'beta' has a logit link for the mean, so "
        r"`size_factors`.*must be None",
    ):
        bg.fit(np.full((6, 3), 0.5), np.ones((6, 1)), size_factors=np.ones(6), family="beta")


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(8)
    n = 150
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2), rng.normal(size=n)])
    z = np.column_stack([np.ones(n), rng.uniform(-1, 1, size=n)])
    a = np.column_stack([rng.uniform(-2, 2, 20), rng.normal(0, 0.5, 20), rng.normal(0, 0.5, 20)])
    b = np.column_stack([np.log(rng.uniform(5, 100, 20)), rng.normal(0, 0.7, 20)])
    y = FAM.sample(rng, x @ a.T, z @ b.T)
    res = bg.fit(y, x, z, family="beta")
    return x, z, y, res


def _ll(theta, y, x, z):
    k = x.shape[1]
    return _beta_logpdf(y, special.expit(x @ theta[:k]), np.exp(z @ theta[k:])).sum()


def test_fit_reaches_statsmodels_beta_model(regression):
    x, z, y, res = regression
    assert (res.status == "converged").all()
    deficits = []
    for j in range(N_REF):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = BetaModel(y[:, j], x, exog_precision=z).fit(disp=0)
        deficits.append(ref.llf - res.loglik.iloc[j])
        ours = np.concatenate([res.coef_loc.iloc[j], res.coef_scale.iloc[j]])
        assert res.loglik.iloc[j] == pytest.approx(_ll(ours, y[:, j], x, z), rel=1e-10)
        np.testing.assert_allclose(ours, ref.params, atol=1e-4)
    assert max(deficits) <= 1e-4


def test_standard_errors_are_inverse_observed_information(regression):
    x, z, y, res = regression
    for j in range(3):
        theta = np.concatenate([res.coef_loc.iloc[j], res.coef_scale.iloc[j]])
        hess = numerical_hessian(lambda t, j=j: _ll(t, y[:, j], x, z), theta)
        np.testing.assert_allclose(res.covariance()[j], np.linalg.inv(-hess), rtol=1e-4, atol=1e-9)
