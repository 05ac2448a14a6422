"""Containment degrees of freedom of group-level tests with several grouping factors.

References: the ranks are counted by hand from the layouts (donors per batch and
condition); ``G - rank([X_b, Z])`` after SAS PROC MIXED's containment rule. The LRT's
2 vs 2 warning is checked against the donors per condition of the simulated layout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import batchglm as bg
from batchglm.mixed.few_groups import FewGroupsWarning
from batchglm.mixed.small_sample import between_within
from batchglm.solvers.linalg import GroupSums
from mixed_reference import donors_in_batches, nested_null_poisson


def _cells(per_donor: int, n_donors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Donor of each cell and a cell-level covariate."""
    rng = np.random.default_rng(seed)
    donor = np.repeat(np.arange(n_donors), per_donor)
    return donor, rng.normal(size=donor.size)


def _design(donor: np.ndarray, stim: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(donor.size), stim[donor], covariate])


def test_donors_nested_in_batches_subtract_the_batches() -> None:
    # 4 vs 4 donors, batch b holds ctrl donor b and stim donor 4 + b.
    donor, cov = _cells(10, 8, seed=1)
    stim = np.repeat([0.0, 1.0], 4)
    batch = np.tile(np.arange(4), 2)
    x = _design(donor, stim, cov)
    ss = between_within(x, GroupSums(donor, 8), others=[GroupSums(batch[donor], 4)])
    # rank([1, stim, Z_batch]) = 4 batch columns + stim = 5 (the intercept lies in Z).
    assert ss.rank_joint == 5
    assert ss.rank_nested == 4
    assert ss.df_groups == 8 - 5
    assert ss.n_stratum == 8 - 4
    # Group-level columns get 3, the cell-level covariate n - G - 1 as with one factor.
    np.testing.assert_array_equal(ss.df, [3.0, 3.0, 80.0 - 8.0 - 1.0])
    # The stratum design is the condition centred within each batch: -1/2 and +1/2.
    np.testing.assert_allclose(ss.stratum_design()[:, 1], np.repeat([-0.5, 0.5], 4), atol=1e-12)
    np.testing.assert_allclose(ss.stratum_design()[:, 0], 0.0, atol=1e-12)


def test_likelihood_ratio_divisor_per_feature() -> None:
    # Feature 0 has the batch variance at 0 (one stratum of 8 donors), feature 1 not (4).
    donor, cov = _cells(10, 8, seed=1)
    stim = np.repeat([0.0, 1.0], 4)
    batch = np.tile(np.arange(4), 2)
    ss = between_within(
        _design(donor, stim, cov),
        GroupSums(donor, 8),
        others=[GroupSums(batch[donor], 4)],
        other_at_zero=np.array([[True], [False]]),
    )
    assert ss.n_ml is not None
    np.testing.assert_array_equal(ss.n_ml, [8.0, 4.0])
    lr = np.array([1.2, 1.2])
    # d (n / (G - rank Z)) (exp(LR / n) - 1) with d = 3, G - rank Z = 4.
    expected = [3 * 2 * np.expm1(1.2 / 8), 3 * 1 * np.expm1(1.2 / 4)]
    np.testing.assert_allclose(ss.lrt_numerator(lr), expected, rtol=1e-14)


def test_two_containing_factors_batches_in_sites() -> None:
    # Batches nested in 2 sites: Z_site lies in span(Z_batch), so rank(Z) = 4 and
    # rank([1, stim, Z]) = 5 as with the batches alone.
    donor, cov = _cells(10, 8, seed=8)
    stim = np.repeat([0.0, 1.0], 4)
    batch = np.tile(np.arange(4), 2)
    site = batch // 2
    ss = between_within(
        _design(donor, stim, cov),
        GroupSums(donor, 8),
        others=[GroupSums(site[donor], 2), GroupSums(batch[donor], 4)],
    )
    assert (ss.rank_nested, ss.rank_joint, ss.df_groups, ss.n_stratum) == (4, 5, 3, 4)
    np.testing.assert_allclose(ss.stratum_design()[:, 1], np.repeat([-0.5, 0.5], 4), atol=1e-12)


def test_unequal_nesting_three_batches() -> None:
    # 3 vs 3 donors in 2 batches of 3 donors: batch 0 = c0, c1, s0; batch 1 = c2, s1, s2.
    donor, cov = _cells(12, 6, seed=2)
    stim = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    batch = np.array([0, 0, 1, 0, 1, 1])
    ss = between_within(
        _design(donor, stim, cov), GroupSums(donor, 6), others=[GroupSums(batch[donor], 2)]
    )
    # rank([1, stim, Z]) = 2 + 1 = 3: d = 6 - 3; ML divisor 6 - 2.
    assert (ss.df_groups, ss.n_stratum) == (3, 4)


