"""A formula that names a column bg.pseudobulk dropped says why, and what to do for its kind."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest

import batchglm as bg


@pytest.fixture(scope="module")
def pb() -> anndata.AnnData:
    rng = np.random.default_rng(3)
    donor = np.repeat([f"d{k}" for k in range(6)], 30)
    obs = pd.DataFrame(
        {
            "donor": donor,
            "condition": np.where(np.isin(donor, ["d0", "d1", "d2"]), "ctrl", "stim"),
            "n_genes": rng.integers(200, 6000, donor.size),  # a cell-level measure
            "cluster": rng.choice(["T", "B"], donor.size),  # a cell-level annotation
        },
        index=[f"c{i}" for i in range(donor.size)],
    )
    x = rng.poisson(5.0, (donor.size, 4)).astype(np.float64)
    return bg.pseudobulk(anndata.AnnData(x, obs=obs), "donor")


def test_continuous_cell_measure_points_to_a_per_sample_mean(pb) -> None:
    with pytest.raises(ValueError, match=r"'n_genes'.*cell-level measurement.*per-sample mean"):
        bg.de.test(pb, "~ condition + n_genes", coef="condition[T.stim]")
    # ... and not to adding it to `sample` (every cell would be its own sample).
    with pytest.raises(ValueError) as err:
        bg.de.test(pb, "~ condition + n_genes", coef="condition[T.stim]")
    assert "sample=['donor', 'n_genes']" not in str(err.value)


def test_cell_level_factor_points_to_groupby_and_reused_labels(pb) -> None:
    with pytest.raises(ValueError, match=r"sample=\['donor', 'cluster'\].*groupby='cluster'"):
        bg.de.test(pb, "~ condition + cluster", coef="condition[T.stim]")
