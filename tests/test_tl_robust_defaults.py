"""bg.tl.rank_genes_groups: robust size factors, tiny groups, untestable features last."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de.degrees_of_freedom import SmallSampleWarning

sc = pytest.importorskip("scanpy")


def _clusters(seed: int, sizes: dict[str, int], f: int = 60) -> ad.AnnData:
    """Cells of a few clusters; cluster "M" has 5 strong (25-fold) markers, the rest none."""
    rng = np.random.default_rng(seed)
    group = np.concatenate([[g] * n for g, n in sizes.items()])
    mu = np.tile(rng.uniform(2.0, 10.0, f), (group.size, 1))
    mu[group == "M", :5] *= 25.0
    y = rng.negative_binomial(3, 3 / (3 + mu)).astype(np.float32)
    obs = pd.DataFrame({"cl": pd.Categorical(group)}, index=[f"cell{i}" for i in range(group.size)])
    adata = ad.AnnData(y, obs=obs)
    adata.var_names = [f"g{j}" for j in range(f)]
    return adata


def test_default_size_factors_keep_null_features_null_next_to_strong_markers():
    # With library sizes, cluster M's markers inflate its library size, so in the
    # one-vs-rest comparison of the other clusters every null feature looks up-regulated
    # (the rest contains M with its deflated normalised means).
    adata = _clusters(11, {"A": 120, "B": 120, "M": 120})
    null = [f"g{j}" for j in range(5, 60)]

    def called(**kwargs):
        bg.tl.rank_genes_groups(adata, "cl", **kwargs)
        return {
            g: int(
                (
                    sc.get.rank_genes_groups_df(adata, group=g)
                    .set_index("names")
                    .loc[null]
                    .pvals_adj
                    < 0.05
                ).sum()
            )
            for g in ("A", "B")
        }

    biased = called(size_factors="normed_sum")
    assert sum(biased.values()) >= 10  # the bias the default must avoid is there
    default = called()
    assert sum(default.values()) <= 3, default  # 110 null tests at 5% FDR
    assert adata.uns["rank_genes_groups"]["params"]["method"] == "batchglm_wald"


def test_one_cell_group_is_refused_and_two_cell_group_warned():
    adata = _clusters(3, {"A": 40, "B": 40, "tiny": 1}, f=8)
    with pytest.raises(ValueError, match=r"at least 2 cells.*\['tiny'\] have 1 cell"):
        bg.tl.rank_genes_groups(adata, "cl")
    adata = _clusters(3, {"A": 40, "B": 40, "pair": 2}, f=8)
    with pytest.warns(SmallSampleWarning, match=r"fewer than 3 cells.*'pair': 2.*very few") as w:
        bg.tl.rank_genes_groups(adata, "cl", reference="A")
    assert w[0].filename == __file__  # points at the user's call, not at tl.py


@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_untestable_features_have_nan_scores_and_rank_last(method):
    adata = _clusters(5, {"A": 60, "B": 60, "M": 60}, f=12)
    adata.X[:, 7] = 0.0  # all zero: no test possible
    bg.tl.rank_genes_groups(adata, "cl", method=method)
    for g in ("A", "B", "M"):
        df = sc.get.rank_genes_groups_df(adata, group=g)
        assert df.names.iloc[-1] == "g7"
        assert np.isnan(df.scores.iloc[-1]) and np.isnan(df.pvals.iloc[-1])
        assert np.isfinite(df.scores.iloc[:-1]).all()
