"""Pseudobulk: counts summed per sample (and cell type) with sample-level annotations."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg


@pytest.fixture
def cells():
    rng = np.random.default_rng(0)
    n = 240
    donor = np.repeat([f"d{i}" for i in range(6)], n // 6)
    obs = pd.DataFrame(
        {
            "donor": donor,
            "cell_type": rng.choice(["T", "B"], n),
            "condition": pd.Categorical(
                np.where(np.isin(donor, ["d0", "d1", "d2"]), "ctrl", "stim")
            ),
            "qc": rng.normal(size=n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    x = rng.poisson(0.5, (n, 30)).astype(float)
    adata = ad.AnnData(X=sparse.csr_matrix(x), obs=obs)
    adata.layers["counts"] = x
    return adata, x


def test_sums_by_sample_and_cell_type(cells):
    adata, x = cells
    pb = bg.pseudobulk(adata, "donor", "cell_type")
    assert pb.n_obs == 12
    assert list(pb.obs.columns) == ["donor", "cell_type", "condition", "n_cells"]
    assert isinstance(pb.obs["condition"].dtype, pd.CategoricalDtype)
    for name, row in pb.obs.iterrows():
        member = (
            (adata.obs["donor"] == row["donor"]) & (adata.obs["cell_type"] == row["cell_type"])
        ).to_numpy()
        np.testing.assert_allclose(pb[name].X.ravel(), x[member].sum(axis=0))
        assert row["n_cells"] == member.sum()
        assert name == f"{row['donor']}_{row['cell_type']}"
    assert pb.var_names.equals(adata.var_names)


def test_layer_and_sample_only_and_min_cells(cells):
    adata, x = cells
    pb = bg.pseudobulk(adata, "donor", layer="counts")
    assert pb.n_obs == 6 and "cell_type" not in pb.obs.columns
    np.testing.assert_allclose(pb.X, x.reshape(6, 40, 30).sum(axis=1))
    assert bg.pseudobulk(adata, "donor", ["cell_type"], min_cells=1000).n_obs == 0


def test_pseudobulk_feeds_a_fit(cells):
    adata, _ = cells
    pb = bg.pseudobulk(adata, "donor")
    res = bg.fit(pb, "~ 1 + condition", size_factors="median_ratio")
    assert res.converged.all()


def test_pseudobulk_errors(cells):
    adata, _ = cells
    with pytest.raises(ValueError, match=r"\['sample'\] are not columns of `adata.obs`"):
        bg.pseudobulk(adata, "sample")
    with pytest.raises(ValueError, match=r"`groupby` must name at least one column"):
        bg.pseudobulk(adata, "donor", [])
    with pytest.raises(ValueError, match=r"`min_cells` must be at least 1"):
        bg.pseudobulk(adata, "donor", min_cells=0)
    with pytest.raises(ValueError, match=r"`layer` 'raw' is not a layer"):
        bg.pseudobulk(adata, "donor", layer="raw")
    adata.obs.loc["cell0", "donor"] = None
    with pytest.raises(ValueError, match=r"must not have missing values"):
        bg.pseudobulk(adata, "donor")
