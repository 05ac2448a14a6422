"""Wald tests of features separated in the tested direction (a group with only zeros).

The Wald statistic collapses at the boundary (Hauck-Donner); ``bg.de.wald`` replaces it by
the likelihood-ratio statistic of the same hypothesis. References here are independent:
scipy.optimize maximisations of the NB likelihood, and closed forms.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from scipy.special import gammaln

import batchglm as bg
from batchglm.de.separation import separated_in_direction
from batchglm.fitted import fitted_mean

# These tests use few replicates on purpose (small designs for separation); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")


def _nb_loglik(y, mu, r):
    return np.sum(
        gammaln(y + r)
        - gammaln(r)
        - gammaln(y + 1)
        + r * np.log(r / (r + mu))
        + y * np.log(mu / (r + mu))
    )


def _nb_max(y, sf):
    """Maximum NB log-likelihood of one common mean ``m * sf`` and size ``r`` (scipy)."""

    def neg(par):
        return -_nb_loglik(y, np.exp(par[0]) * sf, np.exp(par[1]))

    start = np.array([np.log(y.mean() + 0.1), 0.0])
    best = optimize.minimize(neg, start, method="BFGS", options={"gtol": 1e-8})
    best = optimize.minimize(
        neg, best.x, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}
    )
    return -best.fun


@pytest.fixture(scope="module")
def two_groups():
    """5 vs 5 NB counts; features 0 and 1 are all zero in one group and ~30 in the other."""
    rng = np.random.default_rng(31)
    n, f = 10, 40
    group = np.repeat([0.0, 1.0], 5)
    x = np.column_stack([np.ones(n), group])
    sf = np.exp(rng.normal(0.0, 0.2, n))
    mu = sf[:, None] * np.exp(rng.uniform(1.5, 4.0, f))[None, :]
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(float)
    y[:5, 0] = 0.0
    y[5:, 0] = [12.0, 41.0, 25.0, 60.0, 30.0]  # over-dispersed: finite NB size
    y[5:, 1] = 0.0
    y[:5, 1] = [35.0, 22.0, 50.0, 18.0, 29.0]
    res = bg.fit(y, x, size_factors=sf)
    return y, x, sf, res


def test_separated_wald_is_the_likelihood_ratio_test(two_groups):
    y, x, sf, res = two_groups
    assert list(res.status.iloc[:2]) == ["separated", "separated"]
    de = bg.de.wald(res, coef="p1", data=y)
    assert list(de.kind[:2]) == ["lrt", "lrt"]
    assert (de.kind[2:] == "wald").all()
    # Independent reference: the separated group contributes nothing at mean 0, so the full
    # maximum is the NB maximum of the other group alone; the reduced model is one mean.
    for j, other in ((0, slice(5, 10)), (1, slice(0, 5))):
        ll_full = _nb_max(y[other, j], sf[other])
        ll_red = _nb_max(y[:, j], sf)
        lr = 2.0 * (ll_full - ll_red)
        assert de.stat[j] == pytest.approx(lr, rel=1e-5)
        assert de.pval[j] == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-4)
        assert de.pval[j] < 1e-4  # 0 vs ~30 counts is a clear difference
    lrt = bg.de.lrt(y, x, x[:, :1], size_factors=sf)
    np.testing.assert_allclose(de.pval[:2], lrt.pval[:2], rtol=1e-6)
    # The other features keep the plain Wald test: z = coef / se.
    z = (res.coef_loc["p1"] / res.se_loc["p1"]).to_numpy()
    np.testing.assert_allclose(de.pval[2:], 2 * stats.norm.sf(np.abs(z[2:])), rtol=1e-8)


def test_separated_rows_of_the_table(two_groups):
    y, _, _, res = two_groups
    tab = bg.de.wald(res, coef="p1", data=y).summary(sort_by=None)
    rows = tab.iloc[:2]
    assert list(rows["status"]) == ["separated", "separated"]
    assert list(rows["stat_kind"]) == ["lrt", "lrt"]
    # Raw estimates run towards +-infinity (beyond 20 in log2); the table caps them at 10.
    assert rows["coef_mle"].iloc[0] / np.log(2) > 20 and rows["coef_mle"].iloc[1] < -20 * np.log(2)
    assert list(rows["log2FoldChange"]) == [10.0, -10.0]
    assert rows["lfc_capped"].all() and not tab["lfc_capped"].iloc[2:].any()
    # The signed statistic is the signed root of the LR statistic.
    lr = bg.de.wald(res, coef="p1", data=y).stat[:2]
    np.testing.assert_allclose(rows["stat"], [np.sqrt(lr[0]), -np.sqrt(lr[1])])
    smaller = bg.de.wald(res, coef="p1", data=y, max_lfc=3.0).summary(sort_by=None)
    assert smaller["log2FoldChange"].abs().max() == 3.0
    with pytest.raises(ValueError, match=r"`max_lfc` must be positive, but 0.0 was given"):
        bg.de.wald(res, coef="p1", max_lfc=0.0)


def test_without_data_separated_features_get_nan_and_a_warning(two_groups):
    _, _, _, res = two_groups
    bare = replace(res, data=None)  # a result built without its data
    with pytest.warns(
        UserWarning,
        match=r"2 feature\(s\) \(feature0, feature1\) have status "
        r"'separated'.*pass the fit's data as `data=`",
    ):
        de = bg.de.wald(bare, coef="p1")
    assert np.isnan(de.pval[:2]).all() and np.isfinite(de.pval[2:]).all()
    assert list(de.kind[:2]) == ["none", "none"]
    assert list(de.summary(sort_by=None)["status"].iloc[:2]) == ["separated", "separated"]


def test_the_fit_keeps_its_data_for_the_boundary_lrt(two_groups):
    y, _, _, res = two_groups
    kept = bg.de.wald(res, coef="p1")
    given = bg.de.wald(res, coef="p1", data=y)
    np.testing.assert_array_equal(kept.pval, given.pval)
    assert list(kept.kind[:2]) == ["lrt", "lrt"]


def test_map_dispersion_uses_the_same_refit(two_groups):
    y, x, sf, res = two_groups
    de = bg.de.wald(res, coef="p1", dispersion="map", data=y)
    assert list(de.kind[:2]) == ["lrt", "lrt"]
    lrt = bg.de.lrt(y, x, x[:, :1], size_factors=sf, dispersion="map")
    # The same likelihood ratio, floored by the conditional NB test of the zero side at
    # the MAP dispersion (batchglm.de.zero_side; bg.de.lrt applies the same floor). At ~150 reads
    # against zeros the floor is ~1e-21 and binds (the chi-squared p is ~1e-22); both stay
    # far below 1e-4. (Before, the Poisson floor never bound here and p was the LRT's.)
    # Null means: the full fit projected onto p1 = 0 (batchglm.de.floor_null.floor_null_means):
    # for an intercept-only null, the intercept is the information-weighted mean of the full
    # fit's predictor (size factors excluded), weights mu / (1 + alpha mu); about the
    # non-zero group's level, where the reduced ML fit sits at about half of it.
    floor = np.array(
        [
            _exact_no_read(
                y[:, j], _projected_null(res, j, de.nb_dispersion[j]), j, de.nb_dispersion[j]
            )
            for j in (0, 1)
        ]
    )
    np.testing.assert_allclose(de.stat[:2], lrt.stat[:2], rtol=1e-6)
    assert np.all(de.pval[:2] >= lrt.pval[:2] * (1 - 1e-6))
    # The floor's closed form moment-matches each side's gamma intensities (size factors
    # differ): within 30 % of the exact convolution here (measured: 11 %).
    np.testing.assert_allclose(de.pval[:2], np.maximum(lrt.pval[:2], 2 * floor), rtol=0.3)
    assert (de.pval[:2] < 1e-4).all()


def _projected_null(res, j, alpha):
    """Means of an intercept-only null at the full fit's information-weighted mean predictor."""
    mu = fitted_mean(res)[:, j]
    eta = np.log(fitted_mean(res, size_factors=False)[:, j])
    w = mu / (1.0 + alpha * mu)
    sf = mu / np.exp(eta)
    return sf * np.exp(np.sum(w * eta) / np.sum(w))


