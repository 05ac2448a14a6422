"""Contrasts whose value only the identifiability constraints decide are refused.

A condition with a level that coincides with a batch (ctrl only in batch b1) cannot be
separated from the batch. The rank-deficiency error must not suggest nesting the condition
in the batch, and a fit made that way anyway must refuse contrasts across batches (their
value is the zero-sum convention, not data), while contrasts within a batch stay
testable and agree with a closed form.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg


@pytest.fixture(scope="module")
def confounded() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(404)
    group = np.repeat(["ctrl", "ifn", "stim"], 5)
    obs = pd.DataFrame(
        {"group": group, "batch": np.where(group == "ctrl", "b1", "b2")},
        index=[f"s{i}" for i in range(group.size)],
    )
    mu = np.exp(rng.uniform(2.0, 4.0, 6))[None, :] * np.where(group == "stim", 2.0, 1.0)[:, None]
    y = rng.negative_binomial(8.0, 8.0 / (8.0 + mu)).astype(np.float64)
    return y, obs


def test_rank_error_does_not_suggest_nesting_a_condition_in_a_batch(
    confounded: tuple[np.ndarray, pd.DataFrame],
) -> None:
    y, obs = confounded
    with pytest.raises(ValueError, match=r"No constraint can separate") as err:
        bg.fit(y, "~ batch + group", obs=obs)
    msg = str(err.value)
    assert "level 'ctrl' of 'group' occurs only in level 'b1' of 'batch'" in msg
    assert "constraints_loc={" not in msg
    assert "after `constraints_loc`" not in msg  # none were given
    assert "\n" not in msg


def test_replicates_nested_in_conditions_are_still_suggested() -> None:
    obs = pd.DataFrame(
        {"condition": np.repeat(["a", "b"], 6), "rep": np.repeat([f"r{k}" for k in range(4)], 3)}
    )
    y = np.random.default_rng(1).poisson(10.0, size=(12, 3)).astype(np.float64)
    with pytest.raises(ValueError, match=r"constraints_loc=\{'rep': 'condition'\}"):
        bg.fit(y, "~ condition + rep", obs=obs)


def test_contrasts_across_the_confounded_batch_are_refused(
    confounded: tuple[np.ndarray, pd.DataFrame],
) -> None:
    y, obs = confounded
    res = bg.fit(
        y, "~ batch + group", obs=obs, constraints_loc={"group": "batch"}, size_factors=None
    )
    msg = r"'group: stim vs ctrl' is not estimable from the loc design: .*'batch\[T.b2\]'"
    with pytest.raises(ValueError, match=msg):
        bg.de.wald(res, contrast=("group", "stim", "ctrl"))
    with pytest.raises(ValueError, match=r"'group\[stim\] - group\[ctrl\]' is not estimable"):
        bg.de.wald(res, contrast="group[stim] - group[ctrl]")
    with pytest.raises(ValueError, match=r"is not estimable"):
        bg.de.ql_f(res, contrast=("group", "stim", "ctrl"))
    with pytest.raises(ValueError, match=r"is not estimable"):
        bg.de.lfc_shrink(res, contrast=("group", "stim", "ctrl"), data=y, dispersion="mle")


def test_contrast_within_a_batch_is_the_closed_form(
    confounded: tuple[np.ndarray, pd.DataFrame],
) -> None:
    y, obs = confounded
    res = bg.fit(
        y, "~ batch + group", obs=obs, constraints_loc={"group": "batch"}, size_factors=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)
        de = bg.de.wald(res, contrast=("group", "stim", "ifn"))
    # Saturated in the three groups, no offsets: each group's NB mean is its sample mean.
    means = pd.DataFrame(y).groupby(obs["group"].to_numpy()).mean()
    expect = np.log(means.loc["stim"] / means.loc["ifn"]).to_numpy()
    np.testing.assert_allclose(de.coef_mle, expect, rtol=1e-6)


def test_nested_replicates_keep_condition_and_within_condition_contrasts() -> None:
    rng = np.random.default_rng(9)
    rep = np.repeat([f"r{k}" for k in range(1, 5)], 4)
    obs = pd.DataFrame({"condition": np.where(np.isin(rep, ["r1", "r2"]), "a", "b"), "rep": rep})
    y = rng.poisson(20.0, size=(16, 3)).astype(np.float64)
    res = bg.fit(
        y, "~ condition + rep", obs=obs, constraints_loc={"rep": "condition"}, size_factors=None
    )
    means = np.log(pd.DataFrame(y).groupby(rep).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pseudoreplication / small-sample warnings
        cond = bg.de.wald(res, coef="condition[T.b]")
        within = bg.de.wald(res, contrast="rep[r1] - rep[r2]")
        one = bg.de.wald(res, coef="rep[r3]")
    # Condition: mean of its replicates' log means; r1 - r2 and r3's deviation: closed form.
    np.testing.assert_allclose(
        cond.coef_mle,
        (means.loc["r3"] + means.loc["r4"] - means.loc["r1"] - means.loc["r2"]) / 2,
        rtol=1e-6,
    )
    np.testing.assert_allclose(within.coef_mle, means.loc["r1"] - means.loc["r2"], rtol=1e-6)
    np.testing.assert_allclose(one.coef_mle, (means.loc["r3"] - means.loc["r4"]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match=r"'rep\[r1\] - rep\[r3\]' is not estimable"):
        bg.de.wald(res, contrast="rep[r1] - rep[r3]")
