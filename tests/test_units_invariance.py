"""Inference does not depend on the units of a covariate.

Rescaling one design column (location or scale) by ``c`` in ``{1e-8, 1e8}`` divides that
coefficient and its standard error by ``c`` and changes nothing else: other coefficients,
standard errors, log-likelihoods and every p-value (MLE, MAP and quasi-likelihood paths)
stay put, and p-values agree with statsmodels on the unscaled design.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.othermod.betareg import BetaModel

import batchglm as bg
from batchglm.de import SmallSampleWarning
from batchglm.solvers.linalg import inverse_negative, lstsq_columns, newton_direction

FACTORS = (1e-8, 1e8)
N, G = 36, 4
NAMES = ["Intercept", "depth", "treated"]


def _design(rng: np.random.Generator) -> np.ndarray:
    depth = rng.uniform(0.2, 1.0, N)  # e.g. library size / 1e8
    treated = np.repeat([0.0, 1.0], N // 2)
    return np.column_stack([np.ones(N), depth, treated])


def _rescaled(x: np.ndarray, j: int, c: float) -> np.ndarray:
    out = x.copy()
    out[:, j] *= c
    return out


def _fit(*args: object, **kwargs: object) -> bg.FitResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence warning on any scale
        warnings.simplefilter("ignore", SmallSampleWarning)  # few df: documented
        return bg.fit(*args, **kwargs)


def _pvals(res: bg.FitResult, model: str = "loc") -> np.ndarray:
    names = res.coef_loc.columns if model == "loc" else res.coef_scale.columns
    return np.column_stack(
        [np.asarray(bg.de.wald(res, coef=name, model=model).pval) for name in names]
    )


def _assert_rescaled(ref: bg.FitResult, got: bg.FitResult, model: str, j: int, c: float) -> None:
    """``got`` is ``ref`` with column ``j`` of ``model``'s design multiplied by ``c``."""
    factor = np.ones(ref.coef_loc.shape[1] if model == "loc" else ref.coef_scale.shape[1])
    factor[j] = c
    for attr in ("coef_loc", "se_loc", "coef_scale", "se_scale"):
        want = getattr(ref, attr).to_numpy()
        have = getattr(got, attr).to_numpy()
        if attr.endswith(model):
            have = have * factor
        np.testing.assert_allclose(have, want, rtol=1e-8, atol=1e-12, err_msg=attr)
    np.testing.assert_allclose(got.loglik, ref.loglik, rtol=1e-12)
    # The solver takes the same path: starting values, steps and stopping are unit-free.
    np.testing.assert_array_equal(got.n_iter, ref.n_iter)
    for part in ("loc", "scale") if ref.coef_scale.shape[1] else ("loc",):
        np.testing.assert_allclose(_pvals(got, part), _pvals(ref, part), rtol=1e-8, atol=1e-12)
    # A joint (2-df) Wald test solves with the whole covariance block.
    np.testing.assert_allclose(
        np.asarray(bg.de.wald(got, coef=[1, 2]).pval),
        np.asarray(bg.de.wald(ref, coef=[1, 2]).pval),
        rtol=1e-8,
    )


# --- linear algebra --------------------------------------------------------------------

SCALES = np.array([1e8, 1.0, 1e-8, 3e5])


def _spd(rng: np.random.Generator, k: int = 4) -> np.ndarray:
    a = rng.normal(size=(k, k))
    return a @ a.T + k * np.eye(k)


def test_covariance_undoes_any_column_scaling():
    rng = np.random.default_rng(0)
    info = _spd(rng)  # information in unit coefficients, well conditioned
    scaled = info * np.outer(SCALES, SCALES)  # coefficients measured in other units
    cov = inverse_negative(-scaled[None])[0]
    np.testing.assert_allclose(cov * np.outer(SCALES, SCALES), np.linalg.inv(info), rtol=1e-10)


def test_newton_direction_undoes_any_column_scaling():
    rng = np.random.default_rng(1)
    info = _spd(rng)
    grad = rng.normal(size=4)
    scaled = info * np.outer(SCALES, SCALES)
    direction, modified = newton_direction((grad * SCALES)[None], -scaled[None])
    assert not modified[0]
    np.testing.assert_allclose(direction[0] * SCALES, np.linalg.solve(info, grad), rtol=1e-10)


