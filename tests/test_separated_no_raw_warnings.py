"""Separated features with raw-scale covariates raise no raw NumPy warnings.

A user's QL test and ``lfc_shrink`` on a table with on/off genes and raw-scale covariates
(RIN, age) printed "overflow encountered in divide" (the QL-inflated floor dispersion at
null means near 1e-300) and "overflow encountered in square" (an apeglm Newton trial far
out). The suite runs with warnings as errors, so these calls fail if one comes back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(4)
    groups = np.repeat(["A", "B", "C"], [5, 4, 5])
    n = groups.size
    obs = pd.DataFrame(
        {
            "condition": groups,
            "batch": rng.permutation(np.array(["b1", "b2"] * 7)),
            "RIN": rng.uniform(5.0, 10.0, n),
            "age": rng.integers(20, 80, n).astype(float),
        },
        index=[f"s{i}" for i in range(n)],
    )
    mu = np.exp(rng.normal(4.0, 1.5, 150))
    counts = rng.negative_binomial(5.0, 5.0 / (5.0 + mu[None, :]), (n, 150)).astype(float)
    on_off = rng.uniform(600.0, 3300.0, (n, 12))
    on_off[groups == "C"] = 0.0
    on_off[np.flatnonzero(groups == "A")[-1], :] = 1.0  # one low sample on the other side
    counts = np.hstack([counts, np.round(on_off)])
    names = [f"g{j}" for j in range(counts.shape[1])]
    return pd.DataFrame(counts, index=obs.index, columns=names), obs


def test_ql_and_lfc_shrink_on_separated_features_raise_no_runtime_warnings(table):
    counts, obs = table
    design = "~ batch + RIN + age + condition"
    contrast = ("condition", "C", "A")
    res = bg.de.test(counts, design, obs=obs, contrast=contrast, method="ql", progress=False)
    separated = [f"g{j}" for j in range(150, 162)]
    assert np.all(np.isfinite(res.summary().loc[separated, "pvalue"]))
    fit = bg.fit(counts, design, obs=obs, size_factors="median_ratio", max_iter=1000)
    for kind in ("apeglm", "normal"):
        shrunk = bg.de.lfc_shrink(fit, contrast=contrast, data=counts, type=kind)
        assert np.all(np.isfinite(shrunk.summary()["log2FoldChange"]))
