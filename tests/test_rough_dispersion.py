"""DESeq2's rough starting dispersions (``batchglm.dispersion.rough``) from its formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.dispersion.rough import rough_dispersion, rough_start


def _deseq2_formulas(y: np.ndarray, sf: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One gene at a time, from DESeq2's documented estimators (Love et al. 2014, methods).

    roughDispEstimate: least-squares means of the normalised counts (floored at 1), then
    ``sum(((k - m)^2 - m) / m^2) / (n - p)``, at least 0; momentsDispEstimate:
    ``(var - mean(1/s) mean) / mean^2``; the start is the smaller, in [1e-8, max(10, n)].
    """
    n, p = x.shape
    out = []
    for j in range(y.shape[1]):
        k = y[:, j] / sf
        beta = np.linalg.lstsq(x, k, rcond=None)[0]
        m = np.maximum(x @ beta, 1.0)
        rough = max(sum(((k[i] - m[i]) ** 2 - m[i]) / m[i] ** 2 for i in range(n)) / (n - p), 0.0)
        mean = k.mean()
        var = ((k - mean) ** 2).sum() / (n - 1)
        moments = (var - np.mean(1.0 / sf) * mean) / mean**2
        out.append(min(max(min(rough, moments), 1e-8), max(10.0, n)))
    return np.array(out)


def test_rough_dispersion_is_deseq2s_start():
    rng = np.random.default_rng(7)
    n = 12
    x = np.column_stack([np.ones(n), np.arange(n) % 2, (np.arange(n) // 2) % 3 == 1])
    sf = np.exp(rng.normal(0.0, 0.4, n))
    # DESeq2's formulas at size factors of geometric mean 1; at other scales ours equal them
    # at the rescaled factors (the start does not depend on the overall scale).
    sf = sf / np.exp(np.mean(np.log(sf)))
    base = np.exp(rng.normal(2.0, 2.0, 40))
    alpha = 0.1 + 1.0 / base
    mu = sf[:, None] * base[None, :] * np.exp(0.7 * x[:, 1:2])
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mu)).astype(float)
    # An under-dispersed feature (the lower clip), one huge count, an all-zero feature.
    y[:, 0] = 5.0
    y[:, 1] = np.where(np.arange(n) == 0, 5000.0, 0.0)
    y[:, 2] = 0.0
    got = rough_dispersion(y, sf, x.astype(float))
    seen = np.flatnonzero(y[:, 1:].any(axis=0)) + 1
    want = _deseq2_formulas(y[:, seen], sf, x.astype(float))
    assert seen.size > 30
    np.testing.assert_allclose(got[seen], want, rtol=1e-12)
    assert got[0] == 1e-8  # under-dispersed: the lower clip
    assert np.isnan(got[2])  # all zero
    np.testing.assert_allclose(rough_dispersion(y, 1e6 * sf, x.astype(float)), got, rtol=1e-12)


def test_rough_dispersion_needs_residual_df():
    with pytest.raises(ValueError, match="more observations than location columns.*3 columns"):
        rough_dispersion(np.ones((3, 2)), np.ones(3), np.eye(3))


def test_pipeline_initial_fit_holds_the_rough_dispersion():
    """bg.de.test fits the location at the rough start, as DESeq2 does before the Cox-Reid step."""
    rng = np.random.default_rng(8)
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 6)}, index=[f"s{i}" for i in range(12)])
    y = pd.DataFrame(
        rng.negative_binomial(4, 0.2, (12, 60)),
        index=obs.index,
        columns=[f"f{j}" for j in range(60)],
    )
    start = rough_start(
        y, "~ g", obs=obs, layer=None, size_factors="median_ratio", constraints_loc=None
    )
    assert start is not None
    sf = bg.size_factors(y, "median_ratio")
    np.testing.assert_allclose(start.size_factors, sf, rtol=1e-12)
    x = np.column_stack([np.ones(12), np.repeat([0.0, 1.0], 6)])
    # DESeq2's formulas at the size factors scaled to geometric mean 1 (rough.py).
    want = _deseq2_formulas(y.to_numpy(dtype=float), sf / np.exp(np.mean(np.log(sf))), x)
    np.testing.assert_allclose(start.log_r[:, 0], -np.log(want), rtol=1e-12)
    # The pipeline's MAP Wald test equals the one on a fit at that dispersion.
    de = bg.de.test(
        y, "~ g", obs=obs, coef="g[T.b]", cooks_cutoff=None, independent_filtering=False
    )
    res = bg.fit(y, "~ g", obs=obs, size_factors=sf, fixed_scale=start.log_r)
    ref = bg.de.wald(res, coef="g[T.b]", dispersion="map", data=y)
    np.testing.assert_allclose(de.pval, ref.pval, rtol=1e-8)
