"""Normal family: derivatives, closed form against OLS, scale model against scipy.optimize."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import batchglm as bg
from batchglm.families import get_family

from reference import numerical_hessian

FAM = get_family("normal")
N_REF = 10  # features compared with the references


@pytest.fixture
def grid():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 50, size=200)
    el = rng.normal(0, 50, size=200)
    es = rng.uniform(np.log(1e-2), np.log(1e3), size=200)
    return y, el, es


def test_loglik_matches_scipy(grid):
    y, el, es = grid
    ref = stats.norm.logpdf(y, el, np.exp(es))
    np.testing.assert_allclose(FAM.loglik(y, el, es), ref, rtol=1e-12)


def test_derivatives_match_finite_differences(grid):
    y, el, es = grid
    h = 1e-6
    d = FAM.derivatives(y, el, es, 2)
    fd_l = (FAM.loglik(y, el + h, es) - FAM.loglik(y, el - h, es)) / (2 * h)
    fd_s = (FAM.loglik(y, el, es + h) - FAM.loglik(y, el, es - h)) / (2 * h)
    np.testing.assert_allclose(d.d_loc, fd_l, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d.d_scale, fd_s, rtol=1e-5, atol=1e-4)
    up_l, dn_l = FAM.derivatives(y, el + h, es, 2), FAM.derivatives(y, el - h, es, 2)
    up_s, dn_s = FAM.derivatives(y, el, es + h, 2), FAM.derivatives(y, el, es - h, 2)
    np.testing.assert_allclose(d.d2_loc, (up_l.d_loc - dn_l.d_loc) / (2 * h), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        d.d2_cross, (up_l.d_scale - dn_l.d_scale) / (2 * h), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        d.d2_cross, (up_s.d_loc - dn_s.d_loc) / (2 * h), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        d.d2_scale, (up_s.d_scale - dn_s.d_scale) / (2 * h), rtol=1e-5, atol=1e-4
    )


def test_sample_has_requested_moments():
    rng = np.random.default_rng(0)
    y = FAM.sample(rng, np.full(200_000, 3.0), np.full(200_000, np.log(2.0)))
    assert abs(y.mean() - 3.0) < 0.02
    assert abs(y.std() - 2.0) < 0.02


def test_non_finite_data_and_size_factors_are_errors():
    y = np.zeros((5, 2))
    dmat = np.ones((5, 1))
    y[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"must be finite.*inf at observation 4, feature 1"):
        bg.fit(y, dmat, family="normal")
    with pytest.raises(
        ValueError,
        match=r"'normal' has a identity link for the mean, so "
        r"`size_factors`.*must be None",
    ):
        bg.fit(np.zeros((5, 2)), dmat, size_factors=np.ones(5), family="normal")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n = 120
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2), rng.normal(size=n)])
    z = np.column_stack([np.ones(n), rng.uniform(-1, 1, size=n)])
    coef = np.column_stack([rng.uniform(1, 10, 20), rng.normal(0, 1, 20), rng.normal(0, 1, 20)])
    b = np.column_stack([np.log(rng.uniform(0.5, 2, 20)), rng.normal(0, 0.7, 20)])
    y_homo = x @ coef.T + rng.normal(size=(n, 20)) * np.exp(b[:, 0])
    y_het = x @ coef.T + rng.normal(size=(n, 20)) * np.exp(z @ b.T)
    return x, z, y_homo, y_het


def test_closed_form_matches_statsmodels_ols(data):
    x, _, y, _ = data
    res = bg.fit(y, x, family="normal")
    assert (res.status == "converged").all()
    assert (res.n_iter == 0).all()
    n, p = x.shape
    deficits = []
    for j in range(N_REF):
        ref = sm.OLS(y[:, j], x).fit()
        deficits.append(ref.llf - res.loglik.iloc[j])
        np.testing.assert_allclose(res.coef_loc.iloc[j], ref.params, rtol=1e-10, atol=1e-10)
        sd = np.sqrt(ref.ssr / n)
        assert res.coef_scale.iloc[j, 0] == pytest.approx(np.log(sd), abs=1e-12)
        # ML variance RSS/n instead of the unbiased RSS/(n - p) used by statsmodels' bse.
        np.testing.assert_allclose(res.se_loc.iloc[j], ref.bse * np.sqrt((n - p) / n), rtol=1e-8)
        assert res.se_scale.iloc[j, 0] == pytest.approx(np.sqrt(1 / (2 * n)), rel=1e-8)
    assert max(deficits) <= 1e-4


def test_closed_form_with_rescaled_intercept_and_constraints():
    # A constant scale column other than 1 and a constrained location design still take the
    # closed-form path and give the same model.
    rng = np.random.default_rng(3)
    dmat = np.column_stack([np.ones(40), np.repeat(np.eye(2), 20, axis=0)])
    cons = np.array([[0.0, -1.0, 1.0]])
    y = rng.normal(5, 1, size=(40, 4))
    res1 = bg.fit(y, dmat, constraints_loc=cons, family="normal")
    res2 = bg.fit(y, dmat, 2 * np.ones((40, 1)), constraints_loc=cons, family="normal")
    np.testing.assert_allclose(res1.coef_loc, res2.coef_loc, rtol=1e-12)
    np.testing.assert_allclose(res1.loglik, res2.loglik, rtol=1e-12)
    np.testing.assert_allclose(2 * res2.coef_scale, res1.coef_scale, rtol=1e-12)
    assert (res2.n_iter == 0).all()
    assert np.abs(res1.coef_loc.iloc[:, 1] + res1.coef_loc.iloc[:, 2]).max() < 1e-12


def _normal_ll(theta, y, x, z):
    k = x.shape[1]
    return stats.norm.logpdf(y, x @ theta[:k], np.exp(z @ theta[k:])).sum()


def test_scale_model_reaches_scipy_optimize(data):
    x, z, _, y = data
    res = bg.fit(y, x, z, family="normal")
    assert (res.status == "converged").all()
    assert (res.n_iter > 0).all()
    deficits = []
    for j in range(N_REF):
        start = np.concatenate([np.linalg.lstsq(x, y[:, j], rcond=None)[0], [0.0, 0.0]])
        ref = optimize.minimize(
            lambda t, j=j: -_normal_ll(t, y[:, j], x, z),
            start,
            method="BFGS",
            options={"gtol": 1e-8},
        )
        deficits.append(-ref.fun - res.loglik.iloc[j])
        ours = np.concatenate([res.coef_loc.iloc[j], res.coef_scale.iloc[j]])
        assert res.loglik.iloc[j] == pytest.approx(_normal_ll(ours, y[:, j], x, z), rel=1e-10)
        np.testing.assert_allclose(ours, ref.x, atol=1e-3)
    assert max(deficits) <= 1e-4


@pytest.mark.parametrize("scale_model", ["intercept", "design"])
def test_standard_errors_are_inverse_observed_information(data, scale_model):
    x, z, y_homo, y_het = data
    if scale_model == "intercept":
        z, y = np.ones((x.shape[0], 1)), y_homo
    else:
        y = y_het
    res = bg.fit(y[:, :3], x, z, family="normal")
    for j in range(3):
        theta = np.concatenate([res.coef_loc.iloc[j], res.coef_scale.iloc[j]])
        hess = numerical_hessian(lambda t, j=j: _normal_ll(t, y[:, j], x, z), theta)
        np.testing.assert_allclose(res.covariance()[j], np.linalg.inv(-hess), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("scale_model", ["intercept", "design"])
def test_constant_features_stop_at_the_sd_bound(scale_model):
    rng = np.random.default_rng(4)
    n = 30
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    z = None if scale_model == "intercept" else np.column_stack([np.ones(n), np.arange(n) % 2])
    y = np.column_stack([np.zeros(n), np.full(n, 7.5), rng.normal(size=n)])
    res = bg.fit(y, x, z, family="normal")
    assert list(res.status) == ["scale_at_bound", "scale_at_bound", "converged"]
    np.testing.assert_allclose(
        res.coef_loc.iloc[:2].to_numpy(), [[0.0, 0.0], [7.5, 0.0]], atol=1e-9
    )
    sd = (
        np.exp(z @ res.coef_scale.iloc[:2].to_numpy().T)
        if z is not None
        else np.exp(res.coef_scale.iloc[:2].to_numpy().T)
    )
    np.testing.assert_allclose(sd, 1e-10, rtol=1e-6)
    assert np.isfinite(res.loglik).all()
