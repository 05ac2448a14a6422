"""The compiled per-group passes of the mixed fit (``batchglm.mixed.group_pass``).

The fast path must give the fit of the NumPy path it replaces (same Laplace objective,
same stopping rules): compared on data written here (unequal donors, a donor-level and a
cell-level covariate, a scale design that varies within donors), and its pieces against
direct computations: the per-group moments against NumPy sums of the closed-form
derivatives, the modes against ``scipy.optimize.brentq`` on the group objective.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import batchglm as bg
from batchglm.mixed import group_pass
from batchglm.mixed.group_pass import GroupPass, RowBasis
from batchglm.mixed.inner import solve_modes_fused


def _donors(seed: int, family: str, n_feat: int = 12) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = np.array([15, 60, 25, 40, 20, 55, 30])
    gid = np.repeat(np.arange(sizes.size), sizes)
    n = gid.size
    age = rng.uniform(20, 70, sizes.size)
    obs = pd.DataFrame(
        {
            "donor": [f"p{g}" for g in gid],
            "condition": np.where(gid % 2 == 0, "ctl", "trt"),
            "age": (age[gid] - 45.0) / 10.0,  # constant within donors
            "x": rng.normal(size=n),  # varies within donors
            "lane": np.where(rng.random(n) < 0.4, "l1", "l2"),
        },
        index=[f"c{i}" for i in range(n)],
    )
    u = rng.normal(size=(sizes.size, n_feat)) * np.sqrt(rng.uniform(0.02, 0.6, n_feat))
    eta = (
        rng.uniform(-0.5, 2.0, n_feat)
        + 0.3 * (gid % 2)[:, None]
        + 0.1 * obs["age"].to_numpy()[:, None]
        + 0.25 * obs["x"].to_numpy()[:, None] * rng.normal(size=n_feat)
        + u[gid]
    )
    mu = np.exp(eta)
    if family == "poisson":
        y = rng.poisson(mu)
    else:
        size = np.where(obs["lane"].to_numpy()[:, None] == "l1", 2.0, 6.0)
        y = rng.negative_binomial(size, size / (size + mu))
    return y.astype(np.float64), obs


@pytest.mark.parametrize(("family", "scale"), [("nb", "~ 1"), ("nb", "~ lane"), ("poisson", None)])
def test_fast_path_gives_the_fit_of_the_numpy_path(
    family: str, scale: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    y, obs = _donors(11, family)
    kw = {"obs": obs, "random_effects": "donor", "family": family, "design_scale": scale}
    assert group_pass.applies(family, y)
    fast = bg.fit(y, "~ condition + age + x", **kw)
    monkeypatch.setattr(group_pass, "ENABLED", False)
    slow = bg.fit(y, "~ condition + age + x", **kw)
    assert fast.converged.all() and slow.converged.all()
    assert (fast.status == slow.status).all()
    np.testing.assert_allclose(fast.loglik, slow.loglik, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.coef_loc, slow.coef_loc, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.se_loc, slow.se_loc, rtol=1e-8)
    np.testing.assert_allclose(fast.random_var, slow.random_var, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(
        fast.random_effects("donor"), slow.random_effects("donor"), rtol=0, atol=1e-8
    )
    if family == "nb":
        np.testing.assert_allclose(fast.coef_scale, slow.coef_scale, rtol=0, atol=1e-8)


def test_row_basis_is_exact_and_drops_group_level_columns() -> None:
    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, 200).astype(np.intp)
    group_level = rng.normal(size=5)[index]
    rows = np.column_stack([np.ones(200), group_level, rng.normal(size=200), index == 2])
    basis = RowBasis.build(rows, index, 5)
    # Constant coordinate plus the one column that varies within groups.
    assert basis.rank == 2
    full = np.column_stack([np.ones(200), rows])
    rebuilt = np.einsum("npr,nr->np", basis.embed[index], basis.coords)
    assert np.array_equal(rebuilt, full)


def test_moments_pass_matches_numpy_sums_of_the_closed_forms() -> None:
    rng = np.random.default_rng(8)
    n, n_feat, n_groups = 300, 5, 6
    index = rng.integers(0, n_groups, n).astype(np.intp)
    xc = np.column_stack([np.ones(n), (index % 2).astype(float), rng.normal(size=n)])
    zc = np.column_stack([np.ones(n), rng.random(n) < 0.5])
    y = rng.poisson(3.0, size=(n, n_feat)).astype(np.float64)
    eta_fixed = rng.normal(1.0, 0.4, size=(n, n_feat))
    log_r = rng.normal(1.0, 0.5, size=(n, n_feat))
    shift = rng.normal(0.0, 0.5, size=(n_groups, n_feat))
    gp = GroupPass(
        "nb",
        y,
        index,
        n_groups,
        RowBasis.build(xc, index, n_groups),
        RowBasis.build(zc, index, n_groups),
    )
    mm = gp.moments(gp.point(eta_fixed, log_r), shift)
    # Closed forms in mu and r (written out here): ll = y log(mu / (mu + r)) + r log(r /
    # (mu + r)); derivatives in eta = log mu and zeta = log r by sympy-free algebra.
    eta = eta_fixed + shift[index]
    mu, r = np.exp(eta), np.exp(log_r)
    s = mu + r
    p = mu / s
    ll = y * np.log(p) + r * np.log(r / s)
    d1 = (y - mu) * r / s
    d2 = -(y + r) * mu * r / s**2
    d3 = -(y + r) * mu * r * (r - mu) / s**3
    ds = r * np.log(r / s) + r - (y + r) * r / s
    c2 = r * mu * (y - mu) / s**2
    a = np.column_stack([np.ones(n), xc])
    b = np.column_stack([np.ones(n), zc])

    def group_sum(w: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = np.zeros((n_groups, n_feat, left.shape[1], right.shape[1]))
        np.add.at(
            out, index, w[:, :, None, None] * (left[:, None, :, None] * right[:, None, None, :])
        )
        return out

    one = np.ones((n, 1))
    np.testing.assert_allclose(mm.ll, group_sum(ll, one, one)[..., 0, 0], rtol=1e-11)
    np.testing.assert_allclose(mm.first_loc, group_sum(d1, a, one)[..., 0], rtol=1e-10, atol=1e-10)
    assert mm.first_scale is not None and mm.cross is not None
    np.testing.assert_allclose(
        mm.first_scale, group_sum(ds, b, one)[..., 0], rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(mm.loc[0], group_sum(d2, a, a), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mm.loc[1], group_sum(d3, a, a), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mm.cross[0], group_sum(c2, a, b), rtol=1e-10, atol=1e-10)
    s1, s2 = gp.sums(gp.point(eta_fixed, log_r), shift)
    np.testing.assert_allclose(s1, mm.s1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2, mm.s2, rtol=1e-12, atol=1e-12)


def test_fused_modes_from_far_starts_solve_the_group_equations() -> None:
    rng = np.random.default_rng(21)
    n, n_feat, n_groups = 240, 4, 5
    index = np.repeat(np.arange(n_groups), n // n_groups).astype(np.intp)
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(rng.normal(1.0, 1.0, (n, n_feat)))))
    y = y.astype(np.float64)
    y[index == 3, 0] = 0.0  # an all-zero group: its mode sits far below
    eta_fixed = np.full((n, n_feat), 0.5)
    log_r = np.full((1, n_feat), np.log(2.0))
    sigma = np.array([0.2, 1.0, 2.5, 0.7])
    basis = RowBasis.build(np.ones((n, 1)), index, n_groups)
    gp = GroupPass(
        "nb", y, index, n_groups, basis, RowBasis.build(np.ones((n, 1)), index, n_groups)
    )
    v0 = np.where(rng.random((n_groups, n_feat)) < 0.5, -15.0, 15.0)
    mode = solve_modes_fused(gp, eta_fixed, log_r, sigma, v0, with_moments=True)
    assert mode.converged.all()
    r = 2.0
    for f in range(n_feat):
        for g in range(n_groups):
            yy = y[index == g, f]

            def deriv(v: float, yy: np.ndarray = yy, f: int = f) -> float:
                mu = np.exp(0.5 + sigma[f] * v)
                return float(sigma[f] * ((yy - mu) * r / (mu + r)).sum() - v)

            ref = optimize.brentq(deriv, -60.0, 60.0, xtol=1e-13)
            assert mode.v[g, f] == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize(("family", "scale"), [("nb", "~ lane"), ("poisson", None)])
def test_reml_fast_path_gives_the_fit_of_the_numpy_path(
    family: str, scale: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    y, obs = _donors(5, family, n_feat=6)
    kw = {
        "obs": obs,
        "random_effects": "donor",
        "family": family,
        "design_scale": scale,
        "reml": True,
    }
    fast = bg.fit(y, "~ condition + age + x", **kw)
    monkeypatch.setattr(group_pass, "ENABLED", False)
    slow = bg.fit(y, "~ condition + age + x", **kw)
    assert fast.converged.all() and (fast.status == slow.status).all()
    np.testing.assert_allclose(fast.loglik, slow.loglik, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.coef_loc, slow.coef_loc, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.random_var, slow.random_var, rtol=1e-7)
    # The outer derivatives of a REML fit are analytic on both paths (per-group moments of
    # the compiled pass, per-observation NumPy arrays): about 1e-13 apart.
    np.testing.assert_allclose(fast.se_loc, slow.se_loc, rtol=1e-9)


def test_overshooting_inner_steps_are_halved_until_the_derivative_falls() -> None:
    from batchglm.mixed.inner import _halve_steps

    rng = np.random.default_rng(4)
    n, n_groups = 120, 4
    index = np.repeat(np.arange(n_groups), n // n_groups).astype(np.intp)
    y = rng.poisson(20.0, size=(n, 2)).astype(np.float64)
    basis = RowBasis.build(np.ones((n, 1)), index, n_groups)
    gp = GroupPass("poisson", y, index, n_groups, basis, None)
    point = gp.point(np.full((n, 2), np.log(20.0)), np.zeros((1, 2)))
    sig = np.array([[1.0, 0.5]])
    v = np.zeros((n_groups, 2))
    s1, s2 = gp.sums(point, sig * v)
    res = sig * s1 - v
    newton = res / (1.0 - sig * sig * s2)
    step = newton + np.where(newton >= 0, 0.9, -0.9)  # far past the root
    trial = v + step
    t1, t2 = gp.sums(point, sig * trial)
    need = ~(np.abs(sig * t1 - trial) <= np.abs(res))
    assert need.all()
    new, n1, n2, passes = _halve_steps(gp, point, sig, v, step, res, need, trial, t1, t2)
    assert passes >= 1
    # Each pair took a halved step (never the overshoot) and its derivative fell.
    assert np.all(np.abs(sig * n1 - new) <= np.abs(res))
    k = np.log2(step / (new - v))
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert np.all(np.round(k) >= 1)
    np.testing.assert_allclose(n1, gp.sums(point, sig * new)[0], rtol=1e-13)
