"""The zero-side floor in ``bg.de.lrt`` / ``bg.de.test(method="lrt")`` and for Poisson fits.

A gene with a handful of reads, all in one group, must not be called by the asymptotic
chi-squared (or F) reference of a likelihood-ratio test; a clearly on/off gene still must.
The references here are computed in the test with scipy: the exact conditional binomial
test of a Poisson two-group split, the beta-binomial of an NB split with equal means, and
the closed-form Poisson likelihood ratio of two groups.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.de.degrees_of_freedom import SmallSampleWarning


def _lrt_or_test(dispersion: str, run):
    """Run a test; with ``"mle"`` it warns (small sample), which is checked here."""
    if dispersion != "mle":
        return run()
    with pytest.warns(SmallSampleWarning, match="anti-conservative"):
        return run()


def _two_groups(n_per: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"c": ["A"] * n_per + ["B"] * n_per}, index=[f"s{i}" for i in range(2 * n_per)]
    )


@pytest.fixture(scope="module")
def poisson_table():
    # 4 vs 4 Poisson counts, unequal size factors; features 0-14 all zero in group B with
    # 1-15 reads in group A, the rest null with counts in both groups.
    rng = np.random.default_rng(77)
    obs = _two_groups(4)
    sf = np.exp(rng.normal(0.0, 0.3, 8))
    y = rng.poisson(sf[:, None] * 4.0, size=(8, 30)).astype(float)
    y[4:, :15] = 0.0
    for j in range(15):  # total j + 1 reads spread over group A
        y[:4, j] = rng.multinomial(j + 1, sf[:4] / sf[:4].sum())
    return y, obs, sf


def test_poisson_lrt_of_a_separated_gene_is_the_exact_binomial_floor(poisson_table):
    y, obs, sf = poisson_table
    de = bg.de.lrt(y, "~ c", "~ 1", obs=obs, size_factors=sf, family="poisson")
    # Two groups, Poisson, group B all zero: the LR statistic is 2 T log(S / S_A) (S the
    # sum of all size factors, S_A group A's), and under the null model, given the total T,
    # the number of reads in group B is Binomial(T, S_B / S): the exact conditional test
    # of "no read in B" is P = binom.pmf(0, T, S_B / S), doubled for two sides.
    total = y[:, :15].sum(0)
    s, s_a, s_b = sf.sum(), sf[:4].sum(), sf[4:].sum()
    chi2_p = stats.chi2.sf(2.0 * total * np.log(s / s_a), 1)
    exact = np.minimum(1.0, 2.0 * stats.binom.pmf(0, total.astype(int), s_b / s))
    np.testing.assert_allclose(de.stat[:15], 2.0 * total * np.log(s / s_a), rtol=1e-5)
    np.testing.assert_allclose(de.pval[:15], np.maximum(chi2_p, exact), rtol=1e-6)
    assert np.all(exact[:5] > chi2_p[:5])  # the floor binds for a handful of reads
    assert np.all(de.pval[:5] > 0.05)  # 1-5 reads in one group are never called
    assert de.pval[14] < 1e-3  # 15 reads against zeros still are
    # Features with counts in both groups are not floored: their p is the chi-squared one.
    np.testing.assert_allclose(de.pval[15:], stats.chi2.sf(de.stat[15:], 1), rtol=1e-10)
    # The Wald path tests separated Poisson features by the same floored likelihood ratio.
    res = bg.fit(y, "~ c", obs=obs, size_factors=sf, family="poisson")
    wald = bg.de.wald(res, coef="c[T.B]", data=y)
    np.testing.assert_allclose(wald.pval[:15], de.pval[:15], rtol=1e-6)


def test_pipeline_lrt_with_contrast_and_coef_keeps_the_floor(poisson_table):
    y, obs, sf = poisson_table
    total = y[:, :15].sum(0)
    exact = np.minimum(1.0, 2.0 * stats.binom.pmf(0, total.astype(int), sf[4:].sum() / sf.sum()))
    kw = {"obs": obs, "method": "lrt", "family": "poisson", "size_factors": sf}
    by_contrast = bg.de.test(y, "~ c", contrast=("c", "B", "A"), **kw)
    by_reduced = bg.de.test(y, "~ c", reduced="~ 1", coef="c[T.B]", **kw)
    for de in (by_contrast, by_reduced):
        assert np.all(de.pval[:15] >= exact * (1 - 1e-9))
        np.testing.assert_allclose(de.pval[:5], exact[:5], rtol=1e-6)


def test_nb_lrt_floor_is_the_beta_binomial_split():
    # 5 vs 5 NB nulls with low means, equal size factors: a good share has one group all
    # zero. With one dispersion alpha per feature and equal means, the zero side's share
    # of the gamma intensities is Beta(5 / alpha, 5 / alpha), so "no read there" given the
    # total T is the beta-binomial probability of 0 (scipy.stats.betabinom).
    rng = np.random.default_rng(4040)
    obs = _two_groups(5)
    f = 400
    mean = np.exp(rng.uniform(np.log(0.1), np.log(2.0), f))
    y = rng.negative_binomial(1.5, 1.5 / (1.5 + mean[None, :]), size=(10, f)).astype(float)
    a, b = y[:5].sum(0), y[5:].sum(0)
    total = y.sum(0)
    sep = ((a == 0) | (b == 0)) & (total > 0)
    sf = np.ones(10)
    for dispersion in ("mle", "map"):
        de = _lrt_or_test(
            dispersion,
            lambda d=dispersion: bg.de.lrt(y, "~ c", "~ 1", obs=obs, size_factors=sf, dispersion=d),
        )
        alpha = de.nb_dispersion if dispersion == "map" else np.exp(-de.fit.coef_scale.iloc[:, 0])
        k = 5.0 / np.asarray(alpha)
        floor = np.minimum(1.0, 2.0 * stats.betabinom.pmf(0, total.astype(int), k, k))
        chi2_p = stats.chi2.sf(de.stat, 1)
        assert sep.sum() > 60
        ok = sep & np.isfinite(de.pval)
        # (rtol: MLE dispersions at the Poisson bound are clipped to the family's scale bounds.)
        np.testing.assert_allclose(de.pval[ok], np.maximum(chi2_p, floor)[ok], rtol=1e-5)
        few = ok & (total <= 5)
        assert few.sum() > 40
        if dispersion == "mle":
            # Without the floor the chi-squared reference calls 1-5 reads in one group.
            assert (chi2_p[few] < 0.05).mean() > 0.05
        assert (de.pval[few] < 0.05).mean() <= 0.01
        # Not separated: unchanged.
        rest = ~sep & np.isfinite(de.pval)
        np.testing.assert_allclose(de.pval[rest], chi2_p[rest], rtol=1e-10)


def test_on_off_genes_stay_called_by_every_lrt_flavour():
    rng = np.random.default_rng(909)
    obs = _two_groups(3)
    sf = np.exp(rng.normal(0.0, 0.2, 6))
    mu = sf[:, None] * np.exp(rng.uniform(np.log(30), np.log(150), 40))[None, :]
    y = rng.negative_binomial(8.0, 8.0 / (8.0 + mu)).astype(float)
    y[3:, :20] = 0.0  # 20 on/off genes, 20 unchanged
    for dispersion in ("mle", "map", "ql"):
        de = _lrt_or_test(
            dispersion,
            lambda d=dispersion: bg.de.test(
                y, "~ c", obs=obs, method="lrt", reduced="~ 1", size_factors=sf, dispersion=d
            ),
        )
        assert np.all(de.pval[:20] < 5e-3), (dispersion, de.pval[:20].max())


def test_without_data_the_lrt_warns_that_it_cannot_floor(poisson_table):
    y, obs, sf = poisson_table
    full = bg.fit(y, "~ c", obs=obs, size_factors=sf, family="poisson")
    reduced = bg.fit(y, "~ 1", obs=obs, size_factors=sf, family="poisson")
    with pytest.warns(
        UserWarning,
        match=r"15 feature\(s\) \(feature0, .*\) are separated in the tested direction.*"
        r"pass the counts as `data=` to bg.de.lrt",
    ):
        bare = bg.de.lrt(full=replace(full, data=None), reduced=replace(reduced, data=None))
    kept = bg.de.lrt(full=full, reduced=reduced)
    np.testing.assert_allclose(bare.pval, stats.chi2.sf(kept.stat, 1), rtol=1e-10)
    assert np.all(kept.pval[:5] > bare.pval[:5])


def test_other_families_get_no_floor():
    # A normal fit with a group of exact zeros is not a count split: no floor.
    rng = np.random.default_rng(3)
    obs = _two_groups(20)
    y = rng.normal(5.0, 1.0, size=(40, 5))
    y[20:, 0] = 0.0
    de = bg.de.lrt(y, "~ c", "~ 1", obs=obs, family="normal")
    np.testing.assert_allclose(de.pval, stats.chi2.sf(de.stat, 1), rtol=1e-10)


def test_floor_in_feature_chunks_and_on_sparse_counts(poisson_table, monkeypatch):
    import scipy.sparse as sp

    import batchglm.de.separated_tests as separated_tests

    y, obs, sf = poisson_table
    total = y[:, :15].sum(0)
    exact = np.minimum(1.0, 2.0 * stats.binom.pmf(0, total.astype(int), sf[4:].sum() / sf.sum()))
    monkeypatch.setattr(separated_tests, "_FLOOR_CHUNK_ELEMENTS", 8 * 4)  # 4 features a chunk
    de = bg.de.lrt(sp.csr_matrix(y), "~ c", "~ 1", obs=obs, size_factors=sf, family="poisson")
    assert np.all(de.pval[:15] >= exact * (1 - 1e-9))
    np.testing.assert_allclose(de.pval[:5], exact[:5], rtol=1e-6)
