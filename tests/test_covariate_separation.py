"""Covariate-separated features: zeros fitted exactly by nuisance effects (issue 14).

With 4 vs 4 samples and ``~ batch + RIN + age + condition`` (5 coefficients on 8 samples)
nuisance effects can fit zeros in both conditions exactly. The non-zero observations are
then interpolated (no residual df) and the statistic's only evidence is the pattern of
zeros: such features are judged like features separated in the tested direction (the
likelihood ratio at the fit's supremum, bounded by the exact conditional test of the
zeros at the reduced fit's means), whatever the test. Sparse ones whose coefficients creep
off stopped at ``max_iter`` with NaN p-values. Data simulated here; references from scipy
(saturated NB likelihood, a reduced NB fit by ``scipy.optimize``, ranks by numpy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg
from batchglm.de.zero_fitted_df import effective_residual_df, no_residual_df, supremum_loglik
from batchglm.fitted import fitted_mean

_DESIGN = "~ batch + RIN + age + condition"
_REDUCED = "~ batch + RIN + age"


def _obs(n: int, rng: np.random.Generator) -> pd.DataFrame:
    k, k2 = (3 * n) // 4, n // 4
    return pd.DataFrame(
        {
            "condition": np.repeat(["ctrl", "trt"], n),
            "batch": ["b1"] * k + ["b2"] * (n - k) + ["b1"] * k2 + ["b2"] * (n - k2),
            "RIN": np.round(rng.uniform(5, 10, 2 * n), 1),
            "age": np.round(rng.uniform(20, 80, 2 * n), 1),
        },
        index=[f"s{i}" for i in range(2 * n)],
    )


def _null_table(seed: int, n_genes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Null-only NB counts, means 0.1-20, dispersions 0.1-2, 4 vs 4 with covariates."""
    rng = np.random.default_rng(seed)
    obs = _obs(4, rng)
    sf = rng.uniform(0.7, 1.4, 8)
    mu = np.exp(rng.uniform(np.log(0.1), np.log(20), n_genes))
    r = 1.0 / np.exp(rng.uniform(np.log(0.1), np.log(2), n_genes))
    m = sf[:, None] * mu[None, :]
    y = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + m))
    return pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(n_genes)]), obs


def _design_matrix(obs: pd.DataFrame) -> np.ndarray:
    return np.column_stack(
        [
            np.ones(len(obs)),
            (obs["batch"] == "b2").to_numpy(float),
            obs["RIN"].to_numpy(float),
            obs["age"].to_numpy(float),
            (obs["condition"] == "trt").to_numpy(float),
        ]
    )


@pytest.fixture(scope="module")
def null_lrt() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    counts, obs = _null_table(2024, 600)
    de = bg.de.test(counts, _DESIGN, reduced=_REDUCED, method="lrt", obs=obs)
    return counts, obs, de


def _covariate_separated(counts: pd.DataFrame, de: object) -> np.ndarray:
    y = counts.to_numpy()
    one_group_zero = (y[:4] == 0).all(0) | (y[4:] == 0).all(0)
    return np.flatnonzero((de.fit.status == "separated").to_numpy() & ~one_group_zero)


def test_effective_residual_df_matches_the_rank_of_the_non_zero_samples(null_lrt):
    counts, obs, de = null_lrt
    sep = _covariate_separated(counts, de)
    y = counts.to_numpy()[:, sep]
    positive = y > 0
    x = _design_matrix(obs)
    got = effective_residual_df(de.fit, sep)
    # Observations count as fitted at zero below the family's separation threshold
    # (separated_eta + 3 on the log scale, a mean of about 2e-8); K is the others.
    eta = np.log(de.fit.size_factors)[:, None] + x @ de.fit.coef_loc.to_numpy()[sep].T
    kept = eta >= de.fit.family.separated_eta + 3.0
    xs = (x - np.r_[0, 0, x[:, 2:4].mean(0), 0]) / np.r_[1, 1, x[:, 2:4].std(0), 1]
    expected = np.array(
        [kept[:, j].sum() - np.linalg.matrix_rank(xs[kept[:, j]]) for j in range(sep.size)]
    )
    assert sep.size >= 20
    np.testing.assert_array_equal(got, expected)
    # Where every zero count is fitted at zero (the usual case), K is the positive counts.
    clean = np.all(kept == positive, axis=0)
    assert clean.sum() >= 10
    assert (expected[clean] == 0).sum() >= 10  # the degenerate kind is common at 4 vs 4


