"""Duplicated feature and observation names: one warning, kept names, no guessing."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.align import DuplicateNamesWarning

N_OBS = 10
GENES = ["dup", "a", "dup", "b", "dup", "c"]


@pytest.fixture(scope="module")
def counts() -> pd.DataFrame:
    y = np.random.default_rng(5).poisson(12.0, size=(N_OBS, len(GENES))).astype(float)
    return pd.DataFrame(y, index=[f"s{i}" for i in range(N_OBS)], columns=GENES)


@pytest.fixture(scope="module")
def group() -> np.ndarray:
    return np.repeat([0.0, 1.0], N_OBS // 2)


@pytest.fixture(scope="module")
def fitted(counts, group):
    design = pd.DataFrame({"Intercept": 1.0, "g": group}, index=counts.index)
    with pytest.warns(DuplicateNamesWarning):
        return bg.fit(counts, design, family="poisson", tol=1e-14)


def test_one_warning_naming_the_duplicates_and_the_fix(counts, group):
    design = np.column_stack([np.ones(N_OBS), group])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bg.fit(counts, design, family="poisson")
    dup = [w for w in caught if issubclass(w.category, DuplicateNamesWarning)]
    assert len(dup) == 1
    assert str(dup[0].message) == (
        "`data` has 3 features sharing 1 name(s), e.g. ['dup']; results keep these names, so "
        "look-ups and matching by them are refused; give the DataFrame unique column names."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own note on the names
        adata = ad.AnnData(counts.to_numpy(), obs=pd.DataFrame(index=["x"] * 2 + list("abcdefgh")))
    with pytest.warns(
        DuplicateNamesWarning,
        match=r"`data` has 2 observations sharing 1 "
        r"name\(s\), e.g. \['x'\]; .*call adata.obs_names_make_unique\(\)",
    ):
        bg.fit(adata, design, family="poisson")


def test_names_are_kept_and_every_feature_is_fitted(fitted, counts, group):
    assert list(fitted.feature_names) == GENES
    # Poisson with a group indicator: the effect is the log ratio of group means.
    y = counts.to_numpy()
    expected = np.log(y[group == 1].mean(axis=0) / y[group == 0].mean(axis=0))
    np.testing.assert_allclose(fitted.coef_loc["g"].to_numpy(), expected, rtol=1e-8)
    # And the Wald p-value from the closed-form Poisson information.
    se = np.sqrt(1 / y[group == 1].sum(axis=0) + 1 / y[group == 0].sum(axis=0))
    p = 2 * stats.norm.sf(np.abs(expected) / se)
    np.testing.assert_allclose(bg.de.wald(fitted, "g").pval, p, rtol=1e-6)


def test_lookup_by_a_duplicated_name_is_refused(fitted):
    with pytest.raises(
        ValueError,
        match=r"feature name 'dup' is ambiguous: it names 3 "
        r"features \(positions \[0, 2, 4\]\); look it up by "
        r"position",
    ):
        fitted.covariance("dup")
    with pytest.raises(KeyError, match=r"feature 'zzz' is not in the fit"):
        fitted.covariance("zzz")
    np.testing.assert_array_equal(
        fitted.covariance("b").to_numpy(), fitted.covariance(3).to_numpy()
    )


@pytest.mark.filterwarnings("ignore::batchglm.align.DuplicateNamesWarning")
def test_matching_by_duplicated_names_is_refused(counts, group, fitted):
    obs = pd.DataFrame({"g": group}, index=[f"s{i}" for i in range(N_OBS)])
    dup_obs = counts.rename(index={"s1": "s0"})
    with pytest.warns(
        DuplicateNamesWarning,
        match=r"`data` has 2 observations sharing 1 "
        r"name\(s\), e.g. \['s0'\]; .*give the DataFrame unique index labels",
    ):
        # The same names in the same order need no matching.
        same = bg.fit(dup_obs, "~ 1 + g", obs=obs.rename(index={"s1": "s0"}), family="poisson")
    np.testing.assert_array_equal(same.coef_loc.to_numpy(), fitted.coef_loc.to_numpy())
    with (
        pytest.warns(DuplicateNamesWarning),
        pytest.raises(
            ValueError,
            match=r"`obs` can only be matched to `data` by observation "
            r"name when the names are unique, but `data` repeats "
            r"1 name\(s\), e.g. \['s0'\]",
        ),
    ):
        bg.fit(dup_obs, "~ 1 + g", obs=obs.iloc[::-1], family="poisson")
    res = bg.fit(counts, "~ 1 + g", obs=obs)
    with pytest.raises(
        ValueError,
        match=r"`data` can only be matched to the fit by feature "
        r"name when the names are unique, but `data` repeats "
        r"1 name\(s\), e.g. \['dup'\]; make the names unique",
    ):
        bg.dispersion.genewise_dispersions(counts.iloc[:, ::-1], res)