def test_unidentified_direction_gets_huge_variance_only_along_itself():
    # Columns 1 and 2 add up to column 0 (in their own units): one direction is flat.
    rng = np.random.default_rng(2)
    g = np.repeat([0.0, 1.0], 10)
    x_unit = np.column_stack([np.ones(20), g, 1.0 - g, rng.normal(size=20)])
    info_unit = x_unit.T @ x_unit
    x = x_unit * SCALES
    cov = inverse_negative(-(x.T @ x)[None])[0]
    null = np.array([1.0, -1.0, -1.0, 0.0]) / SCALES  # x @ null == 0 (theta = theta_unit / S)
    assert null @ cov @ null / (null @ null) > 1e10
    # Identifiable contrasts (orthogonal to the flat direction) keep their variances. The
    # quadratic form cancels entries of order 1e14 (the floored direction) down to order 1,
    # which costs about 1e14 * eps of precision.
    pinv_unit = np.linalg.pinv(info_unit)
    for c_unit in ([0.0, 1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.5]):
        c = np.asarray(c_unit) * SCALES  # the same contrast of the scaled coefficients
        assert c @ cov @ c == pytest.approx(np.asarray(c_unit) @ pinv_unit @ c_unit, rel=1e-2)


def test_least_squares_keeps_columns_of_any_units():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 4)) * SCALES
    truth = rng.normal(size=4) / SCALES
    np.testing.assert_allclose(lstsq_columns(a, a @ truth), truth, rtol=1e-9)
    np.testing.assert_allclose(
        lstsq_columns(a, np.column_stack([a @ truth, 2 * a @ truth])),
        np.column_stack([truth, 2 * truth]),
        rtol=1e-9,
    )


# --- negative binomial -----------------------------------------------------------------


@pytest.fixture(scope="module")
def nb():
    rng = np.random.default_rng(5)
    x = _design(rng)
    eta = 2.5 + np.outer(x[:, 1], rng.normal(0, 0.4, G)) + np.outer(x[:, 2], [0.1, 0.3, -0.2, 0.5])
    mu = np.exp(eta)
    y = rng.negative_binomial(6, 6 / (6 + mu)).astype(float)
    return x, y, _fit(y, x)


@pytest.mark.parametrize("c", FACTORS)
@pytest.mark.parametrize("j", [0, 1, 2])
def test_nb_location_column_units(nb, j, c):
    x, y, ref = nb
    _assert_rescaled(ref, _fit(y, _rescaled(x, j, c)), "loc", j, c)


@pytest.mark.parametrize("c", FACTORS)
def test_nb_wald_pvalues_match_statsmodels_on_any_scale(nb, c):
    x, y, _ = nb
    got = _pvals(_fit(y, _rescaled(x, 1, c)))
    for f in range(G):
        ref = sm.NegativeBinomial(y[:, f], x).fit(method="newton", maxiter=100, disp=0)
        assert ref.mle_retvals["converged"]
        np.testing.assert_allclose(got[f], ref.pvalues[:3], atol=1e-6)


@pytest.mark.parametrize("c", FACTORS)
@pytest.mark.parametrize("j", [0, 1])
def test_nb_scale_column_units(nb, j, c):
    x, y, _ = nb
    z = x[:, :2]
    ref = _fit(y, x, z)
    _assert_rescaled(ref, _fit(y, x, _rescaled(z, j, c)), "scale", j, c)


# --- other families --------------------------------------------------------------------


@pytest.mark.parametrize("c", FACTORS)
def test_poisson_location_units_and_statsmodels(c):
    rng = np.random.default_rng(7)
    x = _design(rng)
    y = rng.poisson(np.exp(1.5 + 0.3 * x[:, [1]] + 0.15 * x[:, [2]]) * np.ones(G))
    ref = _fit(y, x, family="poisson")
    for j in range(3):
        got = _fit(y, _rescaled(x, j, c), family="poisson")
        _assert_rescaled(ref, got, "loc", j, c)
    p = _pvals(got)
    for f in range(G):
        sm_ref = sm.GLM(y[:, f], x, family=sm.families.Poisson()).fit(tol=1e-13)
        np.testing.assert_allclose(p[f], sm_ref.pvalues, atol=1e-6)


@pytest.mark.parametrize("c", FACTORS)
def test_normal_units_and_ols(c):
    rng = np.random.default_rng(8)
    x = _design(rng)
    y = 3.0 + 0.4 * x[:, [1]] + 0.2 * x[:, [2]] + rng.normal(0, 0.5, (N, G))
    ref = _fit(y, x, family="normal")  # closed form
    for j in range(3):
        got = _fit(y, _rescaled(x, j, c), family="normal")
        _assert_rescaled(ref, got, "loc", j, c)
    p = _pvals(got)
    for f in range(G):
        ols = sm.OLS(y[:, f], x).fit()
        # Maximum likelihood variance RSS / n (statsmodels: RSS / (n - p)); Wald z test.
        se = ols.bse * np.sqrt((N - 3) / N)
        np.testing.assert_allclose(p[f], 2 * stats.norm.sf(np.abs(ols.params / se)), atol=1e-6)
    # Newton path: a covariate in the scale model.
    z = x[:, :2]
    ref = _fit(y, x, z, family="normal")
    for j in range(2):
        _assert_rescaled(ref, _fit(y, x, _rescaled(z, j, c), family="normal"), "scale", j, c)


