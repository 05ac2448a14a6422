"""Pseudobulk of cells whose donor labels are reused across conditions: the dropped
condition is announced, and ``sample=["donor", "condition"]`` keeps the samples apart."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import batchglm as bg


def _reused(seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 180
    person = np.repeat(np.arange(6), n // 6)  # 6 different people, labels d1..d3 twice
    obs = pd.DataFrame(
        {
            "donor": [f"d{k % 3 + 1}" for k in person],
            "condition": pd.Categorical(np.where(person < 3, "ctrl", "stim")),
            "age": np.array([31.0, 45.0, 52.0, 38.0, 60.0, 27.0])[person],
            "qc": rng.normal(size=n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    x = rng.poisson(2.0, (n, 12)).astype(float)
    return ad.AnnData(X=x, obs=obs), x


def test_reused_labels_warn_naming_the_dropped_condition() -> None:
    adata, x = _reused()
    with pytest.warns(UserWarning, match=r"'condition' varies within 3 of 3 pseudobulk") as rec:
        pb = bg.pseudobulk(adata, sample="donor")
    message = str(rec.list[0].message)
    assert "'age' is constant within each sample and 'condition' combination" in message
    assert "sample=['donor', 'condition']" in message
    assert "qc" not in message  # a cell-level measure: dropped silently
    assert "condition" not in pb.obs.columns
    # The sums really mix two people per label (closed form: the sum of their cells).
    members = (adata.obs["donor"] == "d1").to_numpy()
    np.testing.assert_allclose(pb["d1"].X.ravel(), x[members].sum(axis=0))


def test_cell_level_annotations_and_uncorroborated_labels_only_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adata, _ = _reused(3)
    rng = np.random.default_rng(3)
    leiden = rng.choice(["0", "1", "2", "3"], adata.n_obs)
    adata.obs["leiden"] = pd.Categorical(leiden)
    # A function of the cluster (constant within donor x cluster too): no evidence.
    adata.obs["cell_type"] = pd.Categorical(np.where(np.isin(leiden, ["0", "1"]), "T", "B"))
    adata.obs["phase"] = rng.choice(["G1", "S", "G2M"], adata.n_obs)
    adata.obs["donor"] = adata.obs["donor"].astype(str) + "_" + adata.obs["condition"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pb = bg.pseudobulk(adata, sample="donor")
    assert {"condition", "age"} <= set(pb.obs.columns) and "leiden" not in pb.obs.columns
    # Reused labels without a corroborating annotation: the counts cannot tell; logged.
    bare, _ = _reused(4)
    bare.obs = bare.obs[["donor", "condition", "qc"]]
    with caplog.at_level(logging.INFO, logger="batchglm"), warnings.catch_warnings():
        warnings.simplefilter("error")
        pb_bare = bg.pseudobulk(bare, sample="donor")
    assert "['condition', 'qc'] vary within samples and were dropped" in caplog.text
    # ... and a formula naming the dropped column says why it is missing.
    with pytest.raises(ValueError, match=r"'condition': bg.pseudobulk dropped it .* 3 of 3"):
        bg.fit(pb_bare, "~ condition")


def test_several_sample_columns_keep_samples_apart_and_feed_a_fit() -> None:
    adata, x = _reused(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pb = bg.pseudobulk(adata, sample=["donor", "condition"])
    assert pb.n_obs == 6
    assert list(pb.obs.columns) == ["donor", "condition", "age", "n_cells"]
    row = pb.obs.loc["d2_stim"]
    members = ((adata.obs["donor"] == "d2") & (adata.obs["condition"] == "stim")).to_numpy()
    np.testing.assert_allclose(pb["d2_stim"].X.ravel(), x[members].sum(axis=0))
    assert row["age"] == 60.0 and row["n_cells"] == members.sum()
    res = bg.fit(pb, "~ 1 + condition", size_factors="median_ratio")
    assert "condition[T.stim]" in res.coef_loc.columns


def test_unique_labels_do_not_warn_and_empty_sample_is_refused() -> None:
    adata, _ = _reused(2)
    adata.obs["donor"] = adata.obs["donor"].astype(str) + "_" + adata.obs["condition"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pb = bg.pseudobulk(adata, sample="donor")
    assert "condition" in pb.obs.columns and pb.n_obs == 6
    with pytest.raises(ValueError, match="`sample` must name at least one column"):
        bg.pseudobulk(adata, sample=[])
