"""DE results written to an AnnData read back as the same table, also through .h5ad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

ad = pytest.importorskip("anndata")


def _adata() -> ad.AnnData:
    rng = np.random.default_rng(31)
    n, g = 8, 30
    y = rng.negative_binomial(5, 5 / (5 + rng.uniform(5, 200, g)), (n, g)).astype(np.float32)
    y[:4, 0] *= 6
    obs = pd.DataFrame({"condition": np.repeat(["ctrl", "trt"], n // 2)})
    obs.index = [f"s{i}" for i in range(n)]
    var = pd.DataFrame(index=[f"gene{j}" for j in range(g)])
    return ad.AnnData(y, obs=obs, var=var)


def test_pipeline_results_round_trip_through_h5ad(tmp_path: Path) -> None:
    adata = _adata()
    de = bg.de.test(adata, "~ condition", contrast=("condition", "trt", "ctrl"))
    want = de.summary()
    de.to_anndata(adata, key_added="trt")
    path = tmp_path / "de.h5ad"
    adata.write_h5ad(path)
    got = bg.de.read_results(ad.read_h5ad(path), "trt")
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(
        pd.DataFrame(got.loc[want.index, ["baseMean", "log2FoldChange", "pvalue", "padj"]]),
        pd.DataFrame(want[["baseMean", "log2FoldChange", "pvalue", "padj"]]),
        check_dtype=False,
    )
    assert (got.status.to_numpy() == want.status.to_numpy()).all()
    assert got.attrs["filterThreshold"] == pytest.approx(want.attrs["filterThreshold"])
    assert got.attrs["tested"] == de.tested


def test_subset_results_and_errors() -> None:
    adata = _adata()
    sub = adata[:, :20].copy()
    res = bg.fit(sub, "~ condition")
    de = bg.de.wald(res, coef="condition[T.trt]", dispersion="map", data=sub)
    de.to_anndata(adata, key_added="w")
    got = bg.de.read_results(adata, "w")
    assert (got.status.iloc[20:] == "not_tested").all()
    assert got.pvalue.iloc[20:].isna().all()
    np.testing.assert_allclose(got.pvalue.iloc[:20], de.pval)
    with pytest.raises(ValueError, match="holds no test results under 'nope'"):
        bg.de.read_results(adata, "nope")
    with pytest.raises(ValueError, match="10 tested features are not in `adata.var_names`"):
        de.to_anndata(adata[:, 10:].copy(), key_added="w")
    with pytest.raises(ValueError, match="`key_added` must be a non-empty string"):
        de.to_anndata(adata, key_added="a/b")