@pytest.mark.parametrize("c", FACTORS)
def test_beta_units_and_statsmodels(c):
    rng = np.random.default_rng(9)
    x = _design(rng)
    z = x[:, :2]
    m = 1 / (1 + np.exp(-(0.2 + 0.5 * x[:, 1] - 0.3 * x[:, 2])))
    phi = np.exp(3.0 + 0.5 * x[:, 1])
    y = rng.beta((m * phi)[:, None] * np.ones(G), ((1 - m) * phi)[:, None] * np.ones(G))
    ref = _fit(y, x, z, family="beta")
    for j in range(3):
        _assert_rescaled(ref, _fit(y, _rescaled(x, j, c), z, family="beta"), "loc", j, c)
    got = _fit(y, x, _rescaled(z, 1, c), family="beta")
    _assert_rescaled(ref, got, "scale", 1, c)
    p = np.column_stack([_pvals(got), _pvals(got, "scale")])
    for f in range(G):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm_ref = BetaModel(y[:, f], x, exog_precision=z).fit(method="newton", disp=0)
        np.testing.assert_allclose(p[f], sm_ref.pvalues, atol=1e-6)


# --- shrinkage and quasi-likelihood paths ----------------------------------------------


@pytest.fixture(scope="module")
def shrink():
    rng = np.random.default_rng(11)
    n, g = 16, 40
    depth = rng.uniform(0.2, 1.0, n)
    treated = np.repeat([0.0, 1.0], n // 2)
    mu = np.exp(
        rng.uniform(1, 6, g) + np.outer(depth, rng.normal(0, 0.5, g)) + 0.4 * treated[:, None]
    )
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(float)
    x = np.column_stack([np.ones(n), depth, treated])
    return x, y, _shared_info_pvals(x, y)


def _shared_info_pvals(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    res = _fit(y, pd.DataFrame(x, columns=NAMES))
    return {
        "map": np.asarray(bg.de.wald(res, coef="depth", dispersion="map", data=y).pval),
        "ql": np.asarray(bg.de.wald(res, coef="treated", dispersion="ql", data=y).pval),
        "ql_f": np.asarray(bg.de.ql_f(res, coef="depth", data=y).pval),
    }


@pytest.mark.parametrize(("j", "c"), [(1, 1e-8), (0, 1e8)])
def test_map_and_quasi_likelihood_pvalues_ignore_units(shrink, j, c):
    x, y, ref = shrink
    got = _shared_info_pvals(_rescaled(x, j, c), y)
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-8, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("c", FACTORS)
def test_cox_reid_scale_design_ignores_units(shrink, c):
    x, y, _ = shrink
    z = x[:, :2]
    loc = x[:, [0, 2]] * [1.0, c]  # a rescaled column in the location design too
    ref = bg.dispersion.genewise_dispersions(y, _fit(y, x[:, [0, 2]], z))
    got = bg.dispersion.genewise_dispersions(y, _fit(y, loc, _rescaled(z, 1, c)))
    np.testing.assert_array_equal(got.status, ref.status)
    np.testing.assert_allclose(got.coef_free * [1.0, c], ref.coef_free, rtol=1e-8, atol=1e-10)
    # The APL's log det(X^T W X) shifts by exactly 2 log c when a location column does.
    np.testing.assert_allclose(got.apl + np.log(c), ref.apl, rtol=1e-10)


@pytest.mark.parametrize("c", FACTORS)
def test_separated_feature_keeps_identifiable_standard_errors_on_any_scale(c):
    # Group 1 has only zeros: its coefficient runs off, the rest stays identifiable.
    rng = np.random.default_rng(12)
    n = 60
    grp = np.repeat([0, 1, 2], 20)
    depth = rng.uniform(0.2, 1.0, n)
    x = np.column_stack([np.ones(n), grp == 1, grp == 2, depth]).astype(float)
    mu = np.exp(2 + 0.5 * (grp == 1) - 0.3 * (grp == 2) + 0.3 * depth)
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(float)
    y[grp == 1] = 0
    res = _fit(y[:, None], _rescaled(x, 3, c))
    assert res.status.iloc[0] == "separated"
    se = res.se_loc.iloc[0].to_numpy() * [1.0, 1.0, 1.0, c]
    assert se[1] > 1e3  # the separated direction
    # Without group 1 the same model is an ordinary fit (statsmodels, unit scale).
    keep = grp != 1
    ref = sm.NegativeBinomial(y[keep], x[keep][:, [0, 2, 3]]).fit(method="newton", disp=0)
    np.testing.assert_allclose(se[[0, 2, 3]], ref.bse[:3], rtol=1e-5)
