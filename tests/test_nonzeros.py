"""Non-zero entries listed once per block (batchglm.nonzeros) and what uses them.

References: the dense block itself (entries, group sums), the negative binomial moment
estimator written out with NumPy on the dense block, and the fit without the listing
(every pass over the dense block, as before the listing existed).
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp

from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.init import initial_loc, initial_scale
from batchglm.nonzeros import NonZeros
from batchglm.solvers.newton import SolverOptions
from batchglm.solvers.objective import Problem

# `batchglm.fit` the module (the package exports the function of the same name).
fit_module = importlib.import_module("batchglm.solvers.block_fit")


def _counts(n: int, n_feat: int, seed: int):
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, 5, n)
    batch = rng.integers(0, 2, n)
    x = np.column_stack([np.ones(n)] + [cell_type == k for k in range(1, 5)]) * 1.0
    z = np.column_stack([np.ones(n), batch]) * 1.0
    sf = np.exp(rng.normal(0.0, 0.5, n))
    coef = np.column_stack(
        [rng.uniform(np.log(0.02), np.log(3.0), n_feat)] + [rng.uniform(-0.6, 0.6, (n_feat, 4))]
    )
    r = np.exp(rng.uniform(np.log(0.3), np.log(50.0), n_feat))[None, :] * (1.0 + batch[:, None])
    mu = sf[:, None] * np.exp(x @ coef.T)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    y[:, 2] = 0.0  # an all-zero feature
    y[:5, 4] = [0, 3, 0, 0, 1]
    y[5:, 4] = 0.0  # almost all zero
    problem = Problem(
        get_family("nb"),
        build_design(x, None, n, "loc"),
        build_design(z, None, n, "scale"),
        np.log(sf),
    )
    return problem, y, sf


def test_entries_and_group_sums_match_the_dense_block():
    rng = np.random.default_rng(1)
    dense = rng.poisson(0.3, (60, 7)).astype(np.float64)
    csc = sp.csc_array(dense)
    # An explicitly stored zero and a duplicate entry (which `toarray` adds up).
    odd = sp.csc_matrix(
        (np.array([2.0, 0.0, 1.0, 4.0]), (np.array([3, 5, 9, 9]), np.array([0, 1, 2, 2]))),
        shape=(12, 3),
    )
    for block, ref in [(dense, dense), (csc, dense), (odd, odd.toarray())]:
        nz = NonZeros.of(block)
        got = np.zeros(ref.shape)
        np.add.at(got, (nz.obs, nz.feat), nz.values)
        np.testing.assert_array_equal(got, ref)
        assert np.all(nz.values != 0)
        np.testing.assert_array_equal(nz.any_per_feature(), (ref != 0).any(axis=0))
    group = rng.integers(0, 3, 60)
    nz = NonZeros.of(csc)
    ref = np.stack([dense[group == g].sum(axis=0) for g in range(3)])
    np.testing.assert_allclose(nz.group_sums(group, 3), ref, rtol=1e-15)
    keep = np.array([True, False, True, True, False, False, True])
    sub = nz.subset(keep)
    np.testing.assert_allclose(sub.group_sums(group, 3), ref[:, keep], rtol=1e-15)


def test_starting_values_from_the_nonzeros_match_the_dense_moments():
    problem, y, sf = _counts(2000, 8, 3)
    y = y[:, [0, 1, 3, 5, 6, 7]]
    nz = NonZeros.of(sp.csc_array(y))
    a = initial_loc(problem, y, nonzeros=nz)
    np.testing.assert_allclose(a, initial_loc(problem, y), rtol=1e-13, atol=1e-13)
    # The moment estimator written out on the dense block: group means rescaled to the
    # observed totals per scale group, r = sum mu^2 / sum((y - mu)^2 - mu).
    mu = sf[:, None] * np.exp(problem.loc.reduced @ a.T)
    ref = []
    for g in (problem.scale_groups.index == k for k in range(2)):
        m = mu[g] * y[g].sum(axis=0) / mu[g].sum(axis=0)
        num, den = (m * m).sum(axis=0), ((y[g] - m) ** 2 - m).sum(axis=0)
        # No over-dispersion seen (den <= 0): the estimator's upper end, r = 1e6.
        ref.append(np.log(num / np.where(den > 0, den, num / 1e6)))
    ref_eta = np.clip(np.array(ref), np.log(1e-3), np.log(1e6))
    b = initial_scale(problem, y, a, nonzeros=nz)
    np.testing.assert_allclose(problem.scale_rows @ b.T, ref_eta, rtol=1e-11)
    np.testing.assert_allclose(b, initial_scale(problem, y, a), rtol=1e-12, atol=1e-12)


class _NoListing:
    @staticmethod
    def of(block):
        return None


def test_fit_with_the_listing_matches_the_fit_over_dense_passes(monkeypatch):
    problem, y, _ = _counts(2500, 9, 5)
    options = SolverOptions(max_iter=100, tol=1e-8)
    nz = NonZeros.of(sp.csr_array(y))
    with_listing = fit_module.fit_block(problem, y, options, nonzeros=nz)
    monkeypatch.setattr(fit_module, "NonZeros", _NoListing)
    dense = fit_module.fit_block(problem, y, options)
    np.testing.assert_array_equal(with_listing[4], dense[4])  # status, all-zero included
    np.testing.assert_allclose(with_listing[2], dense[2], rtol=1e-12)  # log-likelihood
    # Coefficients of features with an optimum agree to 1e-10; those of the separated
    # feature (its only counts in one cell type) run towards -inf along a flat likelihood
    # and stop where the tolerance is met, which rounding in the start may shift.
    ok = with_listing[4] == fit_module.Status.CONVERGED
    assert ok.sum() == 7 and with_listing[4][4] == fit_module.Status.SEPARATED
    np.testing.assert_allclose(with_listing[0][ok], dense[0][ok], rtol=0, atol=1e-10)
    np.testing.assert_allclose(with_listing[1][ok], dense[1][ok], rtol=1e-8, atol=1e-12)


def test_weights_keep_the_dense_passes():
    # With observation weights entries of weight 0 do not count: the listing is not used
    # (the all-zero check must see the weights).
    problem, y, _ = _counts(600, 6, 9)
    w = np.ones((600, 6))
    w[:5] = 0.0
    options = SolverOptions(max_iter=100, tol=1e-8)
    out = fit_module.fit_block(problem, y, options, weights=w, nonzeros=NonZeros.of(y))
    assert out[4][4] == fit_module.Status.ALL_ZERO  # its only counts have weight 0
