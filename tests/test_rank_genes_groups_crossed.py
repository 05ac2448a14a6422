"""Marker tests with a donor random effect warn once per run, not once per group."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de import CrossedGroupingWarning


def _clusters_within_donors() -> ad.AnnData:
    rng = np.random.default_rng(77)
    n_donors, per, n_genes = 6, 30, 10
    gid = np.repeat(np.arange(n_donors), per)
    cluster = np.tile(np.array(["c0", "c1", "c2"]), n_donors * per // 3)
    obs = pd.DataFrame(
        {"donor": [f"donor{g}" for g in gid], "leiden": pd.Categorical(cluster)},
        index=[f"cell{i}" for i in range(gid.size)],
    )
    u = rng.normal(size=(n_donors, n_genes)) * 0.4
    mu = np.exp(1.0 + u[gid])
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float64)
    return ad.AnnData(y, obs=obs)


def test_one_crossed_warning_for_all_groups() -> None:
    adata = _clusters_within_donors()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bg.tl.rank_genes_groups(adata, "leiden", random_effects="donor")
    crossed = [w for w in caught if issubclass(w.category, CrossedGroupingWarning)]
    assert len(crossed) == 1
    assert "2 other groups" in str(crossed[0].message)
    assert "'donor'" in str(crossed[0].message)


def test_the_merged_warning_can_be_filtered_or_raised() -> None:
    adata = _clusters_within_donors()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=CrossedGroupingWarning)
        bg.tl.rank_genes_groups(adata, "leiden", random_effects="donor")
    with pytest.warns(CrossedGroupingWarning, match="other groups"):
        bg.tl.rank_genes_groups(adata, "leiden", random_effects="donor")
