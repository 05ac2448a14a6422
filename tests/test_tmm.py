"""edgeR's TMM size factors: properties, sparse input and errors (values vs edgeR itself in
test_deseq2_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm.size_factors import size_factors
from batchglm.tmm import tmm_norm_factors, tmm_size_factors


def _counts(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(0, 7, 800))[None, :] * rng.uniform(0.5, 2, 6)[:, None]
    y = rng.negative_binomial(4, 4 / (4 + mu)).astype(float)
    y[:, :20] = 0.0
    return y


def _weighted_trimmed_mean(obs, ref):
    """One TMM factor written out: ranks by sorting, trims, precision weights."""
    n_o, n_r = obs.sum(), ref.sum()
    ok = (obs > 0) & (ref > 0)
    o, r = obs[ok], ref[ok]
    m = np.log2((o / n_o) / (r / n_r))
    a = 0.5 * (np.log2(o / n_o) + np.log2(r / n_r))
    n = m.size
    keep_m = np.zeros(n, bool)
    keep_a = np.zeros(n, bool)
    lo_m, lo_a = int(np.floor(0.3 * n)), int(np.floor(0.05 * n))
    keep_m[np.argsort(m, kind="stable")[lo_m : n - lo_m]] = True
    keep_a[np.argsort(a, kind="stable")[lo_a : n - lo_a]] = True
    keep = keep_m & keep_a
    w = 1.0 / ((n_o - o) / n_o / o + (n_r - r) / n_r / r)
    return 2.0 ** (np.sum(w[keep] * m[keep]) / np.sum(w[keep]))


def test_factors_match_a_written_out_tmm_without_ties():
    rng = np.random.default_rng(3)
    # Continuous "counts" have no ties, so ranks equal sort positions.
    y = rng.gamma(2.0, 1.0, size=(4, 500)) * np.exp(rng.uniform(0, 6, 500))
    f = tmm_norm_factors(y)
    lib = y.sum(axis=1)
    uq = np.quantile(y / lib[:, None], 0.75, axis=1)
    ref = int(np.argmin(np.abs(uq - uq.mean())))
    raw = np.array([_weighted_trimmed_mean(y[i], y[ref]) for i in range(4)])
    np.testing.assert_allclose(f, raw / np.exp(np.mean(np.log(raw))), rtol=1e-12)


def test_invariant_to_a_common_scale_and_equivariant_to_order():
    y = _counts()
    base = tmm_size_factors(y)
    np.testing.assert_allclose(tmm_size_factors(4.0 * y), base, rtol=1e-12)
    order = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(tmm_size_factors(y[order]), base[order], rtol=1e-12)
    assert np.exp(np.mean(np.log(base))) == pytest.approx(1.0)
    # Effective library sizes: library size times the normalisation factor.
    eff = y.sum(axis=1) * tmm_norm_factors(y)
    np.testing.assert_allclose(base, eff / np.exp(np.mean(np.log(eff))), rtol=1e-12)


def test_sparse_named_and_in_fit():
    y = _counts(1)
    dense = size_factors(y, "tmm")
    np.testing.assert_allclose(size_factors(sp.csr_matrix(y), "tmm"), dense, rtol=1e-14)
    res = bg.fit(y, np.ones((6, 1)), size_factors="tmm")
    np.testing.assert_allclose(res.size_factors, dense, rtol=1e-14)


def test_errors():
    y = _counts()
    bad = y.copy()
    bad[1, 5] = -1
    with pytest.raises(ValueError, match="TMM size factors need finite, non-negative counts"):
        tmm_norm_factors(bad)
    empty = y.copy()
    empty[4] = 0
    with pytest.raises(
        ValueError, match="positive total count in every observation, but observation 4"
    ):
        tmm_size_factors(empty)
