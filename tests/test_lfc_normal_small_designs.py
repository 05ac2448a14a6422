"""lfc_shrink(type="normal") against DESeq2 1.38 lfcShrink(type="normal") on small designs.

References from ``benchmarks/lfc_shrink_normal_small_deseq2.R`` (simulated counts, DESeq2's
size factors): 3 vs 3 with ``~ condition``, where the unweighted prior was furthest off,
and 4 vs 4 in two balanced batches with ``~ batch + condition``, where DESeq2 also puts a
prior on the batch coefficient (its ``tested_only`` column keeps the prior on condition
only, our model). What is left is our MAP dispersions against DESeq2's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de.lfc_prior import normal_prior_sd

DATA = Path(__file__).parent / "data"
LN2 = np.log(2.0)

pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")


def _shrink(name: str, formula: str, **kw):
    table = pd.read_csv(DATA / f"lfc_normal_{name}_counts.csv", index_col=0)
    sf = table.loc["sizeFactor"].to_numpy()
    y = table.drop(index="sizeFactor").T
    n = y.shape[0]
    obs = pd.DataFrame(
        {"condition": np.repeat(["A", "B"], n // 2), "batch": np.tile(["b1", "b2"], n // 2)},
        index=y.index,
    )
    res = bg.fit(y, formula, obs=obs, size_factors=sf)
    sh = bg.de.lfc_shrink(res, coef="condition[T.B]", data=y, type="normal", **kw)
    ref = pd.read_csv(DATA / f"lfc_normal_{name}_deseq2.csv")
    ok = (ref["baseMean"] >= 10).to_numpy() & sh.converged
    return sh, ref, ok


def _gaps(sh, ref, ok, lfc: str, se: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.abs(sh.log2fc - ref[lfc].to_numpy())[ok]
    ratio = (sh.coef_sd / LN2 / ref[se].to_numpy())[ok]
    return d, ratio


def test_three_vs_three_matches_deseq2() -> None:
    sh, ref, ok = _shrink("3v3", "~ condition")
    assert ok.sum() > 300
    d, ratio = _gaps(sh, ref, ok, "log2FoldChange", "lfcSE")
    # Measured: median 0.0009, max 0.037; lfcSE ratio median 0.979, range 0.958-1.013.
    assert np.median(d) < 0.003
    assert d.max() < 0.08
    assert np.median(np.abs(ratio - 1)) < 0.03
    assert np.all(np.abs(ratio - 1) < 0.06)
    # DESeq2's prior variance 1.57743 (priorInfo, log2^2); ours from our own MLEs.
    assert sh.prior_scale == pytest.approx(np.sqrt(1.57743), rel=0.02)
    # The unweighted quantile (the old prior, SD 1.12 here) is measurably further off.
    mle = sh.de.coef_mle / LN2
    unweighted = normal_prior_sd(mle[sh.de.converged & np.isfinite(mle)])
    old, _, _ = _shrink("3v3", "~ condition", prior_scale=unweighted)
    d_old, _ = _gaps(old, ref, ok, "log2FoldChange", "lfcSE")
    assert np.median(d_old) > 3 * np.median(d)


def test_batch_covariate_matches_deseq2_prior_on_condition() -> None:
    sh, ref, ok = _shrink("4v4batch", "~ batch + condition")
    assert ok.sum() > 300
    d, ratio = _gaps(sh, ref, ok, "tested_only", "tested_only_lfcSE")
    # Measured: median 0.0007, max 0.068; lfcSE ratio median 0.984, range 0.971-1.012.
    assert np.median(d) < 0.002
    assert d.max() < 0.12
    assert np.all(np.abs(ratio - 1) < 0.05)
    assert sh.prior_scale == pytest.approx(np.sqrt(0.6904193), rel=0.02)
    # DESeq2's lfcShrink also shrinks the batch coefficient (orthogonal to condition here),
    # which moves condition's estimate only a little: measured median 0.0033, max 0.093.
    d_all, _ = _gaps(sh, ref, ok, "log2FoldChange", "lfcSE")
    assert np.median(d_all) < 0.006


def test_wald_result_input_estimates_the_same_weighted_prior() -> None:
    # A DEResult carries no cached dispersions: the weights' baseMean and dispFit are
    # estimated again from the counts; the prior and the fold changes still match DESeq2.
    table = pd.read_csv(DATA / "lfc_normal_3v3_counts.csv", index_col=0)
    sf = table.loc["sizeFactor"].to_numpy()
    y = table.drop(index="sizeFactor").T
    obs = pd.DataFrame({"condition": np.repeat(["A", "B"], 3)}, index=y.index)
    de = bg.de.wald(
        bg.fit(y, "~ condition", obs=obs, size_factors=sf),
        "condition[T.B]",
        dispersion="map",
        data=y,
    )
    sh = bg.de.lfc_shrink(de, coef="condition[T.B]", data=y, type="normal")
    assert sh.prior_scale == pytest.approx(np.sqrt(1.57743), rel=0.02)
    ref = pd.read_csv(DATA / "lfc_normal_3v3_deseq2.csv")
    ok = (ref["baseMean"] >= 10).to_numpy() & sh.converged
    d, _ = _gaps(sh, ref, ok, "log2FoldChange", "lfcSE")
    assert np.median(d) < 0.003
