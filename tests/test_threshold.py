"""Tests against a fold-change threshold: DESeq2's lfcThreshold and edgeR's TREAT.

``tests/data/threshold_*.csv`` come from ``benchmarks/threshold_deseq2.R`` (DESeq2 1.38.3).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg
from batchglm.de.threshold import ThresholdedDEResult, treat_pvalues, wald_threshold

# These tests use few replicates on purpose (small designs for thresholds); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

DATA = Path(__file__).parent / "data"
ALTS = ["greaterAbs", "lessAbs", "greater", "less"]
LN2 = np.log(2.0)


@pytest.fixture(scope="module")
def deseq2_case() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, bg.FitResult]:
    table = pd.read_csv(DATA / "threshold_counts.csv", index_col=0)
    sf = table.loc["sizeFactor"].to_numpy()
    y = table.drop(index="sizeFactor").T
    ref = pd.read_csv(DATA / "threshold_deseq2.csv")
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    res = bg.fit(y, x, size_factors=sf)
    return y, sf, ref, res


@pytest.fixture(scope="module")
def small_fit() -> tuple[np.ndarray, bg.FitResult]:
    rng = np.random.default_rng(11)
    n, n_feat = 10, 40
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2)])
    base = rng.gamma(1.5, 40.0, size=n_feat) + 3.0
    lfc = rng.normal(0.0, 1.5, size=n_feat)
    mu = base * np.exp(np.outer(x[:, 1], lfc))
    y = rng.negative_binomial(6, 6 / (6 + mu))
    return y, bg.fit(y, x)


@pytest.mark.parametrize("alt", ALTS)
def test_formula_matches_deseq2(deseq2_case, alt: str) -> None:
    # DESeq2's own estimates and standard errors through our thresholded test give DESeq2's
    # p-values and statistics: the definitions agree exactly.
    y, _, ref, res = deseq2_case
    plain = ref[ref["alt"] == "none"]
    want = ref[ref["alt"] == alt]
    de = bg.de.wald(res, coef=1, dispersion="map", data=y)
    de = replace(
        de,
        coef_mle=plain["log2FoldChange"].to_numpy() * LN2,
        coef_se=plain["lfcSE"].to_numpy() * LN2,
    )
    out = wald_threshold(de, 1.0, alt)
    np.testing.assert_allclose(out.pval, want["pvalue"], rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(out.summary()["stat"], want["stat"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alt", ALTS)
def test_end_to_end_close_to_deseq2(deseq2_case, alt: str) -> None:
    # Our MAP dispersions differ from DESeq2's by up to ~7% here, so the p-values agree
    # closely but not exactly; the decisions at 0.05 almost all agree.
    y, _, ref, res = deseq2_case
    want = ref[ref["alt"] == alt]["pvalue"].to_numpy()
    de = bg.de.wald(res, coef=1, dispersion="map", data=y, lfc_threshold=1.0, alt_hypothesis=alt)
    assert isinstance(de, ThresholdedDEResult)
    err = np.abs(np.log10(de.pval) - np.log10(want))
    assert np.median(err) < 0.02
    assert np.mean((de.pval < 0.05) == (want < 0.05)) >= 0.97


def test_by_hand_and_zero_threshold(small_fit) -> None:
    y, res = small_fit
    plain = bg.de.wald(res, coef=1)
    same = bg.de.wald(res, coef=1, lfc_threshold=0.0)
    np.testing.assert_array_equal(same.pval, plain.pval)
    b, se = plain.coef_mle / LN2, plain.coef_se / LN2
    z = b / se
    # Zero threshold, one-sided: half of the two-sided p-value on the estimate's side.
    np.testing.assert_allclose(
        bg.de.wald(res, coef=1, alt_hypothesis="greater").pval, stats.norm.sf(z), rtol=1e-12
    )
    t = 0.7
    got = bg.de.wald(res, coef=1, lfc_threshold=t).pval
    np.testing.assert_allclose(
        got, np.minimum(1, 2 * stats.norm.sf((np.abs(b) - t) / se)), rtol=1e-12
    )
    got = bg.de.wald(res, coef=1, lfc_threshold=t, alt_hypothesis="lessAbs").pval
    want = np.maximum(stats.norm.sf((t - b) / se), stats.norm.sf((b + t) / se))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got = bg.de.wald(res, coef=1, lfc_threshold=t, alt_hypothesis="less").pval
    np.testing.assert_allclose(got, stats.norm.sf((-t - b) / se), rtol=1e-12)
    # With quasi-likelihood dispersions the reference is Student t with the moderated df.
    ql = bg.de.wald(res, coef=1, dispersion="ql", data=y)
    got = bg.de.wald(
        res, coef=1, dispersion="ql", data=y, lfc_threshold=t, alt_hypothesis="greater"
    ).pval
    zq = (ql.coef_mle / LN2 - t) / (ql.coef_se / LN2)
    np.testing.assert_allclose(got, stats.t.sf(zq, ql.df_residual), rtol=1e-10)


def _boundary_loglik(
    y: np.ndarray, x: np.ndarray, sf: np.ndarray, r: float, fixed: float | None
) -> float:
    # Independent NB likelihood (scipy.stats) maximised with scipy.optimize: intercept free,
    # the group effect free (None) or held at `fixed` (natural log).
    def nll(p: np.ndarray) -> float:
        b1 = p[1] if fixed is None else fixed
        mu = sf * np.exp(p[0] + b1 * x[:, 1])
        return -float(stats.nbinom.logpmf(y, r, r / (r + mu)).sum())

    start = np.array([np.log(y.mean() + 0.5), 0.0])
    best = optimize.minimize(
        nll, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000}
    )
    return -float(best.fun)


def test_treat_against_scipy_boundary_fits(small_fit) -> None:
    y, res = small_fit
    t = 0.8
    plain = bg.de.ql_f(res, coef=1, data=y)
    treat = bg.de.ql_f(res, coef=1, data=y, lfc_threshold=t, treat_null="worst.case")
    assert isinstance(treat, ThresholdedDEResult)
    x = res.design_loc.to_numpy()
    tau = t * LN2
    for g in range(6):
        r = 1.0 / plain.nb_dispersion[g]
        ll_full = _boundary_loglik(y[:, g], x, res.size_factors, r, None)
        b = plain.coef_mle[g]
        lrs = [
            2 * (ll_full - _boundary_loglik(y[:, g], x, res.size_factors, r, s * tau))
            for s in (1, -1)
        ]
        # edgeR's glmTreat: the nearer boundary is the one with the smaller statistic.
        near, far = min(lrs), max(lrs)
        s2, df2 = plain.ql_dispersion[g], plain.df_residual[g]
        sign = 1.0 if abs(b) > tau else -1.0
        want = stats.t.sf(sign * np.sqrt(max(near, 0) / s2), df2) + stats.t.sf(
            np.sqrt(max(far, 0) / s2), df2
        )
        assert treat.pval[g] == pytest.approx(want, rel=1e-6)
    # TREAT never rejects more easily than the plain test.
    assert np.all(treat.pval >= plain.pval - 1e-12)


def test_treat_tiny_threshold_is_the_plain_test(small_fit) -> None:
    y, res = small_fit
    plain = bg.de.ql_f(res, coef=1, data=y)
    tiny = bg.de.ql_f(res, coef=1, data=y, lfc_threshold=1e-9)
    np.testing.assert_allclose(tiny.pval, plain.pval, rtol=1e-6)
    zero = bg.de.ql_f(res, coef=1, data=y, lfc_threshold=0.0)
    np.testing.assert_array_equal(zero.pval, plain.pval)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lfc_threshold": -1.0}, "must be a finite number >= 0"),
        ({"lfc_threshold": float("nan")}, "must be a finite number >= 0"),
        ({"alt_hypothesis": "twoSided"}, "`alt_hypothesis` must be one of"),
        ({"alt_hypothesis": "lessAbs"}, "needs `lfc_threshold` > 0, but 0 was given"),
    ],
)
def test_option_errors(small_fit, kwargs: dict, match: str) -> None:
    _, res = small_fit
    with pytest.raises(ValueError, match=match):
        bg.de.wald(res, coef=1, **kwargs)


def test_joint_test_and_ql_errors(small_fit) -> None:
    y, res = small_fit
    with pytest.raises(ValueError, match="needs a test of one coefficient or contrast"):
        bg.de.wald(res, coef=[0, 1], lfc_threshold=1.0)
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        bg.de.ql_f(res, coef=1, data=y, lfc_threshold=-0.5)


def test_separated_feature_warns(small_fit) -> None:
    y, res = small_fit
    y = y.copy()
    y[:5, 0] = 0  # group 0 has only zeros: separated
    y[5:, 0] = [30, 41, 25, 33, 38]
    fit = bg.fit(y, res.design_loc.to_numpy())
    with pytest.warns(UserWarning, match=r"1 feature\(s\) \(feature0\) are separated"):
        de = bg.de.wald(fit, coef=1, data=y, lfc_threshold=1.0)
    assert np.isnan(de.pval[0])
    assert np.isfinite(de.pval[1:]).all()
    # Without the data the plain test already leaves it untested; the threshold keeps that.
    with pytest.warns(UserWarning, match="they get NaN p-values; pass the fit's data"):
        de = bg.de.wald(
            replace(fit, data=None), coef=1, lfc_threshold=1.0, alt_hypothesis="greater"
        )
    assert np.isnan(de.pval[0])
    assert np.isfinite(de.pval[1:]).all()


def test_treat_matches_edger_glmtreat_worst_case() -> None:
    """edgeR 3.40 glmTreat(null="worst.case") at edgeR's dispersions, QL s2 and df.

    ``tests/data/treat_edger*.csv`` from ``benchmarks/treat_edger.R`` (60 genes, 4 vs 4,
    |log2FC| from 0 to 2 around the threshold log2(1.5); no gene under edgeR's Poisson
    bound, which we do not apply).
    """
    counts = pd.read_csv(DATA / "treat_edger_counts.csv", index_col=0).T
    ref = pd.read_csv(DATA / "treat_edger.csv", index_col=0)
    assert not ref["poissonBound"].any()
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    alpha = ref["dispersion"].to_numpy()
    y = counts.to_numpy(dtype=float)
    res = bg.fit(y, x, size_factors=y.sum(axis=1), fixed_scale=-np.log(alpha))
    lfc = res.coef_loc.to_numpy()[:, 1] / LN2
    np.testing.assert_allclose(lfc, ref["logFCUnshrunk"], atol=1e-7)
    t = float(ref["lfcThreshold"].iloc[0])
    pval, signed, ok = treat_pvalues(
        y,
        res,
        alpha,
        np.array([[0.0, 1.0]]),
        t,
        ref["varPost"].to_numpy(),
        ref["dfTotal"].to_numpy(),
        null="worst.case",
    )
    assert ok.all()
    # Measured: 1.5e-8 relative at most (p down to 1e-11).
    np.testing.assert_allclose(pval, ref["PValueWorstCase"], rtol=1e-6)
    assert np.all(np.sign(signed[signed != 0]) == np.sign(lfc[signed != 0]))


def test_treat_p_is_monotone_in_the_effect_at_fixed_se() -> None:
    """Shifting one gene's group effect by an offset keeps its likelihood's shape (same SE).

    Its TREAT p-value must then fall as the estimate moves away from where the two
    boundary statistics are equal (within 0.05 of 0 here) and stay below 1; choosing the
    nearer boundary by the sign of the estimate (the old rule) gave p = 1 on a stretch next
    to 0 and lower p-values on the other side.
    """
    y0 = np.array([3.0, 5, 2, 4, 1, 0, 2, 1])
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    shifts = np.linspace(-1.4, 0.2, 321)  # natural log; the raw estimate is about -0.92
    n = shifts.size
    y = np.repeat(y0[:, None], n, axis=1)
    offset = np.outer(x[:, 1], shifts)
    alpha = np.full(n, 0.1)
    res = bg.fit(y, x, offset=offset, fixed_scale=-np.log(alpha))
    b = res.coef_loc.to_numpy()[:, 1]
    np.testing.assert_allclose(b, b[0] + shifts[0] - shifts, atol=1e-7)
    pval, _, ok = treat_pvalues(
        y,
        res,
        alpha,
        np.array([[0.0, 1.0]]),
        1.0,
        np.ones(n),
        np.full(n, 6.0),
        null="worst.case",
    )
    assert ok.all()
    assert np.sum(pval >= 1.0 - 1e-12) <= 1 and np.all(pval <= 1.0 + 1e-12)
    top = int(np.argmax(pval))
    assert abs(b[top]) < 0.05
    order = np.argsort(b)
    p_sorted, top_sorted = pval[order], int(np.flatnonzero(order == top)[0])
    assert np.all(np.diff(p_sorted[: top_sorted + 1]) >= -1e-12)  # rises up to the top
    assert np.all(np.diff(p_sorted[top_sorted:]) <= 1e-12)  # falls after it
