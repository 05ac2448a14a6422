"""The pipeline's summary line says when Cook's distances could not be computed.

DESeq2's rule gives Cook's distances only to samples whose design row (cell) holds 3 or
more samples; with raw continuous covariates (RIN, age) no sample qualifies, and a user's
summary line read "0 Cook's outliers" for a table with a planted outlier.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import batchglm as bg


def _table() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(8)
    n = 12
    obs = pd.DataFrame(
        {"condition": np.repeat(["a", "b"], n // 2), "RIN": rng.uniform(5.0, 10.0, n)},
        index=[f"s{i}" for i in range(n)],
    )
    mu = np.exp(rng.normal(4.0, 1.0, 80))
    y = rng.negative_binomial(10.0, 10.0 / (10.0 + mu[None, :]), (n, 80)).astype(float)
    y[0, 0] = np.round(200 * mu[0])  # one planted outlier
    return pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(80)]), obs


def test_summary_line_says_the_cooks_check_was_skipped_with_a_continuous_covariate():
    counts, obs = _table()
    res = bg.de.test(counts, "~ RIN + condition", obs=obs, coef="condition[T.b]", progress=False)
    assert not np.isfinite(res.summary()["maxCooks"]).any()
    line = res.summary_line()
    assert "Cook's check skipped: no design cell has 3 or more samples" in line
    assert "Cook's outliers" not in line


def test_summary_line_counts_outliers_when_cells_have_replicates():
    counts, obs = _table()
    res = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.b]", progress=False)
    line = res.summary_line()
    assert "Cook's outliers" in line and "skipped" not in line
    assert res.summary().loc["g0", "status"] == "outlier"


def test_summary_line_with_replaced_counts_does_not_claim_the_check_was_skipped():
    # 8 vs 8: counts of Cook's outliers are replaced and refitted (DESeq2's >= 7 rule).
    rng = np.random.default_rng(9)
    n = 16
    obs = pd.DataFrame(
        {"condition": np.repeat(["a", "b"], n // 2)}, index=[f"s{i}" for i in range(n)]
    )
    mu = np.exp(rng.normal(4.0, 1.0, 80))
    y = rng.negative_binomial(10.0, 10.0 / (10.0 + mu[None, :]), (n, 80)).astype(float)
    y[0, :5] = np.round(100 * mu[:5])
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(80)])
    res = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.b]", progress=False)
    line = res.summary_line()
    assert "replaced outlier counts" in line
    assert "skipped" not in line
