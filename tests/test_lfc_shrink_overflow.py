"""bg.de.lfc_shrink leaks no numpy overflow warning (pytest runs warnings as errors).

The old Hessian weight ``mu (1 + y/r) / (1 + mu/r)^2`` overflowed in the square on the
Newton trial points of a feature with thousands of reads but none in one of the compared
groups, fitted with continuous covariates (predictor ``eta`` of several hundred).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg


@pytest.mark.parametrize("kind", ["normal", "apeglm"])
def test_lfc_shrink_on_huge_counts_is_finite_and_silent(kind: str) -> None:
    rng = np.random.default_rng(404)
    n, g = 12, 40
    cond = np.repeat(["a", "b", "c"], n // 3)
    x = rng.normal(0, 1, n)
    sf = rng.uniform(0.5, 2.0, n)
    base = np.exp(rng.uniform(np.log(5), np.log(2000), g))
    y = rng.negative_binomial(8, 8 / (8 + sf[:, None] * base[None, :] * np.exp(0.2 * x)[:, None]))
    y = y.astype(float)
    y[:, 0] = rng.negative_binomial(10, 10 / (10 + 3e7 * sf))  # 1e7+ counts
    y[:, 1] = rng.negative_binomial(10, 10 / (10 + 5e7))
    y[:, 2] = 0.0  # all zero: no estimate (NaN), and no warning on the way
    y[:, 3] = rng.negative_binomial(2, 2 / (2 + 1000.0 * sf))  # ~1000 reads, except
    y[cond == "b", 3] = 0.0  # one group with none: separated in the tested direction
    names = [f"s{i}" for i in range(n)]
    counts = pd.DataFrame(y, index=names, columns=[f"f{j}" for j in range(g)])
    obs = pd.DataFrame({"condition": cond, "x": x, "z": rng.uniform(20, 80, n)}, index=names)
    res = bg.fit(counts, "~ x + z + condition", obs=obs, size_factors=sf)
    out = bg.de.lfc_shrink(res, contrast=("condition", "c", "b"), data=counts, type=kind)
    table = out.summary()
    assert np.isnan(table.loc["f2", "log2FoldChange"])
    assert np.isfinite(table.drop(index="f2").log2FoldChange).all()


def test_posterior_derivatives_match_finite_differences() -> None:
    """The overflow-free gradient and Hessian are those of the posterior's value."""
    from batchglm.de.lfc_posterior import LfcPosterior

    rng = np.random.default_rng(5)
    n, f = 9, 4
    xg = np.column_stack([np.repeat([0.0, 1.0, 0.0], 3), np.ones(n), rng.normal(0, 1, n)])
    y = rng.poisson(50.0, (f, n)).astype(float)
    y[0, 3:6] = 0.0
    log_r = np.log(rng.uniform(0.5, 20.0, (f, 1))) * np.ones((1, n))
    rows = np.arange(f)
    for kind in ("normal", "apeglm"):
        post = LfcPosterior(y, xg, rng.normal(0, 0.3, n), log_r, 1.3, kind)
        g = rng.normal(0, 1, (f, 3)) + np.array([0.0, 3.5, 0.0])
        grad, hess = post.derivatives(g, rows, exact=True)
        h = 1e-6
        for k in range(3):
            step = np.zeros(3)
            step[k] = h
            num = (post.value(g + step, rows) - post.value(g - step, rows)) / (2 * h)
            np.testing.assert_allclose(grad[:, k], num, rtol=1e-5, atol=1e-5)
            dgrad = (
                post.derivatives(g + step, rows, True)[0]
                - post.derivatives(g - step, rows, True)[0]
            ) / (2 * h)
            np.testing.assert_allclose(hess[:, :, k], dgrad, rtol=1e-5, atol=1e-4)
