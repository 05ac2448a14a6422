"""scipy.sparse input: same fit as dense, never densified as a whole."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import batchglm as bg


@pytest.fixture(scope="module")
def sparse_counts():
    rng = np.random.default_rng(3)
    n, f = 600, 40
    cond = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), cond])
    mu = np.exp(rng.uniform(np.log(0.05), np.log(2.0), f))[None, :] * np.exp(0.3 * cond)[:, None]
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    y[:, 3] = 0
    ref = bg.fit(y, x)
    return y, x, ref


@pytest.mark.parametrize("kind", [sp.csr_array, sp.csr_matrix, sp.csc_array, sp.coo_array])
def test_sparse_matches_dense(sparse_counts, kind):
    y, x, ref = sparse_counts
    res = bg.fit(kind(y), x, chunk_size=7)
    np.testing.assert_array_equal(res.status.astype(str), ref.status.astype(str))
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.coef_loc.to_numpy(), ref.coef_loc.to_numpy(), atol=1e-9)


def test_bad_sparse_values_name_global_positions(sparse_counts):
    y, x, _ = sparse_counts
    bad = y.copy()
    bad[11, 25] = 0.5
    with pytest.raises(ValueError, match=r"non-integer.*observation 11, feature 25"):
        bg.fit(sp.csr_array(bad), x, chunk_size=7)


def test_sparse_string_dtype_is_rejected():
    with pytest.raises(ValueError, match=r"`data` must be numeric, but its dtype is bool"):
        bg.fit(sp.csr_array(np.ones((4, 2), dtype=bool)), np.ones((4, 1)))


def test_sparse_fit_never_holds_the_dense_matrix():
    rng = np.random.default_rng(0)
    n, f = 20000, 200
    y = sp.random_array(
        (n, f),
        density=0.1,
        format="csr",
        rng=rng,
        data_sampler=lambda size: rng.integers(1, 20, size),
    ).astype(np.float64)
    dense_bytes = n * f * 8
    tracemalloc.start()
    try:
        res = bg.fit(y, np.ones((n, 1)), chunk_size=4, n_jobs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.converged.all()
    assert peak < 0.6 * dense_bytes, f"peak {peak / 1e6:.1f} MB vs dense {dense_bytes / 1e6:.1f} MB"
