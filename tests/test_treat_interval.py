"""edgeR's ``glmTreat(null="interval")``, the default null of the TREAT QL test.

References: edgeR 3.40 p-values stored by ``benchmarks/treat_edger.R`` and the window
means of the normal distribution function by numerical integration (``scipy.integrate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import batchglm as bg
from batchglm.de.threshold import INTERVAL_WIDTH, interval_pvalues, treat_pvalues

DATA = Path(__file__).parent / "data"


def _quad_mean_cdf(lo: float, hi: float) -> float:
    if hi == lo:
        return float(stats.norm.cdf(lo))
    value, _ = integrate.quad(stats.norm.cdf, lo, hi, epsabs=0.0, epsrel=1e-12)
    return value / (hi - lo)


def test_interval_pvalues_are_window_means_of_the_normal_cdf() -> None:
    """The two branches of edgeR's formula, against quadrature of Phi over each window."""
    rng = np.random.default_rng(5)
    z_right = rng.uniform(0.0, 6.0, 40)
    z_left = rng.uniform(-6.0, 3.0, 40)
    z_left = np.minimum(z_left, z_right)  # z_left belongs to the smaller statistic
    # Ties and a window shorter than the difference-quotient guard.
    z_right = np.append(z_right, [1.0, 0.3])
    z_left = np.append(z_left, [-1.0, 0.3 - 1e-9])
    got = interval_pvalues(z_left, z_right)
    c = INTERVAL_WIDTH
    want = np.array(
        [
            _quad_mean_cdf(-zr, c - zr) + _quad_mean_cdf(zl - c, zl)
            if zr + zl > c
            else 2.0 * _quad_mean_cdf(-zr, zl)
            for zl, zr in zip(z_left, z_right, strict=True)
        ]
    )
    split = z_right + z_left > c
    assert split.sum() >= 5 and (~split).sum() >= 5
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.fixture(scope="module")
def edger() -> tuple[np.ndarray, bg.FitResult, pd.DataFrame]:
    counts = pd.read_csv(DATA / "treat_edger_counts.csv", index_col=0).T
    ref = pd.read_csv(DATA / "treat_edger.csv", index_col=0)
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    y = counts.to_numpy(dtype=float)
    alpha = ref["dispersion"].to_numpy()
    res = bg.fit(y, x, size_factors=y.sum(axis=1), fixed_scale=-np.log(alpha))
    return y, res, ref


def test_treat_interval_matches_edger_glmtreat(edger) -> None:
    """edgeR 3.40 ``glmTreat(fit, coef=2, lfc=log2(1.5))`` (default null) at edgeR's
    dispersions, posterior QL dispersions and df (60 genes, 4 vs 4, no gene under edgeR's
    Poisson bound)."""
    y, res, ref = edger
    assert not ref["poissonBound"].any()
    args = (
        y,
        res,
        ref["dispersion"].to_numpy(),
        np.array([[0.0, 1.0]]),
        float(ref["lfcThreshold"].iloc[0]),
        ref["varPost"].to_numpy(),
        ref["dfTotal"].to_numpy(),
    )
    pval, _, ok = treat_pvalues(*args)  # the default null is edgeR's
    assert ok.all()
    want = ref["PValueInterval"].to_numpy()
    # At log2(1.5) every gene takes the formula's first branch (z_right + z_left > c), at
    # log2(1.1) every gene the second (the interval is narrower than c standard errors).
    # p from 5e-16 to 0.96; measured: 2.1e-8 relative at most.
    assert want.min() < 1e-10 and want.max() > 0.9
    np.testing.assert_allclose(pval, want, rtol=1e-6)
    small = (*args[:4], float(ref["lfcThresholdSmall"].iloc[0]), *args[5:])
    pval_small, _, ok_small = treat_pvalues(*small)
    assert ok_small.all()
    np.testing.assert_allclose(pval_small, ref["PValueIntervalSmall"], rtol=1e-6)
    worst, _, _ = treat_pvalues(*args, null="worst.case")
    np.testing.assert_allclose(worst, ref["PValueWorstCase"], rtol=1e-6)
    # The interval null is the less conservative one (edgeR's documentation).
    assert np.all(pval <= worst * (1 + 1e-12))
    assert np.mean(pval < worst) > 0.9


def test_ql_f_and_pipeline_pass_the_null_on() -> None:
    rng = np.random.default_rng(11)
    n, g = 10, 30
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2)])
    lfc = np.linspace(-2.5, 2.5, g)
    mu = np.exp(3.0 + np.outer(x[:, 1], lfc))
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(float)
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], n // 2)})
    res = bg.fit(y, "~ g", obs=obs, size_factors=np.ones(n))
    default = bg.de.ql_f(res, coef="g[T.b]", data=y, lfc_threshold=1.0)
    interval = bg.de.ql_f(res, coef="g[T.b]", data=y, lfc_threshold=1.0, treat_null="interval")
    worst = bg.de.ql_f(res, coef="g[T.b]", data=y, lfc_threshold=1.0, treat_null="worst.case")
    np.testing.assert_array_equal(default.pval, interval.pval)
    assert "interval null" in interval.tested and "worst.case null" in worst.tested
    assert np.all(interval.pval <= worst.pval * (1 + 1e-12))
    assert np.mean(interval.pval < worst.pval) > 0.9
    common = {
        "obs": obs,
        "size_factors": np.ones(n),
        "method": "ql",
        "coef": "g[T.b]",
        "lfc_threshold": 1.0,
        "cooks_cutoff": None,
        "independent_filtering": False,
    }
    for null, ref in (("interval", interval), ("worst.case", worst)):
        piped = bg.de.test(y, "~ g", treat_null=null, **common)
        np.testing.assert_allclose(piped.pval, ref.pval, rtol=1e-10)


def test_unknown_null_is_refused() -> None:
    y = np.random.default_rng(0).poisson(5.0, (6, 3)).astype(float)
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 3)})
    res = bg.fit(y, "~ g", obs=obs)
    with pytest.raises(
        ValueError, match=r"`treat_null` must be one of \['interval', 'worst.case'\]"
    ):
        bg.de.ql_f(res, coef="g[T.b]", data=y, lfc_threshold=1.0, treat_null="worst")
    with pytest.raises(ValueError, match=r"`treat_null` must be one of .* 'both' was given"):
        bg.de.test(y, "~ g", obs=obs, method="ql", coef="g[T.b]", treat_null="both")
