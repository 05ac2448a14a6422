"""lfc_shrink(type="normal") with a covariate in the design, against DESeq2 (R reference).

DESeq2's ``lfcShrink(type="normal")`` puts its normal prior on every non-intercept
coefficient, the covariate's included; ``bg.de.lfc_shrink`` only on the tested effect.
The reference (``benchmarks/lfc_shrink_covariate_deseq2.R``, DESeq2 1.38.3) also holds
DESeq2's ``betaPrior`` fit with the prior on the condition only, at DESeq2's weighted
upper-quantile prior variance: that is our model, and it agrees (prior SD 1.52138 both);
the gap to ``lfcShrink`` is DESeq2's prior on the covariate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import batchglm as bg

DATA = Path(__file__).parent / "data"


def _inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    counts = pd.read_csv(DATA / "lfc_covariate_counts.csv", index_col=0).T
    coldata = pd.read_csv(DATA / "lfc_covariate_coldata.csv", index_col=0)
    ref = pd.read_csv(DATA / "lfc_covariate_deseq2.csv", index_col=0)
    return counts, coldata, ref


def test_normal_prior_on_the_tested_effect_matches_deseq2_betaprior() -> None:
    counts, coldata, ref = _inputs()
    # At DESeq2's dispersions, so that only the prior model is compared.
    log_r = -np.log(ref["dispersion"].to_numpy())[:, None]
    res = bg.fit(
        counts,
        "~ age + condition",
        obs=coldata,
        size_factors=coldata["sizeFactor"].to_numpy(),
        fixed_scale=log_r,
    )
    shrunk = bg.de.lfc_shrink(
        res, coef="condition[T.B]", data=counts, type="normal", dispersion="mle"
    ).summary()
    ours = shrunk["log2FoldChange"].to_numpy()
    diff = np.abs(ours - ref["tested_only"].to_numpy())
    assert np.median(diff) < 1e-3  # measured 2.4e-4
    assert diff.max() < 0.02  # measured 0.0076
    # DESeq2's default also shrinks age's coefficient, which moves condition's estimate.
    gap = np.abs(ref["lfcShrink"] - ref["tested_only"]).to_numpy()
    assert np.median(gap) > 0.01  # measured 0.024, max 0.45
    assert np.median(np.abs(ours - ref["lfcShrink"].to_numpy())) > 0.01
