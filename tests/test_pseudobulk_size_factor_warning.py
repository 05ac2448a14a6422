"""bg.fit warns when bg.pseudobulk sums of unequal depth are fitted without size factors."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import batchglm as bg


def _cells(cells_per_donor: list[int]) -> ad.AnnData:
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(len(cells_per_donor)), cells_per_donor)
    obs = pd.DataFrame(
        {
            "donor": [f"d{k}" for k in g],
            "condition": np.where(g >= len(cells_per_donor) // 2, "stim", "ctrl"),
        },
        index=[f"c{i}" for i in range(g.size)],
    )
    y = rng.poisson(1.5, (g.size, 30)).astype(np.float32)
    return ad.AnnData(y, obs=obs)


def test_unequal_pseudobulk_without_size_factors_warns() -> None:
    pb = bg.pseudobulk(_cells([40, 300, 60, 250, 35, 280]), sample="donor")
    with pytest.warns(UserWarning, match=r"bg.pseudobulk sums whose totals differ .*-fold"):
        bg.fit(pb, "~ condition")
    # Subsetting keeps the marker.
    with pytest.warns(UserWarning, match="size_factors='median_ratio'"):
        bg.fit(pb[:, :20].copy(), "~ condition")


def test_no_warning_with_size_factors_or_equal_depth_or_plain_data() -> None:
    pb = bg.pseudobulk(_cells([40, 300, 60, 250, 35, 280]), sample="donor")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.fit(pb, "~ condition", size_factors="median_ratio")
        bg.fit(bg.pseudobulk(_cells([100] * 6), sample="donor"), "~ condition")
        plain = ad.AnnData(np.asarray(pb.X), obs=pb.obs.copy())
        bg.fit(plain, "~ condition")
