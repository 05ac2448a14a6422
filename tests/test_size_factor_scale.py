"""The DE pipeline does not depend on the overall scale of the size factors.

Scaling all size factors by ``c`` changes only the intercept (by ``-log c``) and
``baseMean`` (by ``1 / c``) of the NB model; every test result must stay the same. DESeq2
is not invariant (its rough dispersion, Cook's moment dispersion and mean floors assume
size factors near 1); read-scale library sizes passed as size factors exposed that here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import batchglm as bg


def _data() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(2031)
    n, g = 12, 80
    cond = np.repeat(["a", "b"], n // 2)
    sf = rng.uniform(0.4, 2.5, n)
    base = np.exp(rng.uniform(np.log(0.5), np.log(300), g))
    lfc = np.where(rng.random(g) < 0.2, rng.normal(0, 1.5, g), 0.0)
    mu = sf[:, None] * base[None, :] * np.exp((cond == "b")[:, None] * lfc[None, :])
    alpha = 0.1 + 1 / base
    y = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu)).astype(float)
    y[cond == "b", 0] = 0  # a separated feature
    y[0, 1] = 40 * y[:, 1].max() + 50  # a Cook's outlier candidate
    names = [f"s{i}" for i in range(n)]
    counts = pd.DataFrame(y, index=names, columns=[f"g{j}" for j in range(g)])
    obs = pd.DataFrame({"condition": cond}, index=names)
    return counts, obs, y.sum(axis=1)


def test_results_do_not_depend_on_the_scale_of_size_factors() -> None:
    counts, obs, libsize = _data()
    tables = []
    for sf in (libsize, libsize / np.exp(np.mean(np.log(libsize)))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bg.ConvergenceWarning)
            de = bg.de.test(counts, "~ condition", obs=obs, size_factors=sf, coef=1)
        tables.append(de.summary())
    raw, unit = tables
    scale = np.exp(np.mean(np.log(libsize)))
    np.testing.assert_allclose(raw.baseMean * scale, unit.baseMean, rtol=1e-10)
    np.testing.assert_array_equal(raw.status, unit.status)
    np.testing.assert_array_equal(raw.filtered, unit.filtered)
    np.testing.assert_allclose(raw.pvalue, unit.pvalue, rtol=0, atol=1e-6)
    np.testing.assert_allclose(raw.padj, unit.padj, rtol=0, atol=1e-6)
    np.testing.assert_allclose(raw.log2FoldChange, unit.log2FoldChange, rtol=0, atol=1e-6)
    np.testing.assert_allclose(raw.dispersion, unit.dispersion, rtol=1e-5)
    np.testing.assert_allclose(raw.maxCooks, unit.maxCooks, rtol=1e-6)