def _exact_no_read(y, mu_null, j, alpha):
    """P(no read on the zero side | total) by convolving per-sample NB probabilities."""
    mu = np.asarray(mu_null)
    total = int(y.sum())
    zero = y == 0
    r = 1.0 / alpha
    k = np.arange(total + 1)
    pmf = [stats.nbinom.pmf(k, r, r / (r + m)) for m in mu]
    on = np.array([1.0] + [0.0] * total)
    for i in np.flatnonzero(~zero):
        on = np.convolve(on, pmf[i])[: total + 1]
    off = np.array([1.0] + [0.0] * total)
    for i in np.flatnonzero(zero):
        off = np.convolve(off, pmf[i])[: total + 1]
    return off[0] * on[total] / np.convolve(on, off)[total]


@pytest.fixture(scope="module")
def four_groups():
    rng = np.random.default_rng(5)
    group = np.repeat(["A", "B", "C", "D"], 4)
    obs = pd.DataFrame({"g": group}, index=[f"s{i}" for i in range(16)])
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + 25.0), size=(16, 30)).astype(float)
    y[group == "A", 0] = 0.0  # reference group all zero
    y[group == "C", 1] = 0.0  # a non-reference group all zero
    res = bg.fit(y, "~ 1 + g", obs=obs)
    return y, obs, group, res


