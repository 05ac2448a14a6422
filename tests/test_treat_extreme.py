"""TREAT with edgeR's interval null on strongly significant features: finite p in [0, 1]."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

import batchglm as bg
from batchglm.de.threshold import _log_t_tail, _mean_norm_cdf, _zscore_t, interval_pvalues
from batchglm.families.tails import t_sf


def _deep_table(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    grp = np.repeat(["ctrl", "trt"], 4)
    obs = pd.DataFrame({"g": grp}, index=[f"s{i}" for i in range(8)])
    mean = np.exp(rng.uniform(np.log(200), np.log(50000), 120))
    lfc = rng.choice([-6.0, -4.0, 0.0, 4.0, 6.0], 120)
    mu = mean[None, :] * np.where(grp == "trt", 2.0, 1.0)[:, None] ** lfc[None, :]
    y = rng.negative_binomial(300, 300 / (300 + mu))
    return pd.DataFrame(y, index=obs.index, columns=[f"gene{j}" for j in range(120)]), obs


def test_log_t_tail_matches_the_tail_where_it_is_representable() -> None:
    for df in (3.0, 8.0, 40.0):
        # t values whose tail lies between 1e-290 and 1e-120 (representable).
        t = np.geomspace(10 ** (120 / df), 10 ** (290 / df), 7)
        direct = np.log(t_sf(t, np.full_like(t, df)))
        ok = np.isfinite(direct) & (direct > np.log(1e-300))
        np.testing.assert_allclose(_log_t_tail(t[ok], np.full(ok.sum(), df)), direct[ok], rtol=1e-9)


def test_zscore_is_finite_and_increasing_beyond_underflow() -> None:
    t = np.geomspace(1.0, 1e80, 60)
    z = _zscore_t(t, np.full_like(t, 6.0))
    assert np.all(np.isfinite(z))
    assert np.all(np.diff(z) > 0)


def test_mean_norm_cdf_far_left_against_quadrature() -> None:
    for lo in (-8.0, -20.0, -35.0):
        hi = lo + 1.470402
        exact = integrate.quad(special.ndtr, lo, hi, epsabs=0, epsrel=1e-12)[0] / (hi - lo)
        got = _mean_norm_cdf(np.array([lo]), np.array([hi]))[0]
        np.testing.assert_allclose(got, exact, rtol=1e-8)
    assert _mean_norm_cdf(np.array([-np.inf]), np.array([-40.0]))[0] == 0.0


def test_interval_pvalues_stay_in_unit_interval() -> None:
    z = np.array([0.0, 1e-9, 0.5, 40.0, 150.0])
    p = interval_pvalues(-z, z)
    assert np.all((p >= 0) & (p <= 1))


def test_interval_null_on_deep_counts_gives_no_nan_and_a_valid_table() -> None:
    y, obs = _deep_table()
    res = bg.fit(y, "~ g", obs=obs, size_factors="median_ratio", progress=False)
    interval = np.asarray(
        bg.de.ql_f(res, coef="g[T.trt]", data=y, lfc_threshold=1.0, treat_null="interval").pval
    )
    worst = np.asarray(
        bg.de.ql_f(res, coef="g[T.trt]", data=y, lfc_threshold=1.0, treat_null="worst.case").pval
    )
    assert np.all(np.isfinite(interval)) and np.all((interval >= 0) & (interval <= 1))
    # The interval null is the less conservative of edgeR's two.
    assert np.all(interval <= worst * (1 + 1e-6) + 1e-300)
    big = np.abs(np.log2(y.iloc[4:].mean() / y.iloc[:4].mean())) > 3
    assert np.all(interval[big.to_numpy()] < 1e-10)
    table = bg.de.test(
        y, "~ g", obs=obs, coef="g[T.trt]", method="ql", lfc_threshold=1.0, progress=False
    ).summary()
    assert table["pvalue"].notna().all()


def test_treat_null_is_refused_where_it_would_be_ignored() -> None:
    y, obs = _deep_table()
    with pytest.raises(ValueError, match="`treat_null` applies to the TREAT test"):
        bg.de.test(y, "~ g", obs=obs, coef="g[T.trt]", method="wald", treat_null="worst.case")
    res = bg.fit(y, "~ g", obs=obs, size_factors="median_ratio", progress=False)
    with pytest.raises(ValueError, match="`treat_null` applies to the TREAT test"):
        bg.de.ql_f(res, coef="g[T.trt]", data=y, treat_null="interval")
