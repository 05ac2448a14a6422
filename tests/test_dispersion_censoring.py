"""Gene-wise dispersions censored at the Poisson limit, left out of the dispersion prior.

Checked against an independent Cox-Reid adjusted profile likelihood (scipy) and against
the known spread of simulated log dispersions at 3 residual degrees of freedom.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special

import batchglm as bg
from batchglm.dispersion.censored import CENSOR_APL_TOL, censored_at_poisson
from batchglm.dispersion.cox_reid import MIN_ALPHA, cox_reid_search, log_r_grid, max_alpha
from batchglm.dispersion.estimate import estimate_dispersions
from batchglm.dispersion.rough import rough_start


def _apl(y: np.ndarray, mu: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """Cox-Reid adjusted NB profile log-likelihood per feature (written out here)."""
    # log Gamma(y + r) - log Gamma(r) - y log r = sum_{k < y} log(1 + k alpha): no
    # cancellation of two huge log-gammas near the Poisson limit.
    ratio = np.zeros_like(mu)
    for k in range(int(y.max())):
        ratio += np.where(k < y, np.log1p(k * alpha), 0.0)
    ll = (
        ratio
        - special.gammaln(y + 1.0)
        + special.xlogy(y, mu)
        - (y + 1.0 / alpha) * np.log1p(alpha * mu)
    ).sum(axis=0)
    w = mu / (1.0 + alpha * mu)
    info = np.einsum("ni,nf,nj->fij", x, w, x)
    return np.asarray(ll - 0.5 * np.linalg.slogdet(info)[1])


def _three_df_design(rng: np.random.Generator) -> np.ndarray:
    batch = np.array([0, 0, 0, 1, 0, 1, 1, 1.0])
    cond = np.repeat([0.0, 1.0], 4)
    return np.column_stack([np.ones(8), batch, rng.normal(size=8), rng.normal(size=8), cond])


def test_censoring_matches_an_independent_profile_likelihood():
    rng = np.random.default_rng(2024)
    x = _three_df_design(rng)
    n_feat = 400
    mu = np.exp(x @ rng.normal(0.0, 0.3, (5, n_feat)) + rng.uniform(-1.5, 3.0, n_feat))
    alpha = np.exp(rng.uniform(np.log(0.01), np.log(2.0), n_feat))
    r = 1.0 / alpha
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    _, grid_apl = cox_reid_search(y, mu, x)
    got = censored_at_poisson(grid_apl)

    grid = log_r_grid(8, max_alpha(8))
    at_floor = _apl(y, mu, x, MIN_ALPHA)
    # The grid's values, up to an alpha-free constant per feature.
    for i in (0, grid.size // 2, grid.size - 2):
        np.testing.assert_allclose(
            grid_apl[i] - grid_apl[-1], _apl(y, mu, x, np.exp(-grid[i])) - at_floor, atol=1e-8
        )
    # The rise above the Poisson limit on a grid 5 times finer.
    fine = np.linspace(grid[0], grid[-1], 5 * grid.size)
    rise = np.max([_apl(y, mu, x, np.exp(-t)) - at_floor for t in fine], axis=0)
    clear = np.abs(rise - CENSOR_APL_TOL) > 0.5 * CENSOR_APL_TOL
    assert clear.sum() > 0.9 * n_feat
    np.testing.assert_array_equal(got[clear], rise[clear] <= CENSOR_APL_TOL)
    # Both kinds are present: counts with no overdispersion to see, and clear ones.
    assert got.sum() >= 10 and (~got).sum() >= 10


def _simulate(seed: int, n_feat: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Null table, 4 vs 4, ``~ batch + RIN + age + condition`` (3 residual df).

    Means log-uniform on 0.1-20 and NB dispersions log-uniform on 0.1-2 (flat trend; the
    variance of log alpha is ``log(20)^2 / 12 = 0.747``); batch partly confounded with
    condition, size factors 0.7-1.4.
    """
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "condition": np.repeat(["ctrl", "trt"], 4),
            "batch": ["b1", "b1", "b1", "b2", "b1", "b2", "b2", "b2"],
            "RIN": np.round(rng.uniform(5, 10, 8), 1),
            "age": np.round(rng.uniform(20, 80, 8)),
        },
        index=[f"s{i}" for i in range(8)],
    )
    sf = rng.uniform(0.7, 1.4, 8)
    mu = sf[:, None] * np.exp(rng.uniform(np.log(0.1), np.log(20.0), n_feat))[None, :]
    r = 1.0 / np.exp(rng.uniform(np.log(0.1), np.log(2.0), n_feat))
    y = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + mu))
    return pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(n_feat)]), obs


# Age in whole years is meant as a slope.
@pytest.mark.filterwarnings("ignore::batchglm.formula.AnnotationWarning")
@pytest.mark.parametrize("seed", [305, 306, 307, 308])
def test_prior_variance_at_three_residual_df_stays_near_the_simulated_spread(seed):
    # Censored gene-wise estimates (a quarter of these low-count genes) used to inflate the
    # KL-matched prior variance: 0.84, 1.25, 1.23 and 7.3 (the grid's ceiling is 8) on these
    # four tables; now 0.73, 0.71, 0.96, 0.95.
    design = "~ batch + RIN + age + condition"
    y, obs = _simulate(seed)
    start = rough_start(y, design, obs=obs, layer=None, size_factors=None, constraints_loc=None)
    res = bg.fit(y, design, obs=obs, size_factors=start.size_factors, fixed_scale=start.log_r)
    disp = estimate_dispersions(y, res)
    assert disp.df_residual == 3
    assert disp.prior_var == pytest.approx(np.log(20.0) ** 2 / 12.0, abs=0.35)


def test_censoring_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`tol` must be at least 0, but -1.0 was given"):
        censored_at_poisson(np.zeros((3, 2)), tol=-1.0)
    with pytest.raises(ValueError, match="`grid_apl` must be 2-dimensional"):
        censored_at_poisson(np.zeros(3))


def test_features_not_searched_are_not_censored():
    grid_apl = np.array([[np.nan, 1.0], [np.nan, 1.0]])
    np.testing.assert_array_equal(censored_at_poisson(grid_apl), [False, True])