def _lrt_p(y, group, obs, keep):
    # Reduced design: intercept plus indicators of the levels named in `keep`.
    red = np.column_stack([np.ones(len(group))] + [(group == k) * 1.0 for k in keep])
    return bg.de.lrt(y, full_loc="~ 1 + g", reduced_loc=red, obs=obs).pval


def test_four_groups_only_combinations_through_the_zero_group_switch(four_groups):
    y, obs, group, res = four_groups
    assert list(res.status.iloc[:2]) == ["separated", "separated"]
    # B vs A involves feature 0's zero group A, not feature 1's zero group C.
    b = bg.de.wald(res, coef="g[T.B]", data=y)
    assert list(b.kind[:2]) == ["lrt", "wald"]
    np.testing.assert_allclose(b.pval[0], _lrt_p(y, group, obs, "CD")[0], rtol=1e-6)
    # C vs A involves both.
    c = bg.de.wald(res, coef="g[T.C]", data=y)
    assert list(c.kind[:2]) == ["lrt", "lrt"]
    np.testing.assert_allclose(c.pval[:2], _lrt_p(y, group, obs, "BD")[:2], rtol=1e-6)
    # D vs B involves neither: the ordinary Wald test, finite SE for feature 0 too.
    db = bg.de.wald(res, contrast={"g[T.D]": 1.0, "g[T.B]": -1.0}, data=y)
    assert list(db.kind[:2]) == ["wald", "wald"]
    cov = res.covariance()
    var = cov[:, 3, 3] + cov[:, 1, 1] - 2 * cov[:, 1, 3]
    est = (res.coef_loc["g[T.D]"] - res.coef_loc["g[T.B]"]).to_numpy()
    # Feature 0's covariance entries are huge (the A direction) and cancel in the
    # difference, which costs digits; feature 1's are ordinary.
    assert db.stat[0] == pytest.approx(est[0] ** 2 / var[0], rel=1e-3)
    assert db.stat[1] == pytest.approx(est[1] ** 2 / var[1], rel=1e-8)
    assert np.sqrt(var[0]) < 1.0
    # The joint test of all groups involves both; its LRT is against the intercept model.
    joint = bg.de.wald(res, coef=["g[T.B]", "g[T.C]", "g[T.D]"], data=y)
    assert list(joint.kind[:2]) == ["lrt", "lrt"] and joint.df == 3
    ref = bg.de.lrt(y, full_loc="~ 1 + g", reduced_loc="~ 1", obs=obs).pval
    np.testing.assert_allclose(joint.pval[:2], ref[:2], rtol=1e-6)


def test_detection_is_by_row_space():
    # Unit check on a hand-made fit: zero-fitted group A (rows 0-1) of a 3-group design.
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(6), np.repeat([0, 1, 0], 2), np.repeat([0, 0, 1], 2)])
    y = rng.poisson(20.0, size=(6, 3)).astype(float)
    y[:2, 0] = 0.0
    res = bg.fit(y, x, family="poisson")
    assert res.status.iloc[0] == "separated"
    involved = separated_in_direction(res, np.array([[0.0, 1.0, 0.0]]))
    assert involved.tolist() == [True, False, False]
    assert not separated_in_direction(res, np.array([[0.0, 1.0, -1.0]])).any()
    assert separated_in_direction(res, np.array([[1.0, 0.0, 0.0]]))[0]


