"""``bg.de.test(method="lrt", contrast=...)``: the LRT of a contrast (edgeR's glmLRT(contrast=)).

References: statsmodels' negative binomial regression (its own ML dispersion per model) on
hand-built full and reduced designs, and our LRT against a hand-built reduced design (a
code path that never builds the constrained model).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.de.degrees_of_freedom import SmallSampleWarning

N_PER, N_GENES = 5, 12
COMMON = {"cooks_cutoff": None, "independent_filtering": False, "size_factors": None}


@pytest.fixture(scope="module")
def three_groups() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(404)
    obs = pd.DataFrame({"c": np.repeat(["a", "b", "c"], N_PER)})
    obs.index = [f"s{i}" for i in range(3 * N_PER)]
    eff_b = rng.normal(0.0, 0.8, N_GENES)
    eff_c = np.where(np.arange(N_GENES) % 2 == 0, eff_b, eff_b + 1.0)  # half: c == b
    eta = rng.uniform(2.5, 5.0, N_GENES)[None, :] + np.outer(obs.c == "b", eff_b)
    mu = np.exp(eta + np.outer(obs.c == "c", eff_c))
    y = rng.negative_binomial(6, 6 / (6 + mu)).astype(float)
    return y, obs


def _statsmodels_lrt(y: np.ndarray, x_full: np.ndarray, x_red: np.ndarray) -> np.ndarray:
    """LR p-value per gene, each model with its own ML NB dispersion (statsmodels NB2)."""
    from statsmodels.discrete.discrete_model import NegativeBinomial

    out = np.empty(y.shape[1])
    for g in range(y.shape[1]):
        ll = []
        for x in (x_full, x_red):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = NegativeBinomial(y[:, g], x)
                rough = model.fit(method="nm", maxiter=20000, disp=False)
                m = model.fit(
                    start_params=rough.params, method="newton", maxiter=200, tol=1e-12, disp=False
                )
            ll.append(m.llf)
        df = x_full.shape[1] - x_red.shape[1]
        out[g] = stats.chi2.sf(2 * (ll[0] - ll[1]), df)
    return out


def test_level_contrast_matches_statsmodels(three_groups) -> None:
    y, obs = three_groups
    xb = (obs.c == "b").to_numpy(float)
    xc = (obs.c == "c").to_numpy(float)
    one = np.ones(len(obs))
    with pytest.warns(SmallSampleWarning, match="anti-conservative"):
        de = bg.de.test(
            y, "~ c", obs=obs, method="lrt", contrast=("c", "c", "b"), dispersion="mle", **COMMON
        )
    # c - b = 0 merges levels b and c.
    want = _statsmodels_lrt(y, np.column_stack([one, xb, xc]), np.column_stack([one, xb + xc]))
    np.testing.assert_allclose(de.pval, want, rtol=1e-5)  # measured: 4e-12
    # The effect is the contrast's estimate: log(mean_c / mean_b) of the full fit.
    res = bg.fit(y, "~ c", obs=obs)
    coefs = res.coef_loc.to_numpy()
    np.testing.assert_allclose(de.coef_mle, coefs[:, 2] - coefs[:, 1], atol=1e-8)
    summary = de.summary()
    np.testing.assert_allclose(summary["log2FoldChange"], de.coef_mle / np.log(2))
    assert np.all(np.isfinite(summary["lfcSE"]))
    assert "c: c vs b" in de.tested


@pytest.mark.parametrize("dispersion", ["map", "ql"])
def test_numeric_contrast_equals_a_hand_built_reduced_design(three_groups, dispersion) -> None:
    """``b - 2 c = 0`` leaves ``a0 + c (2 x_b + x_c)``; DESeq2-style reduced design path."""
    y, obs = three_groups
    design = np.column_stack(
        [np.ones(len(obs)), (obs.c == "b").to_numpy(float), (obs.c == "c").to_numpy(float)]
    )
    reduced = np.column_stack([design[:, 0], 2 * design[:, 1] + design[:, 2]])
    by_contrast = bg.de.test(
        y,
        design,
        method="lrt",
        contrast=np.array([0.0, 1.0, -2.0]),
        dispersion=dispersion,
        **COMMON,
    )
    by_design = bg.de.test(
        y, design, method="lrt", reduced=reduced, dispersion=dispersion, **COMMON
    )
    np.testing.assert_allclose(by_contrast.pval, by_design.pval, rtol=1e-6)
    np.testing.assert_allclose(by_contrast.stat, by_design.stat, rtol=1e-6, atol=1e-9)
    coefs = by_contrast.fit.coef_loc.to_numpy()
    np.testing.assert_allclose(by_contrast.coef_mle, coefs[:, 1] - 2 * coefs[:, 2], atol=1e-10)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"contrast": ("c", "c", "b"), "reduced": "~ 1"}, r"exactly one of `reduced` .* both"),
        ({}, r"exactly one of `reduced` .* neither was given"),
        ({"contrast": ("c", "c", "b"), "coef": "c[T.b]"}, r"reports the contrast .*; drop `coef`"),
        (
            {"contrast": np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])},
            r"cover all 3 free location parameters",
        ),
    ],
)
def test_lrt_contrast_errors(three_groups, args, match) -> None:
    y, obs = three_groups
    with pytest.raises(ValueError, match=match):
        bg.de.test(y, "~ c", obs=obs, method="lrt", **args, **COMMON)
