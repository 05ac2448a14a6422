"""Variance-stabilising transformation and normalised counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg
from batchglm.dispersion.trend import Trend
from batchglm.vst import normalized_counts, vst, vst_parametric


def test_closed_form_points_and_defining_properties():
    a0, a1 = 0.05, 2.0
    # At q = 0 the argument of the log is (1 + a1) / (4 a0).
    assert vst_parametric(0.0, a0, a1) == pytest.approx(np.log2(3.0 / 0.2), rel=1e-14)
    # By hand at q = 10: 1 + a1 + 2 a0 q = 4, a0 q (1 + a1 + a0 q) = 0.5 * 3.5 = 1.75.
    assert vst_parametric(10.0, a0, a1) == pytest.approx(
        np.log2((4.0 + 2.0 * np.sqrt(1.75)) / 0.2), rel=1e-14
    )
    # Its derivative (natural log units) is sqrt(a0) / sd(q) with var = q + alpha(q) q^2 ...
    q = np.array([0.5, 3.0, 40.0, 900.0])
    h = 1e-5 * q
    deriv = (vst_parametric(q + h, a0, a1) - vst_parametric(q - h, a0, a1)) / (2 * h)
    sd = np.sqrt(q + (a0 + a1 / q) * q**2)
    np.testing.assert_allclose(deriv * np.log(2.0), np.sqrt(a0) / sd, rtol=1e-7)
    # ... and it approaches log2(q) for large counts.
    assert vst_parametric(1e9, a0, a1) - np.log2(1e9) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="positive coefficients a0 and a1"):
        vst_parametric(q, 0.0, 1.0)


def _trend_counts(seed: int = 0, n: int = 40, f: int = 400):
    rng = np.random.default_rng(seed)
    means = np.exp(rng.uniform(np.log(2.0), np.log(2000.0), f))
    alpha = 0.04 + 1.5 / means
    sf = rng.uniform(0.6, 1.6, n)
    mu = sf[:, None] * means[None, :]
    y = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu)).astype(float)
    return pd.DataFrame(y, columns=[f"g{j}" for j in range(f)]), sf, means


def test_vst_variance_is_roughly_constant_across_means():
    data, sf, means = _trend_counts()
    out = vst(data, size_factors=sf)
    assert out.shape == data.shape
    var = out.var(axis=0).to_numpy()
    log_var = np.log2(data.to_numpy() / sf[:, None] + 1.0).var(axis=0)
    bins = np.digitize(np.log10(means), [1.0, 2.0, 3.0])
    vst_medians = [np.median(var[bins == b]) for b in range(4)]
    log_medians = [np.median(log_var[bins == b]) for b in range(4)]
    # The trend's asymptotic dispersion 0.04 sets the variance of log counts: 0.04 / ln(2)^2.
    assert max(vst_medians) / min(vst_medians) < 1.6
    assert max(log_medians) / min(log_medians) > 3.0
    assert np.median(var[bins == 3]) == pytest.approx(0.04 / np.log(2) ** 2, rel=0.3)


def test_fit_vst_and_normalized_counts():
    data, sf, _ = _trend_counts(seed=1, f=120)
    obs = pd.DataFrame({"batch": np.repeat(["x", "y"], 20)}, index=data.index.astype(str))
    res = bg.fit(data, "~ batch", obs=obs, size_factors=sf)
    out = res.vst(data)
    trend = bg.dispersion.estimate_dispersions(data, res).trend_fit
    np.testing.assert_allclose(
        out.to_numpy(), vst_parametric(data.to_numpy() / sf[:, None], *trend.coef), rtol=1e-12
    )
    norm = res.normalized_counts(data)
    np.testing.assert_allclose(norm.to_numpy(), data.to_numpy() / sf[:, None], rtol=1e-15)
    sp = normalized_counts(sparse.csr_array(data.to_numpy()), sf)
    assert sparse.issparse(sp) and sp.nnz == np.count_nonzero(data.to_numpy())
    np.testing.assert_allclose(sp.toarray(), data.to_numpy() / sf[:, None], rtol=1e-15)


def test_vst_of_sparse_counts_equals_dense():
    data, sf, _ = _trend_counts(seed=3, f=60)
    dense = vst(data.to_numpy(), size_factors=sf)
    sp = vst(sparse.csr_array(data.to_numpy()), size_factors=sf)
    np.testing.assert_allclose(sp.to_numpy(), dense.to_numpy(), rtol=1e-10)


def test_vst_errors():
    data, sf, _ = _trend_counts(seed=2, f=50)
    local = Trend("local", (), np.array([0.0, 5.0]), np.array([-1.0, -3.0]))
    with pytest.raises(ValueError, match="needs the parametric dispersion trend"):
        vst(data, size_factors=sf, trend=local)
    with pytest.raises(ValueError, match="`size_factors` must have one value per observation"):
        normalized_counts(data, sf[:-1])
    res = bg.fit(data, np.ones((len(sf), 1)), family="poisson", size_factors=sf)
    with pytest.raises(ValueError, match="needs a negative binomial fit"):
        res.vst(data)
