"""Refits at shrunken dispersions start from the fit they refine (``init_loc``).

The warm start must reach the cold start's optimum: both are compared on new data with a
continuous covariate (where a cold start needs several Newton steps), and the optimum is
checked against statsmodels' NB GLM at the same fixed dispersion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.dispersion import refit_location


@pytest.fixture(scope="module")
def counts() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(20261130)
    n, n_feat = 36, 300
    obs = pd.DataFrame(
        {
            "group": np.repeat(["a", "b", "c"], n // 3),
            "x": rng.normal(0.0, 1.0, n),
        }
    )
    base = np.exp(rng.normal(2.5, 1.5, n_feat))
    slope = rng.normal(0.0, 0.5, n_feat)
    mu = base * np.exp(np.outer(obs["x"].to_numpy(), slope))
    mu = mu * np.exp(rng.normal(0.0, 0.2, n))[:, None]
    r = 1.0 / (0.05 + 1.0 / base)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    return y, obs


def test_warm_refit_equals_cold_refit(counts: tuple[np.ndarray, pd.DataFrame]) -> None:
    y, obs = counts
    res = bg.fit(y, "~ group + x", obs=obs, size_factors="median_ratio", progress=False)
    rng = np.random.default_rng(1)
    # Dispersions a little off the fit's, as MAP or trended estimates are.
    alpha = np.exp(-res.coef_scale.to_numpy()[:, 0]) * np.exp(rng.normal(0.0, 0.3, y.shape[1]))
    warm = refit_location(y, res, alpha, progress=False)
    cold = refit_location(y, res, alpha, progress=False, warm=False)
    ok = (warm.status == "converged") & (cold.status == "converged")
    assert ok.sum() > 250
    diff = np.abs(warm.coef_loc.to_numpy() - cold.coef_loc.to_numpy())[ok]
    assert diff.max() < 1e-8
    np.testing.assert_allclose(warm.loglik[ok], cold.loglik[ok], rtol=0, atol=1e-9)
    assert warm.n_iter[ok].sum() < cold.n_iter[ok].sum()

    # The optimum itself: statsmodels' NB GLM at the same fixed dispersion.
    sm = pytest.importorskip("statsmodels.api")
    x = np.column_stack(
        [np.ones(len(obs)), obs["group"] == "b", obs["group"] == "c", obs["x"]]
    ).astype(np.float64)
    for j in np.flatnonzero(ok)[:5]:
        glm = sm.GLM(
            y[:, j],
            x,
            family=sm.families.NegativeBinomial(alpha=alpha[j]),
            offset=np.log(res.size_factors),
        ).fit(tol=1e-13, maxiter=200)
        np.testing.assert_allclose(warm.coef_loc.to_numpy()[j], glm.params, rtol=0, atol=1e-6)


def test_warm_reduced_refit_equals_cold(counts: tuple[np.ndarray, pd.DataFrame]) -> None:
    # A reduced model (constraints dropping the slope): the start is the full fit's
    # coefficients projected onto the reduced constraints.
    y, obs = counts
    res = bg.fit(y, "~ group + x", obs=obs, size_factors="median_ratio", progress=False)
    alpha = np.exp(-res.coef_scale.to_numpy()[:, 0])
    c_red = np.eye(4)[:, :3]
    warm = refit_location(y, res, alpha, constraints_loc=c_red, progress=False)
    cold = refit_location(y, res, alpha, constraints_loc=c_red, progress=False, warm=False)
    ok = (warm.status == "converged") & (cold.status == "converged")
    assert ok.sum() > 250
    diff = np.abs(warm.coef_loc.to_numpy() - cold.coef_loc.to_numpy())[ok]
    assert diff.max() < 1e-8
    assert np.all(warm.coef_loc.to_numpy()[:, 3] == 0.0)


def test_init_loc_checks(counts: tuple[np.ndarray, pd.DataFrame]) -> None:
    y, obs = counts
    with pytest.raises(ValueError, match=r"`init_loc` must have shape \(300, 4\)"):
        bg.fit(y, "~ group + x", obs=obs, init_loc=np.zeros((300, 3)), progress=False)
    with pytest.raises(ValueError, match="`init_loc` must be None for dask input or with"):
        bg.fit(
            y,
            "~ x",
            obs=obs.assign(donor=np.repeat(["d1", "d2", "d3", "d4"], 9)),
            random_effects="donor",
            init_loc=np.zeros((300, 2)),
            progress=False,
        )
    # Non-finite rows fall back to the default start and reach the same optimum.
    res = bg.fit(y[:, :20], "~ group + x", obs=obs, progress=False)
    start = res.coef_loc.to_numpy().copy()
    start[:5] = np.nan
    again = bg.fit(y[:, :20], "~ group + x", obs=obs, init_loc=start, progress=False)
    np.testing.assert_allclose(
        again.coef_loc.to_numpy(), res.coef_loc.to_numpy(), rtol=0, atol=1e-7
    )
