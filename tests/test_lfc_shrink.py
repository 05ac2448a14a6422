"""Shrunken log fold changes against an independent per-feature MAP (scipy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from scipy import linalg, optimize, special, stats

import batchglm as bg
from batchglm.de.lfc_shrink import apeglm_prior_scale, normal_prior_sd, svalues

# These tests use few replicates on purpose (small designs for shrinkage); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

LN2 = np.log(2.0)
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray, bg.FitResult]:
    rng = np.random.default_rng(5)
    n, n_feat = 8, 80
    group = np.repeat([0, 1, 2, 3], 2)
    x = np.column_stack([np.ones(n), group == 1, group == 2, group == 3]).astype(float)
    base = np.r_[rng.uniform(0.3, 3.0, 40), rng.uniform(50.0, 500.0, 40)]
    eff = rng.normal(0.0, 0.8, size=(3, n_feat))
    eff[:, :8] = [[3.0] * 8, [0.0] * 8, [-2.0] * 8]
    mu = base * np.exp(x[:, 1:] @ eff)
    y = rng.negative_binomial(10, 10 / (10 + mu)).astype(float)
    return y, x, bg.fit(y, x)


def _map_scipy(y, x, sf, r, weights, scale, kind):
    """Mode of the same penalised NB likelihood by scipy's BFGS, in the original coefficients.

    Cauchy (or normal) prior on ``weights . a``, normal(0, 15^2) on the projection of ``a``
    orthogonal to ``weights``; the NB log-likelihood is written out with ``gammaln``.
    """
    w = weights / np.linalg.norm(weights)
    proj = np.eye(len(w)) - np.outer(w, w)
    const = special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)

    def nlp(a):
        mu = sf * np.exp(x @ a)
        ll = np.sum(const + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu)))
        c = weights @ a / scale
        prior = np.log1p(c**2) if kind == "apeglm" else 0.5 * c**2
        return -ll + prior + (proj @ a) @ (proj @ a) / (2 * 15.0**2)

    def grad(a):
        mu = sf * np.exp(x @ a)
        c = weights @ a
        dprior = 2 * c / (scale**2 + c**2) if kind == "apeglm" else c / scale**2
        return -x.T @ (r * (y - mu) / (r + mu)) + dprior * weights + proj @ a / 15.0**2

    best = None
    for start in (0.0, 2.0, -2.0):
        a0 = np.zeros(x.shape[1])
        a0[0] = np.log(y.mean() + 0.5)
        a0 += start * weights / (weights @ weights)
        fit = optimize.minimize(nlp, a0, jac=grad, method="BFGS", options={"gtol": 1e-11})
        if best is None or fit.fun < best.fun:
            best = fit
    return best.x, nlp


def _sandwich_sd(y, x, sf, r, weights, scale, a):
    # DESeq2's covariance of a ridge-penalised NB fit (its fitBeta): (I + L)^-1 I (I + L)^-1,
    # I = X' diag(mu / (1 + mu / r)) X, L the normal prior's precision matrix.
    mu = sf * np.exp(x @ a)
    info = x.T @ (x * (mu / (1 + mu / r))[:, None])
    w = weights / np.linalg.norm(weights)
    prec = np.outer(weights, weights) / scale**2 + (np.eye(len(w)) - np.outer(w, w)) / 15.0**2
    inv = np.linalg.inv(info + prec)
    return float(np.sqrt(weights @ inv @ info @ inv @ weights))


def _numeric_sd(nlp, a, weights):
    # Posterior SD of weights . a: inverse of a central-difference Hessian.
    k = len(a)
    h = 1e-4
    hess = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            hess[i, j] = (
                nlp(a + ei + ej) - nlp(a + ei - ej) - nlp(a - ei + ej) + nlp(a - ei - ej)
            ) / (4 * h * h)
    return float(np.sqrt(weights @ np.linalg.solve(hess, weights)))


@pytest.mark.parametrize("kind", ["apeglm", "normal"])
def test_coefficient_matches_scipy_map(case, kind: str) -> None:
    y, x, res = case
    sh = bg.de.lfc_shrink(res, coef=1, type=kind, data=y)
    assert sh.converged.all()
    scale = sh.prior_scale * LN2
    weights = np.array([0.0, 1.0, 0.0, 0.0])
    for g in (0, 3, 20, 45, 70):
        r = 1.0 / sh.de.nb_dispersion[g]
        a, nlp = _map_scipy(y[:, g], x, res.size_factors, r, weights, scale, kind)
        assert sh.coef_map[g] == pytest.approx(a[1], abs=1e-6)
        post_sd = _numeric_sd(nlp, a, weights)
        # lfsr always comes from the posterior SD (Laplace approximation).
        assert sh.lfsr[g] == pytest.approx(stats.norm.cdf(-abs(a[1]) / post_sd), rel=1e-3)
        if kind == "apeglm":
            assert sh.coef_sd[g] == pytest.approx(post_sd, rel=1e-4)
        else:
            # lfcSE of the normal prior is DESeq2's covariance of the MAP estimate,
            # A^-1 I A^-1 with I the Fisher information and A = I + prior precision.
            assert sh.coef_sd[g] == pytest.approx(
                _sandwich_sd(y[:, g], x, res.size_factors, r, weights, scale, a), rel=1e-6
            )


def test_contrast_matches_scipy_map(case) -> None:
    y, x, res = case
    sh = bg.de.lfc_shrink(res, contrast="p1 - p3", data=y)
    weights = np.array([0.0, 1.0, 0.0, -1.0])
    scale = sh.prior_scale * LN2
    for g in (1, 25, 60):
        r = 1.0 / sh.de.nb_dispersion[g]
        a, _ = _map_scipy(y[:, g], x, res.size_factors, r, weights, scale, "apeglm")
        assert sh.coef_map[g] == pytest.approx(weights @ a, abs=1e-6)
    # The p-values are those of the unshrunken Wald test at the MAP dispersions.
    plain = bg.de.wald(res, contrast=[0, 1, 0, -1], dispersion="map", data=y)
    np.testing.assert_array_equal(sh.summary()["pvalue"], plain.summary()["pvalue"])


def test_shrinks_noise_not_signal(case) -> None:
    y, _, res = case
    sh = bg.de.lfc_shrink(res, coef="p1", data=y, dispersion="mle")
    tab = sh.summary()
    mle, post = tab["log2FoldChange_MLE"].to_numpy(), tab["log2FoldChange"].to_numpy()
    ratio = np.abs(post) / np.abs(mle)
    low, high = slice(8, 40), slice(40, 80)
    # Noisy low-count fold changes are pulled strongly towards 0; well-determined ones
    # (hundreds of counts) keep almost all of their size, as do the strong low-count ones.
    assert np.median(ratio[low]) < 0.5
    assert np.median(ratio[high]) > 0.9
    assert np.all(np.abs(post[:8]) > 1.5)
    big = np.abs(mle) > 0.05
    assert np.all(np.sign(post[big]) == np.sign(mle[big]))
    # The posterior SD is below the MLE standard error where the prior matters.
    assert np.median(tab["lfcSE"].to_numpy()[low] / tab["lfcSE_MLE"].to_numpy()[low]) < 1


def test_prior_scale_estimators_closed_form() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(0, 0.5, size=500)
    # Equal variances: the Efron-Morris estimate is mean(b^2) - D.
    a = apeglm_prior_scale(b, np.full(500, 0.3))
    assert a**2 == pytest.approx(np.mean(b**2) - 0.09, rel=1e-8)
    assert apeglm_prior_scale(b * 10, np.full(500, 0.3)) == 1.0  # apeglm caps at 1
    assert apeglm_prior_scale(b * 1e-4, np.full(500, 1.0)) == pytest.approx(1e-3)
    lfc = np.r_[rng.normal(0, 1, 999), 50.0]
    want = np.quantile(np.abs(lfc[:-1]), 0.95) / stats.norm.ppf(0.975)
    assert normal_prior_sd(lfc) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="no feature has a finite effect"):
        apeglm_prior_scale(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="no feature has a finite fold change below 10"):
        normal_prior_sd(np.array([12.0, np.inf]))


def test_svalues_and_lfsr(case) -> None:
    lfsr = np.array([0.2, np.nan, 0.01, 0.05])
    np.testing.assert_allclose(svalues(lfsr), [(0.2 + 0.01 + 0.05) / 3, np.nan, 0.01, 0.03])
    y, _, res = case
    sh = bg.de.lfc_shrink(res, coef=2, data=y, svalue=True, prior_scale=0.5)
    assert sh.prior_scale == 0.5
    np.testing.assert_allclose(sh.lfsr, stats.norm.cdf(-np.abs(sh.coef_map) / sh.coef_sd))
    tab = sh.summary(sort_by="svalue", n_max=5)
    assert list(tab["svalue"]) == sorted(tab["svalue"])
    assert "stat" not in tab.columns


def test_from_test_result(case) -> None:
    y, _, res = case
    with pytest.warns(UserWarning, match="are separated in the tested direction"):
        de = bg.de.wald(res, coef="p2", dispersion="map", data=y, lfc_threshold=0.5)
    sh = bg.de.lfc_shrink(de, coef="p2", data=y)
    direct = bg.de.lfc_shrink(res, coef="p2", data=y)
    np.testing.assert_allclose(sh.coef_map, direct.coef_map, rtol=1e-10)
    # The thresholded p-values are kept.
    np.testing.assert_array_equal(sh.summary()["pvalue"], de.pval)
    with pytest.raises(ValueError, match="tested 'p2 .* but `coef`/`contrast` give 'p1'"):
        bg.de.lfc_shrink(de, coef="p1", data=y)
    lrt = bg.de.lrt(
        y, full_loc=res.design_loc.to_numpy(), reduced_loc=res.design_loc.to_numpy()[:, [0, 1, 3]]
    )
    with pytest.raises(ValueError, match="needs a Wald test of the location model"):
        bg.de.lfc_shrink(lrt, coef="p2", data=y)


def test_errors(case) -> None:
    y, x, res = case
    with pytest.raises(ValueError, match="`type` must be 'apeglm' or 'normal'"):
        bg.de.lfc_shrink(res, coef=1, data=y, type="ashr")
    with pytest.raises(ValueError, match="pass the fit's data as `data=`"):
        bg.de.lfc_shrink(res, coef=1)
    with pytest.raises(ValueError, match="`prior_scale` must be positive"):
        bg.de.lfc_shrink(res, coef=1, data=y, prior_scale=0.0)
    with pytest.raises(ValueError, match="`dispersion` must be 'map' or 'mle' for lfc_shrink"):
        bg.de.lfc_shrink(res, coef=1, data=y, dispersion="ql")
    with pytest.raises(ValueError, match="shrinks one coefficient or contrast, but 2 were"):
        bg.de.lfc_shrink(res, coef=[1, 2], data=y)
    pois = bg.fit(y, x, family="poisson")
    with pytest.raises(ValueError, match="is for negative binomial fits, but .* 'poisson'"):
        bg.de.lfc_shrink(pois, coef=1, data=y, dispersion="mle")
    sh = bg.de.lfc_shrink(res, coef=1, data=y, prior_scale=1.0)
    with pytest.raises(ValueError, match="`sort_by` must be a column"):
        sh.summary(sort_by="nope")
    with pytest.raises(ValueError, match="`n_max` must be at least 0"):
        sh.summary(n_max=-1)


def test_contrast_reparametrisation_is_exact_for_constraints() -> None:
    # With a sum-to-zero constraint the tested difference is one free direction; the
    # shrunken value matches scipy on the free parameters.
    rng = np.random.default_rng(2)
    n = 9
    x = np.column_stack([np.ones(n), np.repeat(np.eye(3), 3, axis=0)])
    y = rng.negative_binomial(5, 5 / (5 + rng.gamma(2, 5, size=(n, 30)))).astype(float)
    res = bg.fit(y, x, constraints_loc=["p1 + p2 + p3 = 0"])
    sh = bg.de.lfc_shrink(res, contrast=pd.Series({"p1": 1.0, "p2": -1.0}), data=y, prior_scale=0.8)
    c = res.loc.constraints
    xf = x @ c
    weights = np.array([0.0, 1.0, -1.0, 0.0]) @ c
    for g in (0, 7):
        r = 1.0 / sh.de.nb_dispersion[g]
        a, _ = _map_scipy(y[:, g], xf, res.size_factors, r, weights, 0.8 * LN2, "apeglm")
        assert sh.coef_map[g] == pytest.approx(weights @ a, abs=1e-6)
    assert linalg.norm(weights) > 0


def test_sparse_counts_give_the_same_result(case) -> None:
    y, _, res = case
    dense = bg.de.lfc_shrink(res, coef=3, data=y, dispersion="mle")
    sparse = bg.de.lfc_shrink(res, coef=3, data=scipy.sparse.csr_matrix(y), dispersion="mle")
    np.testing.assert_allclose(sparse.coef_map, dense.coef_map, rtol=1e-12)
    np.testing.assert_allclose(sparse.coef_sd, dense.coef_sd, rtol=1e-12)


def test_normal_prior_close_to_deseq2() -> None:
    # DESeq2 1.38.3 lfcShrink(type="normal") (benchmarks/lfc_shrink_normal_deseq2.R): the
    # same model (weighted upper-quantile prior, DESeq2's lfcSE); what is left is our MAP
    # dispersions. Measured: |log2FC| differences median 0.0007, max 0.011; lfcSE ratios
    # median 0.993, range 0.982 to 1.008 (unweighted prior and posterior SD before: median
    # 0.004, max 0.051; 0.993 to 1.146).
    table = pd.read_csv(DATA / "threshold_counts.csv", index_col=0)
    sf = table.loc["sizeFactor"].to_numpy()
    y = table.drop(index="sizeFactor").T
    ref = pd.read_csv(DATA / "lfc_normal_deseq2.csv")
    x = np.column_stack([np.ones(8), np.repeat([0.0, 1.0], 4)])
    sh = bg.de.lfc_shrink(bg.fit(y, x, size_factors=sf), coef=1, type="normal", data=y)
    diff = np.abs(sh.log2fc - ref["log2FoldChange"].to_numpy())
    assert np.median(diff) < 0.002
    assert diff.max() < 0.025
    se_ratio = sh.coef_sd / LN2 / ref["lfcSE"].to_numpy()
    assert np.median(np.abs(se_ratio - 1)) < 0.012
    assert np.all(np.abs(se_ratio - 1) < 0.03)


def test_shrinks_the_replaced_counts_of_a_pipeline_result() -> None:
    """After bg.de.test replaced an outlier count, the shrunken LFC uses the same
    (replaced) counts as the MLE columns, not the original ``data``."""
    rng = np.random.default_rng(808)
    n_feat = 30
    cond = np.repeat(["a", "b"], 8)
    obs = pd.DataFrame({"condition": cond}, index=[f"s{i}" for i in range(16)])
    mu = rng.uniform(20.0, 200.0, n_feat)[None, :] * np.ones((16, 1))
    y = rng.negative_binomial(20.0, 20.0 / (20.0 + mu)).astype(np.float64)
    y[3, 0] = 40.0 * y[:, 0].max()  # one huge count in group a
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(n_feat)])
    de = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.b]")
    assert de.replaced[0]
    sh = bg.de.lfc_shrink(de, coef="condition[T.b]", data=counts, type="normal", prior_scale=0.5)
    fit = de.fit
    y_used = np.asarray(fit.data.block(slice(0, 1)))[:, 0]
    assert y_used[3] < y[3, 0] / 10  # the refit's counts are the replaced ones
    r = float(np.exp(fit.coef_scale.iloc[0, 0]))
    x = np.column_stack([np.ones(16), cond == "b"]).astype(float)
    a, _ = _map_scipy(y_used, x, fit.size_factors, r, np.array([0.0, 1.0]), 0.5 * LN2, "normal")
    np.testing.assert_allclose(sh.coef_map[0], a[1], rtol=1e-5, atol=1e-7)
    table = sh.summary()
    # Unshrunken column and the shrunken one now agree in sign (the original counts pull
    # the shrunken one the other way).
    assert np.sign(table["log2FoldChange"].iloc[0]) == np.sign(table["log2FoldChange_MLE"].iloc[0])


def test_shrink_of_a_pipeline_result_tested_by_level_names() -> None:
    """bg.de.test(contrast=(factor, level, ref)) can be shrunk with the same contrast.

    Its refit at the MAP dispersions keeps the formula design, so the level names resolve;
    the result equals shrinking the same test run with ``coef=``.
    """
    rng = np.random.default_rng(17)
    n, g = 12, 60
    obs = pd.DataFrame(
        {"condition": ["ctrl", "trt"] * 6, "batch": ["b1"] * 6 + ["b2"] * 6},
        index=[f"s{i}" for i in range(n)],
    )
    mu = rng.uniform(20, 300, g)[None, :] * np.where(obs["condition"] == "trt", 1.5, 1.0)[:, None]
    y = pd.DataFrame(
        rng.negative_binomial(8, 8 / (8 + mu)).astype(float),
        index=obs.index,
        columns=[f"g{j}" for j in range(g)],
    )
    by_level = bg.de.test(y, "~ batch + condition", obs=obs, contrast=("condition", "trt", "ctrl"))
    by_coef = bg.de.test(y, "~ batch + condition", obs=obs, coef="condition[T.trt]")
    s1 = bg.de.lfc_shrink(by_level, contrast=("condition", "trt", "ctrl"), data=y).summary()
    s2 = bg.de.lfc_shrink(by_coef, coef="condition[T.trt]", data=y).summary()
    np.testing.assert_allclose(s1["log2FoldChange"], s2["log2FoldChange"], rtol=1e-10)


def test_weighted_quantile_as_hmisc() -> None:
    # Hmisc's wtd.quantile(normwt=TRUE), by hand: weights scaled to sum to n, ties pooled,
    # then interpolation between the values first reaching cumulative weights floor(h) and
    # floor(h) + 1, h = 1 + (n - 1) p. Values checked in R with DESeq2:::Hmisc.wtd.quantile.
    from batchglm.de.lfc_prior import weighted_upper_quantile

    x, w = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 5.0])
    # cumulative weights 0.5, 1, 1.5, 4; p = 0.2: h = 1.6, values 2 (at 1) and 4 (at 2).
    assert weighted_upper_quantile(x, w, 0.2) == pytest.approx(0.4 * 2 + 0.6 * 4)
    assert weighted_upper_quantile(x, w, 0.95) == pytest.approx(4.0)
    x2, w2 = np.array([0.5, 2.0, 2.0, 7.0, 3.0]), np.array([2.0, 0.5, 1.0, 1.0, 3.0])
    assert weighted_upper_quantile(x2, w2, 0.7) == pytest.approx(3.0)
    assert weighted_upper_quantile(x2, w2, 0.95) == pytest.approx(6.2)
    # Equal weights: R's default (type 7) quantile.
    rng = np.random.default_rng(3)
    z = rng.normal(size=201)
    assert weighted_upper_quantile(z, np.full(201, 2.5), 0.95) == pytest.approx(
        np.quantile(z, 0.95), rel=1e-12
    )
    # The weighted prior: heavy weights on small fold changes lower it.
    lfc = np.r_[rng.normal(0, 0.2, 900), rng.normal(0, 3, 100)]
    heavy = np.r_[np.full(900, 10.0), np.ones(100)]
    assert normal_prior_sd(lfc, heavy) < 0.5 * normal_prior_sd(lfc)
    with pytest.raises(ValueError, match="`x` has 4 values but `weights` has 3"):
        weighted_upper_quantile(x, w[:3], 0.5)
    with pytest.raises(ValueError, match="no value has a positive finite weight"):
        weighted_upper_quantile(x, np.zeros(4), 0.5)
