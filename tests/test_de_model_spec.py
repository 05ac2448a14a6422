"""``bg.de.lrt`` with ``bg.de.Model`` objects: the same test as the keyword form and ready fits."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import batchglm as bg


@pytest.fixture(scope="module")
def counts():
    """Poisson counts, 24 samples in two conditions and three batches, 6 genes."""
    rng = np.random.default_rng(2024)
    n, f = 24, 6
    obs = pd.DataFrame(
        {
            "condition": np.tile(["ctrl", "trt"], n // 2),
            "batch": np.repeat(["b1", "b2", "b3"], n // 3),
        },
        index=[f"s{i}" for i in range(n)],
    )
    trt = (obs["condition"] == "trt").to_numpy(float)
    b = pd.get_dummies(obs["batch"], drop_first=True).to_numpy(float)
    lfc = np.array([0.0, 0.0, 0.7, -0.9, 1.2, 0.3])
    mu = np.exp(2.0 + np.outer(trt, lfc) + b @ np.array([[0.3] * f, [-0.2] * f]))
    y = pd.DataFrame(
        rng.poisson(mu).astype(float), index=obs.index, columns=[f"g{j}" for j in range(f)]
    )
    return y, obs


def test_model_form_equals_keywords_ready_fits_and_statsmodels(counts):
    y, obs = counts
    by_model = bg.de.lrt(
        y,
        full=bg.de.Model("~ condition + batch"),
        reduced=bg.de.Model("~ batch"),
        obs=obs,
        family="poisson",
    )
    by_keywords = bg.de.lrt(y, "~ condition + batch", "~ batch", obs=obs, family="poisson")
    full = bg.fit(y, "~ condition + batch", obs=obs, family="poisson")
    reduced = bg.fit(y, "~ batch", obs=obs, family="poisson")
    by_fits = bg.de.lrt(full=full, reduced=reduced)
    for other in (by_keywords, by_fits):
        np.testing.assert_allclose(by_model.pval, other.pval, rtol=1e-10, atol=0)
        np.testing.assert_allclose(by_model.stat, other.stat, rtol=1e-10, atol=1e-12)
    assert by_model.df == 1

    # Independent reference: statsmodels' Poisson GLM per gene, LR statistic on 1 df.
    x_full = np.column_stack(
        [
            np.ones(len(obs)),
            (obs["condition"] == "trt").to_numpy(float),
            pd.get_dummies(obs["batch"], drop_first=True).to_numpy(float),
        ]
    )
    x_red = x_full[:, [0, 2, 3]]
    for j, gene in enumerate(y.columns):
        ll_full = sm.GLM(y[gene].to_numpy(), x_full, family=sm.families.Poisson()).fit().llf
        ll_red = sm.GLM(y[gene].to_numpy(), x_red, family=sm.families.Poisson()).fit().llf
        lr = 2.0 * (ll_full - ll_red)
        np.testing.assert_allclose(by_model.stat[j], lr, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(by_model.pval[j], stats.chi2.sf(lr, 1), rtol=1e-5)


def test_reduced_model_without_designs_keeps_the_full_location(counts):
    # A scale test: the reduced Model gives only a scale design, as reduced_scale= does.
    y, obs = counts
    kwargs = {"obs": obs, "family": "normal", "scale_test": "plain"}
    logy = np.log1p(y)
    by_model = bg.de.lrt(
        logy,
        full=bg.de.Model(loc="~ condition", scale="~ condition"),
        reduced=bg.de.Model(scale="~ 1"),
        **kwargs,
    )
    by_keywords = bg.de.lrt(
        logy, full_loc="~ condition", full_scale="~ condition", reduced_scale="~ 1", **kwargs
    )
    np.testing.assert_allclose(by_model.pval, by_keywords.pval, rtol=1e-10, atol=0)
    assert by_model.model == "scale"
    # Closed form: normal location-scale fits by group are the group means and the ML
    # (divide-by-n) variances, so the LR statistic compares pooled and per-group variances.
    trt = (obs["condition"] == "trt").to_numpy()
    for j, gene in enumerate(logy.columns):
        v = logy[gene].to_numpy()
        res = np.where(trt, v - v[trt].mean(), v - v[~trt].mean())
        var_pooled = np.mean(res**2)
        var_groups = [np.mean(res[g] ** 2) for g in (trt, ~trt)]
        n_groups = [g.sum() for g in (trt, ~trt)]
        lr = len(v) * np.log(var_pooled) - sum(
            k * np.log(s) for k, s in zip(n_groups, var_groups, strict=True)
        )
        np.testing.assert_allclose(by_model.stat[j], lr, rtol=1e-6, atol=1e-8)


def test_model_constraints_are_passed_on(counts):
    y, obs = counts
    x = np.column_stack(
        [np.ones(len(obs)), (obs["condition"] == "trt").to_numpy(float), np.zeros(len(obs))]
    )
    # The all-zero third column is identified only through the constraint row (its
    # coefficient is tied to the second): the Model must pass it on as the keyword does.
    c = np.array([[0.0, 1.0, -1.0]])
    a = bg.de.lrt(
        y,
        full=bg.de.Model(loc=x, constraints_loc=c),
        reduced=bg.de.Model(loc=x[:, [0]]),
        family="poisson",
    )
    b = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0]], constraints_full_loc=c, family="poisson")
    np.testing.assert_allclose(a.pval, b.pval, rtol=1e-10, atol=0)


def test_model_form_errors(counts):
    y, obs = counts
    full = bg.fit(y, "~ condition", obs=obs, family="poisson")
    with pytest.raises(ValueError, match=r"leave out \['reduced_loc'\]"):
        bg.de.lrt(
            y,
            reduced_loc="~ 1",
            full=bg.de.Model("~ condition"),
            reduced=bg.de.Model("~ 1"),
            obs=obs,
        )
    with pytest.raises(ValueError, match="must both be bg.de.Model or both FitResult"):
        bg.de.lrt(y, full=bg.de.Model("~ condition"), reduced=full, obs=obs)
    with pytest.raises(ValueError, match=r"`full` must have a location design"):
        bg.de.lrt(y, full=bg.de.Model(scale="~ 1"), reduced=bg.de.Model("~ 1"), obs=obs)


def test_lrt_parses_designs_as_fit_does_before_fitting(counts, monkeypatch):
    # Matrix designs are parsed by build_design (the parser of bg.fit) for the nesting
    # check before anything is fitted: arrays, DataFrames and equation constraints over
    # DataFrame column names all refuse the same non-nested pair without fitting.
    y, obs = counts
    n = len(obs)
    trt = (obs["condition"] == "trt").to_numpy(float)
    b2 = (obs["batch"] == "b2").to_numpy(float)
    full = np.column_stack([np.ones(n), trt, b2])
    reduced = np.column_stack([np.ones(n), (obs["batch"] == "b3").to_numpy(float)])

    def no_fit(*args, **kwargs):
        raise AssertionError("the nesting check must come before any fit")

    monkeypatch.setattr(importlib.import_module("batchglm.de.lrt"), "fit", no_fit)
    frame = pd.DataFrame(full, columns=["one", "trt", "b2"])
    for f, r, kw in (
        (full, reduced, {}),
        (frame, pd.DataFrame(reduced, columns=["one", "b3"]), {}),
        # "b2 = 0" leaves the columns one and trt: still not nested with b3.
        (frame, reduced, {"constraints_full_loc": ["b2 = 0"]}),
    ):
        with pytest.raises(ValueError, match="reduced `loc` model is not nested"):
            bg.de.lrt(
                y,
                full=bg.de.Model(f, constraints_loc=kw.get("constraints_full_loc")),
                reduced=bg.de.Model(r),
                family="poisson",
            )
