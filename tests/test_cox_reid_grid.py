"""The fast Cox-Reid grid (per-feature sums, count table, reused for the MAP pass) against a
brute-force dense grid refined by scipy, on new data with 2-3 residual df (the hard case:
flat and two-peaked adjusted profile likelihoods)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special

import batchglm as bg
from batchglm.dispersion import estimate_dispersions
from batchglm.dispersion.adjusted_profile import AdjustedProfile, _log1p
from batchglm.dispersion.cox_reid import (
    LogNormalPrior,
    _hermite_start,
    cox_reid_log_r,
    cox_reid_search,
    log_r_grid,
)


def _apl(t: np.ndarray, y: np.ndarray, mu: np.ndarray, x: np.ndarray) -> np.ndarray:
    """APL of one feature at each ``log r`` of ``t``, from scipy's gammaln (no shortcuts)."""
    r = np.exp(t)[:, None]
    ll = np.sum(
        special.gammaln(y + r)
        - special.gammaln(r)
        - special.gammaln(y + 1)
        + r * (np.log(r) - np.log(r + mu))
        + special.xlogy(y, mu / (r + mu)),
        axis=1,
    )
    w = mu / (1.0 + mu / r)
    info = np.einsum("ni,gn,nj->gij", x, w, x)
    return np.asarray(ll - 0.5 * np.linalg.slogdet(info)[1])


def _apl_slope(t: float, y: np.ndarray, mu: np.ndarray, x: np.ndarray) -> float:
    """d APL / d log r of one feature, written out (digamma; q = mu / r)."""
    r = np.exp(t)
    q = mu / r
    d_ll = r * np.sum(special.digamma(y + r) - special.digamma(r))
    d_ll += np.sum(-r * np.log1p(q) + r * q / (1.0 + q) - y / (1.0 + q))
    w = mu / (1.0 + q)
    dw = mu * q / (1.0 + q) ** 2
    info = (x * w[:, None]).T @ x
    return float(d_ll - 0.5 * np.trace(np.linalg.solve(info, (x * dw[:, None]).T @ x)))


def _data(seed: int, n_obs: int, n_feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n_obs), np.arange(n_obs) % 2])
    sf = np.exp(rng.normal(0.0, 0.3, n_obs))
    mean = np.exp(rng.uniform(np.log(0.3), np.log(2000.0), n_feat))
    alpha = np.exp(rng.uniform(np.log(0.005), np.log(2.0), n_feat))
    lfc = rng.normal(0.0, 0.7, n_feat)
    mu = sf[:, None] * mean[None, :] * np.exp(np.outer(x[:, 1], lfc))
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mu)).astype(float)
    keep = y.any(axis=0)
    return y[:, keep], mu[:, keep], x


def test_log1p_through_log_is_within_one_ulp():
    q = np.concatenate([[0.0], np.exp(np.linspace(-740.0, 690.0, 20001))])
    out = _log1p(q, np.empty_like(q), np.empty_like(q))
    ref = np.log1p(q)
    np.testing.assert_array_less(np.abs(out - ref), 2.3e-16 * np.abs(ref) + 1e-320)


@pytest.mark.parametrize("n_obs", [4, 5])  # 2 and 3 residual df
def test_grid_values_equal_the_direct_apl(n_obs):
    y, mu, x = _data(11 + n_obs, n_obs, 60)
    grid = log_r_grid(n_obs)
    apl = AdjustedProfile(y, mu, x, np.ones((n_obs, 1)))
    got = apl.grid_values(grid)
    # The same numbers as the entry-wise evaluation over the whole grid ...
    for g, t in enumerate(grid):
        each = apl.evaluate(np.full((y.shape[1], 1), t), 0)[0]
        np.testing.assert_allclose(got[g], each, rtol=1e-12, atol=1e-10)
    # ... and as scipy's gammaln where that is accurate (r up to 8e3; beyond, its
    # differences of numbers near r log r lose more than the 1e-10 checked here). The grid
    # leaves out the parameter-free -sum log y!, as evaluate does.
    got -= special.gammaln(y + 1).sum(axis=0)
    near = grid <= 9.0
    for j in range(y.shape[1]):
        ref = _apl(grid[near], y[:, j], mu[:, j], x)
        np.testing.assert_allclose(got[near, j], ref, rtol=1e-11, atol=1e-10)


