"""Mixed model against pseudobulk where cells carry information that donor sums lose.

With donors nested in the condition and a cell-level covariate whose average differs between
donors (e.g. a cell state or a per-cell quality score), a pseudobulk sum cannot adjust for
the covariate: its donor-to-donor variation becomes donor-level noise, and with few donors
the chance imbalance of the covariate between conditions is confounded with the condition.
The mixed model fits the covariate at the cell level (``~ condition + x``) and its
moderated Wald test of the condition stays calibrated. See docs/mixed_model.md, "Power
against pseudobulk".
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

import batchglm as bg


def _covariate_layout(
    seed: int, n_null: int, n_de: int, per_donor: int
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """4 vs 4 donors, NB counts, donor variance 0.05-0.3, DE genes +-log 3, and a cell-level
    covariate (donor mean and cell deviation both standard normal) with effect N(0, 0.5^2)."""
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(8), per_donor)
    stim = gid >= 4
    x = rng.normal(size=8)[gid] + rng.normal(size=gid.size)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in gid],
            "condition": np.where(stim, "stim", "ctrl"),
            "x": x,
        },
        index=[f"c{i}" for i in range(gid.size)],
    )
    n = n_null + n_de
    u = rng.normal(size=(8, n)) * np.sqrt(rng.uniform(0.05, 0.3, n))
    effect = np.r_[np.zeros(n_null), rng.choice([-1.0, 1.0], n_de) * np.log(3.0)]
    slope = rng.normal(scale=0.5, size=n)
    mu = np.exp(rng.uniform(0.0, 1.5, n) + u[gid] + stim[:, None] * effect + x[:, None] * slope)
    size = rng.uniform(2.0, 10.0, n)
    y = rng.negative_binomial(size, size / (size + mu)).astype(np.float64)
    return y, obs, effect != 0


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (written out, not the library's)."""
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.empty_like(p)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def test_cell_level_covariate_mixed_calibrated_and_at_least_pseudobulk_power() -> None:
    n_null, n_de = 300, 60
    y, obs, is_de = _covariate_layout(7, n_null, n_de, 40)
    res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor")
    p_mixed = np.nan_to_num(bg.de.wald(res, coef="condition[T.stim]").pval, nan=1.0)
    null = p_mixed[~is_de]
    # Calibrated against the uniform distribution of null p-values.
    assert 0.02 <= (null < 0.05).mean() <= 0.08
    assert stats.kstest(null, "uniform").pvalue > 0.01

    pb = bg.pseudobulk(ad.AnnData(X=y, obs=obs), sample="donor")
    pres = bg.fit(pb, "~ condition", size_factors="median_ratio")
    p_pb = np.nan_to_num(bg.de.ql_f(pres, coef="condition[T.stim]", data=pb).pval, nan=1.0)

    hits_mixed = _bh(p_mixed) < 0.05
    hits_pb = _bh(p_pb) < 0.05
    # At least the pseudobulk's true discoveries, with a false discovery proportion below
    # 0.1 (BH at 0.05 on 300 null genes).
    assert (hits_mixed & is_de).sum() >= (hits_pb & is_de).sum()
    assert (hits_mixed & is_de).sum() >= 0.3 * n_de
    assert (hits_mixed & ~is_de).sum() <= 0.1 * max(hits_mixed.sum(), 1)