def test_supremum_is_the_saturated_nb_likelihood_at_the_fit_dispersion(null_lrt):
    counts, _, de = null_lrt
    hit = np.flatnonzero(no_residual_df(de.fit))
    assert hit.size >= 10
    alpha = np.asarray(de.nb_dispersion)[hit]
    y = counts.to_numpy()[:, hit]
    r = 1.0 / alpha
    sat = stats.nbinom.logpmf(y, r[None, :], r[None, :] / (r[None, :] + y)).sum(axis=0)
    sup = supremum_loglik(de.fit)[hit]
    np.testing.assert_allclose(sup, np.maximum(sat, de.fit.loglik_values[hit]), rtol=0, atol=1e-8)
    # Converged separated fits sit at it already (to the solver's tolerance).
    conv = de.fit.n_iter.to_numpy()[hit] < de.fit.settings.get("max_iter")
    np.testing.assert_allclose(sup[conv], sat[conv], atol=1e-3)


def _reduced_nb_loglik(y: np.ndarray, x0: np.ndarray, sf: np.ndarray, alpha: float) -> float:
    r = 1.0 / alpha

    def nll(beta: np.ndarray) -> float:
        mu = sf * np.exp(np.clip(x0 @ beta, -50, 50))
        return -float(stats.nbinom.logpmf(y, r, r / (r + mu)).sum())

    start = np.zeros(x0.shape[1])
    start[0] = np.log(max(y.mean(), 0.1))
    best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-9, "maxiter": 5000})
    best = optimize.minimize(
        nll,
        best.x,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )
    return -best.fun


def test_lrt_of_interpolated_features_against_scipy(null_lrt):
    counts, obs, de = null_lrt
    hit = np.flatnonzero(no_residual_df(de.fit) & (de.reduced.status == "converged").to_numpy())
    assert hit.size >= 5
    x0 = _design_matrix(obs)[:, :4]
    x0 = (x0 - np.r_[0.0, 0.0, x0[:, 2:].mean(0)]) / np.r_[1.0, 1.0, x0[:, 2:].std(0)]
    sf = de.fit.size_factors
    for j in hit[:5]:
        y = counts.to_numpy()[:, j]
        alpha = float(np.asarray(de.nb_dispersion)[j])
        r = 1.0 / alpha
        sat = stats.nbinom.logpmf(y, r, r / (r + y)).sum()
        ll0 = _reduced_nb_loglik(y, x0, sf, alpha)
        assert de.stat[j] == pytest.approx(2.0 * (sat - ll0), abs=2e-3)


#: A user's layout (covariates as reported) on which sparse genes creep to max_iter.
_USER_OBS = pd.DataFrame(
    {
        "condition": np.repeat(["ctrl", "trt"], 4),
        "batch": ["b1", "b1", "b1", "b2", "b1", "b2", "b2", "b2"],
        "RIN": [9.3, 9.3, 9.1, 6.3, 5.4, 9.7, 8.1, 5.0],
        "age": [75.4, 79.1, 37.8, 69.3, 25.6, 46.2, 69.9, 45.5],
    },
    index=[f"s{i}" for i in range(8)],
)

#: Sparse null patterns (1-9 reads) that stopped at max_iter with NaN p-values before.
_SPARSE = [
    [1, 0, 0, 0, 0, 0, 0, 0],
    [2, 1, 0, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 1, 0, 0],
    [1, 0, 4, 0, 0, 4, 0, 0],
    [0, 2, 0, 0, 0, 2, 2, 0],
    [1, 0, 1, 0, 0, 1, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0],
]


