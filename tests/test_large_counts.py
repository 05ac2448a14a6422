"""Counts of 1e7..1e10 (and normal values near 1e9) fit like any others.

Their log-likelihood sums terms of order 1e11 that cancel to a few hundred, so near the
optimum a Newton step's gain is below the sum's rounding noise. The stopping rule scales
with that noise: such features end ``converged`` with finite p-values, at the optimum that
scipy / statsmodels find independently.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, special
from statsmodels.othermod.betareg import BetaModel

import batchglm as bg
from batchglm.de import SmallSampleWarning
from batchglm.dispersion import cox_reid_scale

# These tests use few replicates on purpose (small designs for large counts); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

DTYPES = (np.int64, np.uint64, np.float64)


def _fit(*args: object, **kwargs: object) -> bg.FitResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence warning
        warnings.simplefilter("ignore", SmallSampleWarning)  # few df: documented
        return bg.fit(*args, **kwargs)


def _nb_score_log_r(t: float, y: np.ndarray, mu: np.ndarray) -> float:
    """d/d(log r) of the NB log-likelihood at fixed means (scipy's digamma)."""
    r = np.exp(t)
    terms = special.digamma(y + r) - special.digamma(r) - np.log1p(mu / r) + (mu - y) / (r + mu)
    return float(r * terms.sum())


@pytest.fixture(scope="module")
def two_groups():
    rng = np.random.default_rng(159)
    n, g = 8, 10
    group = np.repeat([0.0, 1.0], n // 2)
    base = 10 ** rng.uniform(7, 10, g)
    mean = base * (1 + group[:, None])
    y = rng.negative_binomial(20, 20 / (20 + mean))
    return np.column_stack([np.ones(n), group]), y


@pytest.mark.parametrize("dtype", DTYPES)
def test_nb_counts_above_int32_reach_the_reference_optimum(two_groups, dtype):
    x, y = two_groups
    assert y.max() > 2**32
    res = _fit(y.astype(dtype), x)
    assert (res.status == "converged").all()
    g = x[:, 1] == 1
    log_a, log_b = np.log(y[~g].mean(0)), np.log(y[g].mean(0))
    # A saturated two-group design: the location MLE is the log group mean, whatever r.
    np.testing.assert_allclose(
        res.coef_loc.to_numpy(), np.column_stack([log_a, log_b - log_a]), atol=1e-10
    )
    mu = np.where(g[:, None], np.exp(log_b), np.exp(log_a))
    for f in range(y.shape[1]):
        ref = optimize.brentq(
            _nb_score_log_r, 0.0, 10.0, args=(y[:, f].astype(float), mu[:, f]), xtol=1e-12
        )
        assert res.coef_scale.iloc[f, 0] == pytest.approx(ref, abs=1e-6)
    assert np.isfinite(np.asarray(bg.de.wald(res, coef="p1").pval)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SmallSampleWarning)  # few df: documented
        lrt = bg.de.lrt(y.astype(dtype), full_loc=x, reduced_loc=x[:, :1])
    assert np.isfinite(np.asarray(lrt.pval)).all()
    assert np.asarray(lrt.converged).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisson_counts_up_to_1e10_match_statsmodels(dtype):
    rng = np.random.default_rng(3)
    n, g = 20, 5
    x = np.column_stack([np.ones(n), rng.uniform(-1, 1, n)])
    y = rng.poisson(10 ** rng.uniform(7, 10, g) * np.exp(0.3 * x[:, [1]]))
    res = _fit(y.astype(dtype), x, family="poisson")
    assert (res.status == "converged").all()
    for f in range(g):
        ref = sm.GLM(y[:, f].astype(float), x, family=sm.families.Poisson()).fit(tol=1e-14)
        np.testing.assert_allclose(res.coef_loc.iloc[f], ref.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.se_loc.iloc[f], ref.bse, rtol=1e-6)
    assert np.isfinite(np.asarray(bg.de.wald(res, coef="p1").pval)).all()


def _nb_scores(theta: np.ndarray, y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Gradient of the NB log-likelihood in (location, log-r coefficients), with scipy."""
    k = x.shape[1]
    mu, r = np.exp(x @ theta[:k]), np.exp(z @ theta[k:])
    d_loc = (y - mu) * r / (r + mu)
    d_scale = r * (
        special.digamma(y + r) - special.digamma(r) - np.log1p(mu / r) + (mu - y) / (r + mu)
    )
    return np.concatenate([x.T @ d_loc, z.T @ d_scale])


def test_nb_scale_covariate_with_counts_up_to_1e10():
    rng = np.random.default_rng(4)
    n, g = 40, 4
    x = np.column_stack([np.ones(n), rng.uniform(-1, 1, n)])
    mean = 10 ** rng.uniform(8, 10, g) * np.exp(0.4 * x[:, [1]])
    r = np.exp(3.0 + 0.5 * x[:, [1]])
    y = rng.negative_binomial(r, r / (r + mean)).astype(np.int64)
    res = _fit(y, x, x)
    assert (res.status == "converged").all()
    for f in range(g):
        yf = y[:, f].astype(float)
        start = np.concatenate([np.linalg.lstsq(x, np.log(yf), rcond=None)[0], [3.0, 0.0]])
        ref = optimize.root(_nb_scores, start, args=(yf, x, x), tol=1e-13)
        assert ref.success
        ours = np.concatenate([res.coef_loc.iloc[f], res.coef_scale.iloc[f]])
        np.testing.assert_allclose(ours, ref.x, atol=1e-6)
    assert np.isfinite(np.asarray(bg.de.wald(res, coef="p1", model="scale").pval)).all()


def _normal_scores(theta: np.ndarray, y: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    resid, sd = y - x @ theta[:k], np.exp(z @ theta[k:])
    return np.concatenate([x.T @ (resid / sd**2), z.T @ ((resid / sd) ** 2 - 1.0)])


def test_normal_values_near_1e9():
    rng = np.random.default_rng(6)
    n, g = 30, 4
    x = np.column_stack([np.ones(n), rng.uniform(-1, 1, n)])
    sd = np.exp(0.5 * x[:, [1]]) * 10 ** rng.uniform(-1, 3, g)
    y = 1e9 + 5.0 * x[:, [1]] + sd * rng.normal(size=(n, g))
    res = _fit(y, x, x, family="normal")  # scale covariate: Newton
    closed = _fit(y, x, family="normal")  # intercept-only scale: least squares
    assert (res.status == "converged").all() and (closed.status == "converged").all()
    for f in range(g):
        centred = y[:, f] - 1e9  # exact for values near 1e9
        ols = sm.OLS(centred, x).fit()
        start = np.concatenate([ols.params, [np.log(np.std(ols.resid)), 0.0]])
        ref = optimize.root(_normal_scores, start, args=(centred, x, x), tol=1e-13)
        assert ref.success
        ours = np.concatenate([res.coef_loc.iloc[f], res.coef_scale.iloc[f]])
        ours[0] -= 1e9
        np.testing.assert_allclose(ours, ref.x, atol=1e-6 * (1 + sd[:, f].max()))
        # Values near 1e9 carry rounding of 1e-7 each; least squares inherits it.
        got = closed.coef_loc.iloc[f].to_numpy() - [1e9, 0.0]
        np.testing.assert_allclose(got, ols.params, atol=1e-6)


def test_beta_with_precision_near_1e5():
    rng = np.random.default_rng(8)
    n, g = 200, 3
    x = np.column_stack([np.ones(n), rng.uniform(-1, 1, n)])
    m = 1 / (1 + np.exp(-(0.3 + 0.4 * x[:, [1]])))
    phi = np.exp(np.log(10 ** rng.uniform(4, 5, g)) + 0.3 * x[:, [1]])
    y = rng.beta(m * phi, (1 - m) * phi)
    res = _fit(y, x, x, family="beta")
    assert (res.status == "converged").all()
    for f in range(g):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = BetaModel(y[:, f], x, exog_precision=x).fit(method="newton", disp=0)
        ours = np.concatenate([res.coef_loc.iloc[f], res.coef_scale.iloc[f]])
        np.testing.assert_allclose(ours, ref.params, rtol=1e-6, atol=1e-8)


def _apl_score_log_r(t: float, y: np.ndarray, mu: np.ndarray) -> float:
    """d/d(log r) of the Cox-Reid APL of one group (intercept design): score - d log sum W / 2."""
    r = np.exp(t)
    w = mu * r / (mu + r)
    dw = r * mu**2 / (mu + r) ** 2
    return _nb_score_log_r(t, y, mu) - 0.5 * dw.sum() / w.sum()


def test_cox_reid_group_dispersions_with_counts_above_int32(two_groups):
    x, y = two_groups
    g = x[:, 1] == 1
    yf = y.astype(float)
    mu = np.where(g[:, None], yf[g].mean(0), yf[~g].mean(0))
    # log r = b0 + b1 * group; with a two-group location design the APL splits by group.
    sol = cox_reid_scale(yf, mu, x, x)
    assert (sol.status == bg.Status.CONVERGED).all()
    for f in range(y.shape[1]):
        for grp, t in ((~g, sol.b[f, 0]), (g, sol.b[f, 0] + sol.b[f, 1])):
            ref = optimize.brentq(
                _apl_score_log_r, 0.0, 10.0, args=(yf[grp, f], mu[grp, f]), xtol=1e-12
            )
            assert t == pytest.approx(ref, abs=1e-6)
