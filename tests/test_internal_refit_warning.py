"""Convergence warnings name the features, and the step when it is an internal refit."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

wald_module = importlib.import_module("batchglm.de.wald")


def _data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(77)
    n, g = 10, 12
    cond = np.repeat(["a", "b"], n // 2)
    y = rng.negative_binomial(5, 5 / (5 + 30.0), (n, g)).astype(float)
    y[cond == "b", 3] = 0  # separated in the tested direction
    names = [f"s{i}" for i in range(n)]
    counts = pd.DataFrame(y, index=names, columns=[f"gene{j}" for j in range(g)])
    return counts, pd.DataFrame({"condition": cond}, index=names)


def test_fit_warning_names_unconverged_features() -> None:
    counts, obs = _data()
    with pytest.warns(bg.ConvergenceWarning, match=r"did not converge .*: gene\d+ \(max_iter\)"):
        res = bg.fit(counts, "~ condition", obs=obs, max_iter=1)
    assert (res.status == "max_iter").any()


def test_failed_internal_refit_is_named_and_shows_in_status(monkeypatch: Any) -> None:
    counts, obs = _data()
    real = wald_module.lrt_statistic

    def failing(*args: Any, **kwargs: Any) -> Any:
        # The internal reduced refit of gene3 reaches no optimum; it warns as bg.fit does.
        stat, ok, floor = real(*args, **kwargs)
        bg.fit(counts, "~ condition", obs=obs, max_iter=1)  # a raw ConvergenceWarning
        return np.full_like(stat, np.nan), np.zeros_like(ok), floor

    monkeypatch.setattr(wald_module, "lrt_statistic", failing)
    res = bg.fit(counts, "~ condition", obs=obs)
    with pytest.warns(bg.ConvergenceWarning) as rec:
        de = bg.de.wald(res, coef="condition[T.b]", data=counts, dispersion="map")
    # Only the warning that names the step and the feature reaches the user.
    assert len(rec) == 1
    assert "reduced refit" in str(rec[0].message)
    assert "gene3" in str(rec[0].message)
    assert "status 'reduced_failed'" in str(rec[0].message)
    table = de.summary()
    assert table.loc["gene3", "status"] == "reduced_failed"
    assert np.isnan(table.loc["gene3", "pvalue"])
    others = table.drop(index="gene3")
    assert (others.status != "reduced_failed").all()
    assert np.isfinite(others.pvalue).all()