def test_null_separated_low_count_genes_match_the_lrt():
    # NB nulls, 6 vs 6, low means: one group is all zero by chance in a good share.
    rng = np.random.default_rng(2024)
    n, f = 12, 600
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], 6)])
    mean = np.exp(rng.uniform(np.log(0.1), np.log(2.0), f))
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mean[None, :]), size=(n, f)).astype(float)
    grp = x[:, 1] == 1
    sep = ((y[grp].sum(0) == 0) | (y[~grp].sum(0) == 0)) & (y.sum(0) > 0)
    res = bg.fit(y, x)
    de = bg.de.wald(res, coef="p1", data=y)
    lrt = bg.de.lrt(y, x, x[:, :1])
    assert sep.sum() > 100
    assert (de.kind[sep] == "lrt").all() and (de.kind[~sep] == "wald").all()
    # The likelihood ratio, floored by the exact conditional NB test of the separation
    # (batchglm.de.zero_side). Two equal groups, no size factors, one NB dispersion per
    # feature (the fit's, as the test uses): the zero side's share of the gamma
    # intensities is Beta(6 / alpha, 6 / alpha), so "no read there" given the total T is
    # beta-binomial, B(k + T, k) / B(k, k) = prod_{i < T} (k + i) / (2 k + i), with the
    # Poisson value 1 / 2^T as its alpha -> 0 limit. (Before, the floor was that Poisson
    # value, which over-dispersed reads beat.)
    total = y.sum(0)
    k = 6.0 * np.exp(res.coef_scale.to_numpy()[:, 0])
    beta_binomial = np.array(
        [
            np.prod((kj + np.arange(t)) / (2 * kj + np.arange(t)))
            for kj, t in zip(k, total, strict=True)
        ]
    )
    floor = np.minimum(1.0, 2.0 * beta_binomial)
    # (bg.de.lrt now applies the same floor, so the unfloored reference is the chi-squared
    # p-value of its statistic.)
    chi2_p = stats.chi2.sf(lrt.stat, 1)
    expected = np.maximum(chi2_p, floor)
    np.testing.assert_allclose(de.pval[sep], expected[sep], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(lrt.pval[sep], expected[sep], rtol=1e-6, atol=1e-12)
    assert np.all(floor[sep] >= np.minimum(1.0, 2.0 * 0.5 ** total[sep]) * (1 - 1e-12))
    assert (de.pval[sep] > chi2_p[sep] * (1 + 1e-6)).sum() > 50  # the floor acts here
    # With one or two counts in all, a separated null gene is never significant.
    tiny = sep & (y.sum(0) <= 2)
    assert tiny.sum() > 50 and (de.pval[tiny] > 0.05).all()
    # Over all testable low-count genes the test stays near its level (the stratum of
    # separated genes alone is selected for extreme splits; see docs/inference.md).
    ok = np.isfinite(de.pval)
    assert np.mean(de.pval[ok] < 0.05) < 0.08


def test_data_must_be_the_fits(two_groups):
    y, _, _, res = two_groups
    with pytest.raises(
        ValueError,
        match=r"`data` must be the data of the fit, shape \(10, 40\), "
        r"but its shape is \(10, 39\)",
    ):
        bg.de.wald(res, coef="p1", data=y[:, 1:])
    renamed = pd.DataFrame(y, columns=[f"other{j}" for j in range(40)])
    # The fit was made on an unnamed array, so named data pair with it by position.
    np.testing.assert_array_equal(
        bg.de.wald(res, coef="p1", data=renamed).pval, bg.de.wald(res, coef="p1").pval
    )
    named = bg.fit(pd.DataFrame(y, columns=[f"g{j}" for j in range(40)]), res.loc.matrix)
    with pytest.raises(ValueError, match=r"`data` must name the same features as the fit"):
        bg.de.wald(named, coef="p1", data=renamed)


def test_scale_parameter_of_the_zero_group_leaves_no_information():
    rng = np.random.default_rng(31)
    cond = np.repeat([0.0, 1.0], 6)
    x = np.column_stack([np.ones(12), cond])
    y = rng.negative_binomial(5, 5 / (5 + 30.0), size=(12, 6)).astype(float)
    y[:6, 0] = 0.0
    y[6:, 0] = [35, 42, 34, 35, 45, 46]
    # A dispersion per condition: the all-zero condition's own dispersion explains the zeros.
    per_group = bg.fit(y, x, x)
    with pytest.warns(UserWarning, match=r"1 separated feature\(s\) \(feature0\) have a scale"):
        de = bg.de.wald(per_group, coef="p1")
    assert np.isnan(de.pval[0]) and de.kind[0] == "none"
    assert np.isfinite(de.pval[1:]).all()
    # One shared dispersion: the zeros are informative and the LR test finds the effect.
    shared = bg.de.wald(bg.fit(y, x), coef="p1")
    assert shared.kind[0] == "lrt" and shared.pval[0] < 1e-6
    with pytest.warns(UserWarning, match=r"1 separated feature\(s\) \(feature0\) have a scale"):
        lrt = bg.de.lrt(y, x, x[:, :1], full_scale=x)
    assert np.isnan(lrt.pval[0]) and np.isfinite(lrt.pval[1:]).all()
