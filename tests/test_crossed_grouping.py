"""Tested coefficients that vary within random-effect levels (donor labels reused across
conditions): :class:`batchglm.de.CrossedGroupingWarning` at test time, and the fix.

The reference for calibration is the nominal level: on null genes a test at 0.05 rejects
about 5 % (binomial bounds for the number of genes simulated).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de import CrossedGroupingWarning

COEF = "condition[T.stim]"


def _cells(seed: int, n_per_arm: int = 4, n_cells: int = 25, n_genes: int = 120):
    """Null counts of ``2 n_per_arm`` different donors, with reused and unique labels."""
    rng = np.random.default_rng(seed)
    n_donors = 2 * n_per_arm
    true_donor = np.repeat(np.arange(n_donors), n_cells)
    condition = np.where(true_donor < n_per_arm, "ctrl", "stim")
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(condition, ["ctrl", "stim"]),
            # "d1".."d4" in both arms: different people, same labels.
            "donor": [f"d{k % n_per_arm + 1}" for k in true_donor],
            "lib": rng.normal(0.0, 1.0, true_donor.size),
        },
        index=[f"c{i}" for i in range(true_donor.size)],
    )
    obs["donor_unique"] = obs["donor"].astype(str) + "_" + obs["condition"].astype(str)
    base = rng.uniform(1.0, 2.5, n_genes)
    u = rng.normal(0.0, 0.6, (n_donors, n_genes))
    mu = np.exp(base + u[true_donor])
    counts = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float64)
    return counts, obs


def _crossed(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CrossedGroupingWarning)]


def test_reused_labels_warn_and_unique_labels_fix_the_null_rate() -> None:
    counts, obs = _cells(seed=1)
    reused = bg.fit(counts, "~ condition", obs=obs, random_effects="donor")
    with pytest.warns(CrossedGroupingWarning, match=r"'donor': 4 of 4 levels .* crossed") as rec:
        p_reused = bg.de.wald(reused, coef=COEF).pval
    message = _crossed(rec.list)[0]
    assert "obs['donor'] = obs['donor'].astype(str) + '_' + obs['condition'].astype(str)" in message
    assert "random_effects=['donor_condition', 'donor']" in message

    obs_fixed = obs.assign(donor=obs["donor_unique"])
    unique = bg.fit(counts, "~ condition", obs=obs_fixed, random_effects="donor")
    with warnings.catch_warnings(record=True) as rec2:
        warnings.simplefilter("always")
        p_unique = bg.de.wald(unique, coef=COEF).pval
    assert _crossed(rec2) == []
    n = len(p_unique)
    # Reused labels: donor-to-donor variation is left out of the condition's error.
    assert np.mean(p_reused < 0.05) > 0.25
    # Unique labels: nominal-ish (0.05 +- about 3 binomial SDs for 120 genes).
    assert np.mean(p_unique < 0.05) < 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)


def test_lrt_warns_on_crossed_labels() -> None:
    counts, obs = _cells(seed=2, n_genes=30)
    full = bg.fit(counts, "~ condition", obs=obs, random_effects="donor")
    reduced = bg.fit(counts, "~ 1", obs=obs, random_effects="donor")
    with pytest.warns(CrossedGroupingWarning, match=r"4 of 4 levels \('d1', 'd2', 'd3', \.\.\.\)"):
        bg.de.lrt(full=full, reduced=reduced)


def test_nested_labels_and_cell_level_covariates_do_not_warn() -> None:
    counts, obs = _cells(seed=3, n_genes=30)
    obs = obs.assign(donor=obs["donor_unique"])
    res = bg.fit(counts, "~ condition + lib", obs=obs, random_effects="donor")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        bg.de.wald(res, coef=COEF)
        bg.de.wald(res, coef="lib")  # a cell-level covariate is within donors by nature
    assert _crossed(rec) == []


def test_combination_factor_must_come_first() -> None:
    counts, obs = _cells(seed=4, n_genes=20)
    obs["donor_condition"] = obs["donor_unique"]
    second = bg.fit(counts, "~ condition", obs=obs, random_effects=["donor", "donor_condition"])
    with pytest.warns(CrossedGroupingWarning, match=r"list 'donor_condition'.* first"):
        bg.de.wald(second, coef=COEF)
    first = bg.fit(counts, "~ condition", obs=obs, random_effects=["donor_condition", "donor"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        bg.de.wald(first, coef=COEF)
    assert _crossed(rec) == []
