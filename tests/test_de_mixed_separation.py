"""Separated and runaway-variance features in tests of random-intercept fits.

References are independent: the donor-level randomization p-value is recomputed here by
brute force (itertools over the assignments, ``numpy.linalg.lstsq`` per assignment).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de import CrossedGroupingWarning, mixed_separation


def _layout(ncell: list[int], seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(ncell)), ncell)
    half = len(ncell) // 2
    obs = pd.DataFrame(
        {
            "donor": [f"D{k}" for k in g],
            "condition": np.where(g < half, "ctrl", "stim"),
            "celltype": np.where(rng.random(g.size) < 0.5, "A", "B"),
        },
        index=[f"cell{i}" for i in range(g.size)],
    )
    sf = rng.lognormal(0.0, 0.3, g.size)
    return obs, sf, g


def _background(rng: np.random.Generator, sf: np.ndarray, g: np.ndarray, n: int) -> np.ndarray:
    u = rng.normal(0.0, 0.3, (g.max() + 1, n))
    mu = 2.0 * sf[:, None] * np.exp(u[g])
    return rng.negative_binomial(4, 4 / (4 + mu)).astype(np.float64)


def _reference_p(counts: np.ndarray, log_size: np.ndarray, cond: np.ndarray) -> float:
    """Randomization p-value of the donor-level F statistic, by brute force."""
    size = np.exp(log_size)
    prior = 0.5 * size / size.mean()  # pseudocount scaled to the donor's size
    z = np.log(counts + prior) - log_size
    n = z.size
    floor = np.mean(1.0 / (counts + prior))

    def f_stat(c: np.ndarray) -> float:
        x = np.column_stack([np.ones(n), c])
        beta = np.linalg.lstsq(x, z, rcond=None)[0]
        rss = float(((z - x @ beta) ** 2).sum())
        s2 = max(rss / (n - 2), floor)
        return float(beta[1] ** 2 / (s2 * np.linalg.inv(x.T @ x)[1, 1]))

    observed = f_stat(cond)
    k = int(cond.sum())
    values = []
    for ones in itertools.combinations(range(n), k):
        c = np.zeros(n)
        c[list(ones)] = 1.0
        values.append(f_stat(c))
    return float(np.mean(np.array(values) >= observed * (1 - 1e-7)))


def _donor_reference(y: np.ndarray, sf: np.ndarray, g: np.ndarray, half: int) -> float:
    counts = np.bincount(g, weights=y)
    log_size = np.log(np.bincount(g, weights=sf))
    return _reference_p(counts, log_size, (np.arange(counts.size) >= half).astype(float))


def test_sparse_genes_are_separated_and_tested_at_the_donor_level() -> None:
    ncell = [90, 15, 40, 60, 25, 30, 70, 20]
    obs, sf, g = _layout(ncell, 1)
    rng = np.random.default_rng(11)
    y = _background(rng, sf, g, 4)
    one_cell = np.zeros(g.size)
    one_cell[5] = 4  # one cell of donor D0 (ctrl)
    stim_cells = np.zeros(g.size)
    stim_cells[np.flatnonzero(g == 5)[:3]] = 2  # 3 cells of D5 (stim)
    stim_cells[np.flatnonzero(g == 6)[:1]] = 1  # one cell of D6 (stim)
    y = np.column_stack([one_cell, stim_cells, y])
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", size_factors=sf)
    # The fit itself reports the runaway estimates (all zeros in one condition's fitted
    # means); before, it said `converged` and only the test's table said `separated`.
    assert list(res.status.iloc[:2]) == ["separated", "separated"]
    assert (res.status.iloc[2:] != "separated").all()
    codes = res.status_codes.copy()
    de = bg.de.wald(res, coef="condition[T.stim]").summary()
    lr = bg.de.lrt(
        y,
        full_loc="~ condition",
        reduced_loc="~ 1",
        obs=obs,
        random_effects="donor",
        size_factors=sf,
    ).summary()
    for table in (de, lr):
        assert list(table["status"].iloc[:2]) == ["separated", "separated"]
        assert list(table["stat_kind"].iloc[:2]) == ["donor_permutation"] * 2
        for j in range(2):
            assert table["pvalue"].iloc[j] == pytest.approx(
                _donor_reference(y[:, j], sf, g, 4), rel=1e-12
            )
            # Before: +-40 and p ~ 3e-5 (the runaway estimate entered the donor levels).
            assert table["pvalue"].iloc[j] > 0.1
        assert (table["status"].iloc[2:] != "separated").all()
    reduced = bg.fit(y, "~ 1", obs=obs, random_effects="donor", size_factors=sf)
    ready = bg.de.lrt(full=res, reduced=reduced)
    np.testing.assert_array_equal(ready.pval[:2], lr["pvalue"].to_numpy()[:2])
    assert np.abs(de["log2FoldChange"].iloc[:2]).tolist() == [10.0, 10.0]
    assert de["lfc_capped"].iloc[:2].all()
    # The tests leave the user's fit as it was.
    np.testing.assert_array_equal(res.status_codes, codes)


def test_condition_only_gene_stays_significant_with_enough_donors() -> None:
    ncell = [40, 25, 30, 35, 20, 30, 40, 25, 35, 30]  # 5 vs 5 donors
    obs, sf, g = _layout(ncell, 2)
    rng = np.random.default_rng(3)
    de_gene = np.where(g < 5, rng.poisson(0.8 * sf), 0).astype(np.float64)
    y = np.column_stack([de_gene, _background(rng, sf, g, 3)])
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", size_factors=sf)
    table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert table["status"].iloc[0] == "separated"
    assert table["log2FoldChange"].iloc[0] == -10.0
    # All donors of one side expressed, none of the other: the two most extreme of the
    # C(10, 5) = 252 assignments.
    assert table["pvalue"].iloc[0] == pytest.approx(_donor_reference(y[:, 0], sf, g, 5))
    assert table["pvalue"].iloc[0] == pytest.approx(2 / 252)


def test_runaway_variance_p_value_is_not_below_the_donor_level_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ncell = [50, 30, 40, 45, 35, 50]
    obs, sf, g = _layout(ncell, 4)
    rng = np.random.default_rng(5)
    # Counts in the cells of one stim donor and (few) of one ctrl donor: the donor
    # variance runs off (about 80), nothing is separated.
    two = np.where(g == 4, rng.poisson(4.0 * sf), 0) + np.where(g == 1, rng.poisson(0.3 * sf), 0)
    y = np.column_stack([two.astype(np.float64), _background(rng, sf, g, 6)])
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", size_factors=sf)
    assert res.random.variance[0, 0] > mixed_separation.VAR_RUNAWAY
    table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert table["status"].iloc[0] != "separated"
    reference = np.array([_donor_reference(y[:, j], sf, g, 3) for j in range(y.shape[1])])
    assert table["pvalue"].iloc[0] >= reference[0]
    # The rule itself, on every feature: the model p-value, raised to the donor-level
    # randomization p-value where that is larger.
    monkeypatch.setattr(mixed_separation, "VAR_RUNAWAY", np.inf)
    model = bg.de.wald(res, coef="condition[T.stim]").pval
    monkeypatch.setattr(mixed_separation, "VAR_RUNAWAY", -1.0)
    floored = bg.de.wald(res, coef="condition[T.stim]")
    np.testing.assert_allclose(floored.pval, np.maximum(model, reference), rtol=1e-12)
    raised = reference > model
    assert raised.any()
    assert (floored.kind[raised] == "donor_permutation").all()


def test_sparse_null_genes_are_not_anti_conservative() -> None:
    ncell = [60, 15, 30, 45, 40, 20, 50, 25]
    obs, sf, g = _layout(ncell, 6)
    rng = np.random.default_rng(7)
    n = 200
    mean = np.exp(rng.uniform(np.log(0.01), np.log(0.1), n))
    u = rng.normal(0.0, 0.5, (8, n))
    mu = sf[:, None] * mean * np.exp(u[g])
    y = rng.negative_binomial(2, 2 / (2 + mu)).astype(np.float64)
    y = y[:, y.sum(axis=0) > 0]
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", size_factors=sf)
    table = bg.de.wald(res, coef="condition[T.stim]").summary()
    pval = table["pvalue"].to_numpy()
    assert np.isfinite(pval).all()
    assert (table["status"] == "separated").sum() >= 10
    assert np.mean(pval < 0.05) <= 0.07


def test_separated_features_without_a_donor_level_test_warn() -> None:
    ncell = [30, 20, 25, 30, 20, 25]
    obs, sf, g = _layout(ncell, 8)
    rng = np.random.default_rng(9)
    by_type = np.where(obs["celltype"].to_numpy() == "A", rng.poisson(2.0, g.size), 0)
    y = np.column_stack([by_type.astype(np.float64), _background(rng, sf, g, 3)])
    res = bg.fit(y, "~ condition + celltype", obs=obs, random_effects="donor", size_factors=sf)
    with (
        pytest.warns(UserWarning, match=r"feature\(s\) \(feature0\).*varies within donors"),
        pytest.warns(CrossedGroupingWarning, match=r"'donor' as crossed with 'celltype'"),
    ):
        table = bg.de.wald(res, coef="celltype[T.B]").summary()
    assert table["status"].iloc[0] == "separated"
    assert np.isnan(table["pvalue"].iloc[0])
    # A donor-level covariate with a value per donor leaves no reassignment of donors.
    obs = obs.assign(age=g.astype(float) ** 1.5)
    one = np.zeros((g.size, 1))
    one[np.flatnonzero(g == 1)[:4]] = 3
    y2 = np.column_stack([one, y[:, 1:]])
    res2 = bg.fit(y2, "~ condition + age", obs=obs, random_effects="donor", size_factors=sf)
    with pytest.warns(UserWarning, match=r"no reassignment of donors"):
        t2 = bg.de.wald(res2, coef="condition[T.stim]").summary()
    assert np.isnan(t2["pvalue"].iloc[0])
    with pytest.warns(
        UserWarning, match=r"the fit has no data, so they get NaN p-values\. To test them, pass"
    ):
        bg.de.wald(replace(res2, data=None), coef="condition[T.stim]")


def test_scale_model_tests_of_mixed_and_plain_fits_are_left_alone() -> None:
    obs, sf, g = _layout([20, 25, 30, 20], 10)
    rng = np.random.default_rng(12)
    y = _background(rng, sf, g, 3)
    for random_effects in (None, "donor"):
        res = bg.fit(y, "~ condition", obs=obs, random_effects=random_effects, size_factors=sf)
        de = bg.de.wald(res, coef="Intercept", model="scale")
        assert (de.kind == "wald").all()
        assert np.isfinite(de.pval).all()


def test_zero_donors_of_different_sizes_make_no_effect() -> None:
    """Counts in one donor, donor sizes differing between conditions (300 vs 30 cells).

    Every reassignment puts the one expressed donor on one side against equal zero donors,
    so the randomization p-value is 1; an unscaled pseudocount gave the smallest possible
    p (2/70) here because zero donors of different sizes had different levels.
    """
    ncell = [300, 300, 300, 300, 30, 30, 30, 30]
    obs, sf, g = _layout(ncell, 5)
    rng = np.random.default_rng(12)
    y = _background(rng, sf, g, 6)
    for j, donor in enumerate([0, 5]):
        y[:, j] = 0.0
        y[np.flatnonzero(g == donor)[:3], j] = 1.0
    res = bg.fit(y, "~ condition", obs=obs, size_factors=sf, random_effects="donor")
    tab = bg.de.wald(res, coef="condition[T.stim]").summary()
    for j in (0, 1):
        assert tab["status"].iloc[j] == "separated"
        assert tab["pvalue"].iloc[j] > 0.5
