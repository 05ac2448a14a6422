"""The compiled Cox-Reid APL kernels against the NumPy path and independent formulas."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import batchglm as bg
from batchglm.dispersion import apl_kernel
from batchglm.dispersion.adjusted_profile import W_FLOOR, AdjustedProfile, LogNormalPrior
from batchglm.dispersion.cox_reid import cox_reid_search, log_r_grid
from batchglm.families import get_family

pytest.importorskip("numba")

DATA = Path(__file__).parent / "data"


@pytest.fixture
def compiled(monkeypatch):
    """Switch the kernels on for blocks of any size; yields a setter for the switch."""
    monkeypatch.setattr(apl_kernel, "MIN_ENTRIES", 0)

    def use(on: bool) -> None:
        monkeypatch.setattr(apl_kernel, "ENABLED", on)

    return use


def _problem(seed: int, design: str):
    """Counts, means and design of 300 features, the first 6 separated (one group empty)."""
    rng = np.random.default_rng(seed)
    n, n_feat = 24, 300
    group = np.arange(n) % 2
    if design == "covariate":
        # A covariate on its raw scale (hundreds): X^T W X badly scaled before the units.
        x = np.column_stack([np.ones(n), group, rng.normal(300.0, 80.0, n)])
        sf = np.exp(rng.normal(0, 0.3, n))
    else:
        # Groups x batches with equal size factors: observations summed into cells.
        batch = (np.arange(n) // 2) % 3
        x = np.column_stack([np.ones(n), group, batch == 1, batch == 2]).astype(float)
        sf = np.ones(n)
    base = np.exp(rng.normal(2.0, 1.5, n_feat))
    mu = sf[:, None] * base[None, :] * np.exp(0.4 * group)[:, None]
    alpha = 0.05 + 1.0 / base
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mu)).astype(float)
    sep = np.zeros(n_feat, dtype=bool)
    sep[:6] = True
    y[:, sep] *= group[:, None]
    mu[:, sep] = np.where(group[:, None] == 1, mu[:, sep], 1e-12)
    keep = y.any(axis=0)
    return y[:, keep], mu[:, keep], x, sep[keep]


def _rel(a, b):
    return np.abs(a - b) / np.maximum(np.abs(b), 1.0)


@pytest.mark.parametrize("design", ["covariate", "cells"])
def test_kernels_equal_numpy_path(compiled, design):
    y, mu, x, sep = _problem(1, design)
    n_feat = y.shape[1]
    rng = np.random.default_rng(2)
    theta = rng.uniform(-3.0, 8.0, (n_feat, 1))
    prior = LogNormalPrior(rng.normal(-1.0, 1.0, n_feat), 0.6)
    grid = log_r_grid(y.shape[0])
    out = {}
    for on in (False, True):
        compiled(on)
        apl = AdjustedProfile(y, mu, x, np.ones((y.shape[0], 1)))
        with_prior = AdjustedProfile(y, mu, x, np.ones((y.shape[0], 1)), prior)
        if design == "cells":
            assert apl.n is not None  # the summed-cells path is the one tested
        out[on] = (
            apl.grid_values(grid),
            apl.evaluate_terms(theta, 2),
            with_prior.evaluate_terms(theta, 2),
        )
    ok = ~sep
    np.testing.assert_array_less(_rel(out[True][0], out[False][0])[:, ok], 1e-10)
    for ev_c, ev_n in zip(out[True][1:], out[False][1:], strict=True):
        for name in ("ll", "grad", "hess", "magnitude"):
            got = getattr(ev_c, name).reshape(n_feat, -1)[ok]
            want = getattr(ev_n, name).reshape(n_feat, -1)[ok]
            np.testing.assert_array_less(_rel(got, want), 1e-10, err_msg=name)


def test_separated_log_det_matches_an_orthogonal_factorisation(compiled):
    """Where ``X^T W X`` is ill-conditioned, the kernel's log det is a QR's to about 1e-9."""
    compiled(True)
    y, mu, x, sep = _problem(3, "covariate")
    apl = AdjustedProfile(y[:, sep], mu[:, sep], x, np.ones((y.shape[0], 1)))
    inputs = apl._kernel_inputs()
    assert inputs is not None
    grid = log_r_grid(y.shape[0])
    _, logdet = apl_kernel.grid_terms(*inputs, grid, W_FLOOR)
    xs = x / np.abs(x).max(axis=0)
    for f in range(sep.sum()):
        for g in (0, grid.size // 2, grid.size - 1):
            m = mu[:, sep][:, f]
            w = np.maximum(m / (1.0 + m * np.exp(-grid[g])), W_FLOOR)
            r = np.linalg.qr(np.sqrt(w)[:, None] * xs, mode="r")
            want = 2.0 * np.log(np.abs(np.diag(r))).sum()
            assert abs(logdet[g, f] - want) < 1e-8


def test_count_sums_equal_the_family_terms():
    from batchglm.dispersion import apl_compiled

    rng = np.random.default_rng(4)
    n_feat = 400
    t = rng.uniform(-4.0, 18.0, n_feat)
    sizes = rng.integers(1, 12, n_feat)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
    # Small and large integer counts and a non-integer one (estimated counts).
    values = np.where(
        rng.uniform(size=ptr[-1]) < 0.8,
        rng.integers(1, 30, ptr[-1]),
        rng.integers(30, 20_000, ptr[-1]),
    ).astype(float)
    values[::7] += 0.5
    mult = rng.integers(1, 5, ptr[-1]).astype(float)
    out = np.zeros((n_feat, 4))
    apl_compiled.count_sums(values, mult, ptr, t, 2, out)
    seg = np.repeat(np.arange(n_feat), sizes)
    r = np.exp(t[seg])
    # scipy's special functions directly (mpmath-free independent reference).
    ll = special.gammaln(values + r) - special.gammaln(r)
    d1 = r * (special.digamma(values + r) - special.digamma(r))
    d2 = d1 + r * r * (special.polygamma(1, values + r) - special.polygamma(1, r))
    small_r = r < 1e4  # scipy's plain differences lose digits for larger r
    for j, ref in enumerate((ll, d1, d2)):
        want = np.bincount(seg, mult * ref * small_r, minlength=n_feat)
        got_mask = np.bincount(seg, small_r.astype(float), minlength=n_feat) == sizes
        np.testing.assert_allclose(out[got_mask, j], want[got_mask], rtol=1e-9, atol=1e-9)
    fam = get_family("nb")
    terms = fam.count_terms(values, t[seg], 2)
    for j, ref in enumerate((terms.ll, terms.d_scale, terms.d2_scale)):
        want = np.bincount(seg, mult * ref, minlength=n_feat)
        np.testing.assert_allclose(out[:, j], want, rtol=1e-11, atol=1e-9)


def test_search_is_unchanged_on_a_stored_table(compiled):
    """Same grid, same maximiser: the compiled and NumPy searches agree on a stored table.

    Features with an empty group (fitted means ~1e-11) are the exception: there the NumPy
    path's ``log det`` carries noise of ~1e-4 (normal equations of a condition number
    ~1e14) on an APL that is flat towards the Poisson limit, so its maximiser is noise; the
    kernel's grid values are checked against an independent evaluation instead.
    """
    counts = pd.read_csv(DATA / "deseq2_marioni_counts.csv.gz", index_col=0).T
    coldata = pd.read_csv(DATA / "deseq2_marioni_coldata.csv", index_col=0)
    counts = counts.loc[:, counts.sum(axis=0) > 0].iloc[:, :1500]
    res = bg.fit(counts, "~ tissue", obs=coldata, size_factors="median_ratio")
    y = counts.to_numpy(dtype=float)
    mu = res.fitted().to_numpy()
    x = res.loc.reduced
    found = {}
    for on in (False, True):
        compiled(on)
        found[on] = cox_reid_search(y, mu, x)
    ok = mu.min(axis=0) > 1e-6
    assert ok.sum() > 1300 and (~ok).sum() > 20
    np.testing.assert_allclose(found[True][1][:, ok], found[False][1][:, ok], rtol=1e-10)
    # Newton stops within 1e-8 (remaining step) of the maximiser in both paths; towards the
    # Poisson limit (log r ~ 12) the APL is so flat that gradient rounding moves it ~1e-7.
    np.testing.assert_allclose(found[True][0][ok], found[False][0][ok], rtol=1e-8, atol=3e-7)
    grid = log_r_grid(y.shape[0])
    xs = x / np.abs(x).max(axis=0)
    # r up to ~500: scipy's nbinom loses ~r log r * 1e-16 at larger r.
    near = np.flatnonzero(grid <= np.log(500.0))
    for f in np.flatnonzero(~ok)[:5]:
        for g in near[[0, near.size // 2, -1]]:
            r = np.exp(grid[g])
            ll = stats.nbinom.logpmf(y[:, f], r, r / (r + mu[:, f])) + special.gammaln(
                y[:, f] + 1.0
            )
            w = np.maximum(mu[:, f] / (1.0 + mu[:, f] / r), W_FLOOR)
            rr = np.linalg.qr(np.sqrt(w)[:, None] * xs, mode="r")
            logdet = (
                2.0 * np.log(np.abs(np.diag(rr))).sum() + 2.0 * np.log(np.abs(x).max(axis=0)).sum()
            )
            want = ll.sum() - 0.5 * logdet
            assert abs(found[True][1][g, f] - want) < 1e-8 * max(1.0, abs(want))


def test_numba_switch_is_honoured():
    code = "from batchglm.dispersion import apl_kernel; print(apl_kernel.ENABLED)"
    env = {**os.environ, "BATCHGLM_NUMBA": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    assert not apl_kernel.applies(10**6, 10**3, 1, 1) or apl_kernel.ENABLED
    # Several scale columns or distinct scale rows: the NumPy path.
    assert not apl_kernel.applies(10**6, 10**3, 2, 1)
    assert not apl_kernel.applies(10**6, 10**3, 1, 3)
