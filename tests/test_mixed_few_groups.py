"""The 2 vs 2 donors warning of mixed-model tests (``mixed/few_groups.py``).

References: the groups per level are counted by hand from the simulated layout (donors per
condition); the warning must name the factor and those counts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.mixed.few_groups import FewGroupsWarning, groups_per_level


def _layout(per_condition: tuple[int, int], seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_donors = sum(per_condition)
    sizes = rng.integers(15, 35, n_donors)
    donor = np.repeat(np.arange(n_donors), sizes)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in donor],
            "condition": np.where(donor < per_condition[0], "ctrl", "stim"),
            "age": rng.uniform(20, 80, n_donors)[donor],
        },
        index=[f"cell{i}" for i in range(donor.size)],
    )
    u = rng.normal(0.0, 0.3, (n_donors, 2))
    return rng.poisson(np.exp(0.8 + u[donor])).astype(float), obs


@pytest.mark.parametrize("per_condition", [(2, 2), (3, 2)])
def test_two_donors_in_a_condition_warn(per_condition: tuple[int, int]) -> None:
    y, obs = _layout(per_condition, seed=sum(per_condition))
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", family="poisson")
    msg = (
        rf"only {per_condition[0]} vs {per_condition[1]} groups of 'donor' per level.*"
        r"bg\.pseudobulk\(adata, sample='donor'\)"
    )
    with pytest.warns(FewGroupsWarning, match=msg):
        table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert np.isfinite(table["pvalue"]).all()


def test_three_donors_each_and_cell_level_effects_do_not_warn() -> None:
    y, obs = _layout((3, 3), seed=9)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", family="poisson")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewGroupsWarning)
        bg.de.wald(res, coef="condition[T.stim]")


def test_groups_per_level_counts_by_hand() -> None:
    # 5 donors: intercept, condition (2 ctrl, 3 stim) and a continuous donor-level age.
    design = np.column_stack(
        [np.ones(5), [0.0, 0.0, 1.0, 1.0, 1.0], [31.0, 47.0, 52.0, 66.0, 70.0]]
    )
    assert groups_per_level(design, np.array([[0.0, 1.0, 0.0]])).tolist() == [2, 3]
    # A continuous covariate has no levels: nothing to count.
    assert groups_per_level(design, np.array([[0.0, 0.0, 1.0]])).size == 0
