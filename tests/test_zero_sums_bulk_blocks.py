"""Blocks with few zero counts take the direct sums; fits stay at the scipy optimum.

:func:`batchglm.solvers.zero_sums.for_block` leaves blocks with fewer than
``MIN_ZEROS_PER_GROUP`` zero counts per design group and feature (bulk counts) to the
per-observation sums. References: ``scipy.optimize`` on ``scipy.stats.nbinom.logpmf`` (same
likelihood, independent code) for free- and fixed-dispersion fits of such a block, and the
zero-sum evaluator on the same block for the log-likelihood and derivatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.solvers import zero_sums
from batchglm.solvers.objective import Objective, Problem


def _one_way(n: int, n_groups: int, seed: int) -> tuple[Problem, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = np.arange(n) % n_groups
    x = np.column_stack([np.ones(n)] + [group == k for k in range(1, n_groups)]) * 1.0
    sf = np.exp(rng.normal(0.0, 0.3, n))
    loc = build_design(x, None, n, "loc")
    scale = build_design(np.ones((n, 1)), None, n, "scale")
    return Problem(get_family("nb"), loc, scale, np.log(sf)), x, sf


def _counts(x: np.ndarray, sf: np.ndarray, log_mean: float, n_feat: int, seed: int):
    rng = np.random.default_rng(seed)
    coef = np.column_stack(
        [rng.normal(log_mean, 0.5, n_feat), rng.normal(0.0, 0.4, (n_feat, x.shape[1] - 1))]
    )
    mu = sf[:, None] * np.exp(x @ coef.T)
    return rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(np.float64)


def test_bulk_blocks_use_the_direct_sums_and_sparse_blocks_the_expansions():
    problem, x, sf = _one_way(240, 4, 1)  # 60 cells per group
    assert zero_sums.plan(problem) is not None
    bulk = _counts(x, sf, 4.0, 30, 2)  # hardly any zeros
    sparse = _counts(x, sf, -3.0, 30, 3)  # about 95 % zeros, 57 per group
    assert (bulk == 0).mean() < 0.05 and (sparse == 0).mean() > 0.9
    assert Objective(problem, bulk).zero_sums is None
    obj = Objective(problem, sparse)
    assert obj.zero_sums is not None
    # Just below and at the threshold (zeros per group and feature, on average).
    n_groups = 4
    limit = zero_sums.MIN_ZEROS_PER_GROUP * n_groups
    y = np.ones((240, 1))
    y[: limit - 1] = 0.0
    assert Objective(problem, y).zero_sums is None
    y[limit - 1] = 0.0
    assert Objective(problem, y).zero_sums is not None
    # The two paths give the same log-likelihood and derivatives on the sparse block.
    direct = Objective(problem, sparse)
    direct.zero_sums, direct.rows = None, problem.rows
    theta = np.column_stack(
        [np.full(30, -3.0), np.zeros((30, 3)), np.linspace(np.log(0.2), np.log(50.0), 30)]
    )
    ev, ev_direct = obj.evaluate_terms(theta, 2), direct.evaluate_terms(theta, 2)
    assert np.max(np.abs(ev.ll - ev_direct.ll) / ev_direct.magnitude) < 1e-13
    assert ev.grad is not None and ev_direct.grad is not None
    big = np.abs(ev_direct.grad).max() + 1.0
    assert np.max(np.abs(ev.grad - ev_direct.grad)) / big < 1e-12


def _scipy_fit(y: np.ndarray, x: np.ndarray, sf: np.ndarray, log_r: float | None):
    """NB maximum likelihood with scipy: coefficients (and log r unless fixed)."""
    k = x.shape[1]

    def nll(p: np.ndarray) -> float:
        rr = np.exp(p[k] if log_r is None else log_r)
        m = sf * np.exp(x @ p[:k])
        return -float(stats.nbinom.logpmf(y, rr, rr / (rr + m)).sum())

    start = np.zeros(k + (log_r is None))
    start[0] = np.log(y.mean() + 0.1)
    best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-9})
    best = optimize.minimize(nll, best.x, method="Nelder-Mead", options={"xatol": 1e-10})
    return best.x, -best.fun


def test_bulk_one_way_fits_reach_the_scipy_optimum():
    # 85 samples in 4 groups, bulk counts: the design plan applies (21 cells per group) but
    # every block goes to the direct sums.
    n, n_feat = 85, 6
    _, x, sf = _one_way(n, 4, 7)
    y = _counts(x, sf, 3.0, n_feat, 8)
    obs = pd.DataFrame({"g": [f"g{k}" for k in np.arange(n) % 4]})
    res = bg.fit(y, "~ g", obs=obs, size_factors=sf, n_jobs=1, progress=False)
    log_r = np.full((n_feat, 1), np.log(2.5))
    fixed = bg.fit(y, "~ g", obs=obs, size_factors=sf, fixed_scale=log_r, n_jobs=1, progress=False)
    for f in range(3):
        coef, ll = _scipy_fit(y[:, f], x, sf, None)
        assert res.loglik.iloc[f] >= ll - 1e-7
        np.testing.assert_allclose(res.coef_loc.to_numpy()[f], coef[:4], atol=1e-4)
        coef, ll = _scipy_fit(y[:, f], x, sf, float(log_r[f, 0]))
        assert fixed.loglik.iloc[f] >= ll - 1e-7
        np.testing.assert_allclose(fixed.loglik.iloc[f], ll, atol=1e-6)
        np.testing.assert_allclose(fixed.coef_loc.to_numpy()[f], coef, atol=1e-4)