def _sparse_table() -> tuple[pd.DataFrame, pd.DataFrame]:
    obs = _USER_OBS
    base, _ = _null_table(77, 200)
    names = [f"sparse{j}" for j in range(len(_SPARSE))]
    sparse = pd.DataFrame(np.array(_SPARSE, dtype=float).T, index=obs.index, columns=names)
    return pd.concat([base.set_axis(obs.index), sparse], axis=1), obs


@pytest.mark.parametrize("method", ["wald", "lrt", "ql"])
def test_creeping_sparse_features_are_separated_and_tested(method):
    counts, obs = _sparse_table()
    kw = {"reduced": _REDUCED} if method == "lrt" else {"coef": "condition[T.trt]"}
    de = bg.de.test(counts, _DESIGN, method=method, obs=obs, **kw)
    s = de.summary().loc[[f"sparse{j}" for j in range(len(_SPARSE))]]
    assert (s["status"] == "separated").all(), s["status"].to_dict()
    assert s["pvalue"].notna().all()
    # Sparse null genes: DESeq2 gives p >= 0.24 for this kind; the floor keeps them there.
    assert (s["pvalue"] >= 0.2).all(), s["pvalue"].to_dict()
    if method == "lrt":
        # One read: the exact conditional test of the zeros at the null means mu0 (the
        # reduced fit's), P(the read falls on the non-zero sample | T = 1) = m_k / sum m
        # with m = mu0 / (1 + alpha mu0); the p-value is at least min(1, 2 P).
        j = list(counts.columns).index("sparse0")
        mu0 = fitted_mean(de.reduced, np.array([j]))[:, 0]
        alpha = float(np.asarray(de.nb_dispersion)[j])
        m = mu0 / (1.0 + alpha * mu0)
        assert s.loc["sparse0", "pvalue"] >= min(1.0, 2.0 * m[0] / m.sum()) - 1e-9


# A few sparse fits creep without an optimum (below the reduced fit): NaN, warned about.
@pytest.mark.filterwarnings("ignore::batchglm.solvers.status.ConvergenceWarning")
def test_covariate_separated_null_genes_are_calibrated():
    # A null table whose covariate-separated genes got p < 0.05 at a rate of 0.14 (LRT,
    # smallest p 2e-9) and 0.031 (QL, smallest 7e-9) before.
    counts, obs = _null_table(8, 1500)
    shares = {}
    for method in ("wald", "lrt", "ql"):
        kw = {"reduced": _REDUCED} if method == "lrt" else {"coef": "condition[T.trt]"}
        de = bg.de.test(counts, _DESIGN, method=method, obs=obs, **kw)
        sep = _covariate_separated(counts, de)
        p = de.pval[sep]
        assert np.isnan(p).sum() <= 0.1 * sep.size  # fits that creep without an optimum
        p = p[np.isfinite(p)]
        shares[method] = float(np.mean(p < 0.05))
        assert p.min() > 1e-5, method
    assert max(shares.values()) <= 0.05, shares


def test_contrast_lrt_reports_the_same_status_and_p_as_the_reduced_design():
    # The contrast's reduced model (the full design under trt - ctrl = 0) is the reduced
    # design's; the creeping features must carry the same status and p-value in both.
    counts, obs = _sparse_table()
    by_formula = bg.de.test(counts, _DESIGN, reduced=_REDUCED, method="lrt", obs=obs).summary()
    by_contrast = bg.de.test(
        counts, _DESIGN, contrast=("condition", "trt", "ctrl"), method="lrt", obs=obs
    ).summary()
    names = [f"sparse{j}" for j in range(len(_SPARSE))]
    assert (by_contrast.loc[names, "status"] == "separated").all()
    pd.testing.assert_series_equal(by_formula["status"], by_contrast["status"])
    np.testing.assert_allclose(by_contrast["pvalue"], by_formula["pvalue"], atol=1e-8)