def test_factor_crossed_with_donors_subtracts_nothing() -> None:
    # Every donor's cells are split over 2 plates: plate effects are estimated within donors.
    donor, cov = _cells(10, 8, seed=3)
    stim = np.repeat([0.0, 1.0], 4)
    plate = np.tile([0, 1], donor.size // 2)
    x = _design(donor, stim, cov)
    one = between_within(x, GroupSums(donor, 8))
    two = between_within(x, GroupSums(donor, 8), others=[GroupSums(plate, 2)])
    assert two.nested is None
    assert two.df_groups == one.df_groups == 8 - 2
    assert two.n_stratum == one.n_stratum == 8
    np.testing.assert_array_equal(two.df, one.df)


def test_factor_confounded_with_the_condition_is_left_out() -> None:
    # Whole batches of one condition: the condition is compared between batches, not
    # within them, so the donor stratum's rule must not subtract the batches.
    donor, cov = _cells(10, 8, seed=4)
    stim = np.repeat([0.0, 1.0], 4)
    batch = np.repeat([0, 1, 2, 3], 2)
    ss = between_within(
        _design(donor, stim, cov), GroupSums(donor, 8), others=[GroupSums(batch[donor], 4)]
    )
    assert ss.nested is None
    assert ss.df_groups == 8 - 2


def test_one_factor_unchanged() -> None:
    donor, cov = _cells(10, 6, seed=5)
    stim = np.repeat([0.0, 1.0], 3)
    x = _design(donor, stim, cov)
    ss = between_within(x, GroupSums(donor, 6), variances=np.array([0.1, 0.3]))
    assert (ss.df_groups, ss.n_stratum, ss.rank_between) == (6 - 2, 6, 2)
    np.testing.assert_array_equal(ss.df, [4.0, 4.0, 60.0 - 6.0 - 1.0])
    # The REML-scaled prior variance: mean 0.2 times G / (G - p_b).
    assert ss.prior_var == pytest.approx(0.2 * 6 / 4)
    assert ss.nested is None and ss.n_ml is None
    np.testing.assert_array_equal(ss.stratum_design(), ss.group_design)


def _nested_obs(per_condition: int, n_batches: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_donors = 2 * per_condition
    donor = np.repeat(np.arange(n_donors), rng.integers(15, 30, n_donors))
    return pd.DataFrame(
        {
            "donor": [f"d{g}" for g in donor],
            "batch": [f"b{(g % per_condition) % n_batches}" for g in donor],
            "condition": np.where(donor < per_condition, "ctrl", "stim"),
        },
        index=[f"cell{i}" for i in range(donor.size)],
    )


def test_fit_uses_the_containment_rule() -> None:
    obs = _nested_obs(4, 4, seed=6)
    rng = np.random.default_rng(6)
    y = rng.poisson(3.0, (obs.shape[0], 3)).astype(float)
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    assert res.small_sample is not None
    assert (res.small_sample.df_groups, res.small_sample.n_stratum) == (8 - 5, 8 - 4)


def test_lrt_warns_with_two_donors_per_condition() -> None:
    obs = _nested_obs(2, 1, seed=7)
    rng = np.random.default_rng(7)
    donor = obs["donor"].str[1:].astype(int).to_numpy()
    y = rng.poisson(np.exp(1.0 + rng.normal(0, 0.3, (4, 3))[donor])).astype(float)
    kw = dict(obs=obs, random_effects="donor", family="poisson")
    full = bg.fit(y, "~ condition", **kw)
    reduced = bg.fit(y, "~ 1", **kw)
    with pytest.warns(FewGroupsWarning, match=r"only 2 vs 2 groups of 'donor' per level"):
        table = bg.de.lrt(full=full, reduced=reduced).summary()
    assert np.isfinite(table["pvalue"]).all()


def test_wald_matches_the_exact_test_on_donor_means() -> None:
    # Balanced 4 vs 4 donors in 4 batches, 10 cells each, Poisson counts near e^8 (sampling
    # noise 0.02 on the log scale against donor SD 0.3): the model is the balanced nested
    # linear mixed model on log donor means, whose exact test of the condition is OLS of
    # the log donor means on [batch indicators, condition] with 8 - 5 = 3 residual df. The
    # unmoderated Wald test must give that p-value (with 6 df it would not).
    rng = np.random.default_rng(3)
    n_donors, n_batches, n_feat = 8, 4, 8
    donor = np.repeat(np.arange(n_donors), 10)
    stim = np.repeat([0.0, 1.0], 4)
    obs, batch = donors_in_batches(donor, n_batches)
    eta = (
        8.0
        + rng.normal(0.0, 0.5, (n_batches, n_feat))[batch[donor]]
        + rng.normal(0.0, 0.3, (n_donors, n_feat))[donor]
    )
    y = rng.poisson(np.exp(eta)).astype(float)
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    pval = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()["pvalue"]
    reduced = bg.fit(y, "~ 1", obs=obs, random_effects=["donor", "batch"], family="poisson")
    p_lrt = bg.de.lrt(full=res, reduced=reduced, moderate=False).summary()["pvalue"]
    sums = np.zeros((n_donors, n_feat))
    np.add.at(sums, donor, y)
    x = np.column_stack([np.eye(n_batches)[batch], stim])
    ref = np.array([sm.OLS(np.log(sums[:, f] / 10), x).fit().pvalues[-1] for f in range(n_feat)])
    interior = np.all(np.asarray(res.random_var) > 0.01, axis=1)
    assert interior.sum() >= 5
    np.testing.assert_allclose(pval.to_numpy()[interior], ref[interior], rtol=2e-3)
    np.testing.assert_allclose(p_lrt.to_numpy()[interior], ref[interior], rtol=2e-3)


def test_nested_null_calibration() -> None:
    # 400 null NB genes, 4 vs 4 donors (15-40 cells) in 4 batches, batch SD 0.3, donor SD
    # 0.2-0.4: the default (moderated) Wald and LRT reject within [0.03, 0.07] at 0.05.
    # With the first factor's df alone (d = 6) the Wald rejected 0.080 on these data.
    y, obs = nested_null_poisson(np.random.default_rng(4), 8, 4, 400)
    kw = dict(obs=obs, random_effects=["donor", "batch"])
    full = bg.fit(y, "~ condition", **kw)
    wald = bg.de.wald(full, coef="condition[T.stim]").summary()["pvalue"].to_numpy()
    lrt = bg.de.lrt(full=full, reduced=bg.fit(y, "~ 1", **kw)).summary()["pvalue"].to_numpy()
    assert 0.03 <= np.mean(wald < 0.05) <= 0.07
    assert 0.03 <= np.nanmean(lrt < 0.05) <= 0.07