@pytest.mark.parametrize("n_obs", [4, 5])
def test_estimates_match_a_dense_grid_refined_by_scipy(n_obs):
    y, mu, x = _data(3 + n_obs, n_obs, 150)
    alpha_max = float(max(10, n_obs))
    lo = -np.log(alpha_max)
    prior = LogNormalPrior(np.log(np.full(y.shape[1], 0.1)), 0.6)
    gene, grid_apl = cox_reid_search(y, mu, x, alpha_max=alpha_max)
    # The MAP pass from the kept grid equals one that evaluates the grid itself.
    map_kept = cox_reid_log_r(y, mu, x, prior=prior, alpha_max=alpha_max, grid_apl=grid_apl)
    map_fresh = cox_reid_log_r(y, mu, x, prior=prior, alpha_max=alpha_max)
    np.testing.assert_array_equal(map_kept, map_fresh)
    # The dense reference stops at r = 8e3 (see above); maxima beyond are not checked.
    dense = np.linspace(lo, 9.0, 2001)
    checked = 0
    for j in range(y.shape[1]):
        base = _apl(dense, y[:, j], mu[:, j], x)
        for est, extra in ((gene[j], 0.0), (map_kept[j], prior)):
            pen = 0.0 if extra == 0.0 else (dense + prior.mean[j]) ** 2 / (2 * prior.var)
            vals = base - pen
            i = int(np.argmax(vals))
            others = np.r_[vals[: max(i - 40, 0)], vals[i + 41 :]]
            # Interior maxima, not on a plateau (curved by more than rounding within
            # +-0.2 in log r), and unique (no second peak within 1e-6): the brief's cases.
            if (
                i in (0, dense.size - 1)
                or min(vals[i] - vals[i - 35], vals[i] - vals[i + 35]) < 1e-6
            ):
                continue
            if others.size and others.max() > vals[i] - 1e-6:
                continue

            def slope(t: float, j: int = j, extra: object = extra) -> float:
                d = _apl_slope(t, y[:, j], mu[:, j], x)
                if extra != 0.0:
                    d -= (t + prior.mean[j]) / prior.var
                return d

            # The root of an independent closed-form derivative (its rounding is ~1e-14, so
            # it locates the maximum far better than the values can).
            root = optimize.brentq(slope, dense[i - 1], dense[i + 1], xtol=1e-13)
            # log r to 1e-6: alpha to 1e-6 relative.
            assert abs(est - root) < 1e-6, (j, est, root)
            checked += 1
    assert checked > 100


def test_hermite_start_is_the_maximum_of_a_cubic():
    # f(t) = -(t - m)^2 + c (t - m)^3 on brackets around m: a cubic, so exact.
    m = np.array([0.31, -2.2, 7.05])
    c = np.array([0.0, 0.4, -0.3])
    lo, hi = m - np.array([0.2, 0.1, 0.45]), m + np.array([0.3, 0.4, 0.05])

    def f(t):
        return -((t - m) ** 2) + c * (t - m) ** 3

    def g(t):
        return -2.0 * (t - m) + 3.0 * c * (t - m) ** 2

    got = _hermite_start(lo, hi, f(lo), f(hi), g(lo), g(hi))
    np.testing.assert_allclose(got, m, rtol=0, atol=1e-12)


def test_grid_errors():
    y, mu, x = _data(2, 5, 4)
    with pytest.raises(ValueError, match=r"`grid_apl` must have shape \(\d+, 4\)"):
        cox_reid_log_r(y, mu, x, grid_apl=np.zeros((3, 4)))
    two_groups = np.column_stack([np.ones(5), np.arange(5) % 2])
    apl = AdjustedProfile(y, mu, x, two_groups)
    with pytest.raises(ValueError, match="one distinct row\\), but the scale design has 2"):
        apl.grid_values(log_r_grid(5))


def test_ql_route_leaves_out_the_map_pass_and_map_tests_redo_it():
    rng = np.random.default_rng(8)
    y = rng.negative_binomial(5, 5 / (5 + np.exp(rng.normal(2, 1, 30))), size=(8, 30))
    x = np.column_stack([np.ones(8), np.arange(8) % 2])
    res = bg.fit(y, x)
    full = estimate_dispersions(y, res)
    plain = estimate_dispersions(y, res, shrink=False)
    assert full.has_map and not plain.has_map and np.isnan(plain.map).all()
    np.testing.assert_array_equal(plain.genewise, full.genewise)
    np.testing.assert_array_equal(plain.trend, full.trend)
    bg.de.ql_f(res, coef="p1")
    assert not res.derived[("dispersions", "parametric")].has_map
    wald = bg.de.wald(res, coef="p1", dispersion="map")
    kept = res.derived[("dispersions", "parametric")]
    assert kept.has_map
    np.testing.assert_array_equal(kept.map, full.map)
    np.testing.assert_array_equal(wald.nb_dispersion, full.map)
