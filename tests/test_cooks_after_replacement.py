"""``maxCooks`` and the summary line after Cook's replacement (issue 14, outliers).

With 7 or more replicates per group, outlier counts are replaced and the features refitted
(DESeq2's ``replaceOutliers`` + ``refitWithoutOutliers``); the table's ``maxCooks`` was
all ``NaN`` afterwards. It now holds the refit's largest Cook's distance on the replaced
counts, checked here against a closed-form computation on one gene: the NB fit by
``scipy.optimize`` at the reported dispersion, the hat matrix from numpy, DESeq2's robust
moment dispersion from ``scipy.stats.trim_mean``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from scipy.special import gammaln

import batchglm as bg

COEF = "condition[T.b]"
#: (gene, observation) of the planted outliers: four genes, one with two.
PLANTED = [(30, 2), (31, 11), (32, 5), (33, 14), (33, 3)]


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    n, g = 16, 120
    obs = pd.DataFrame({"condition": np.repeat(["a", "b"], 8)}, index=[f"s{i}" for i in range(n)])
    mu = np.exp(rng.uniform(2, 6, g))[None, :] * rng.uniform(0.7, 1.4, n)[:, None]
    mu[8:, :20] *= 3
    y = rng.negative_binomial(8, 8 / (8 + mu))
    for j, i in PLANTED:
        y[i, j] = y[:, j].max() * 40
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(g)])
    return counts, obs, y.astype(float)


@pytest.fixture(scope="module", params=["wald", "ql"])
def run(request, table) -> tuple[str, bg.de.PipelineResult]:
    counts, obs, _ = table
    return request.param, bg.de.test(
        counts, "~ condition", obs=obs, coef=COEF, method=request.param
    )


def _nb_fit(y: np.ndarray, x: np.ndarray, sf: np.ndarray, alpha: float) -> np.ndarray:
    """NB2 maximum-likelihood means at a fixed dispersion, by scipy.optimize."""
    r = 1.0 / alpha

    def nll(beta: np.ndarray) -> float:
        mu = sf * np.exp(x @ beta)
        ll = gammaln(y + r) - gammaln(r) + r * np.log(r / (r + mu)) + y * np.log(mu / (r + mu))
        return -float(ll.sum())

    start = np.linalg.lstsq(x, np.log((y + 0.5) / sf), rcond=None)[0]
    fit = optimize.minimize(
        nll, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}
    )
    return sf * np.exp(x @ fit.x)


def _robust_alpha(normed: np.ndarray, groups: np.ndarray) -> float:
    """DESeq2's robustMethodOfMomentsDisp for cells of 4..23: trim 1/4, scale 1.86."""
    var = max(
        1.86 * stats.trim_mean((v - stats.trim_mean(v, 0.25)) ** 2, 0.25)
        for v in (normed[groups == k] for k in np.unique(groups))
    )
    m = normed.mean()
    return max((var - m) / m**2, 0.04)


def _max_cooks(
    y: np.ndarray,
    mu: np.ndarray,
    x: np.ndarray,
    sf: np.ndarray,
    alpha_fit: float,
    groups: np.ndarray,
) -> float:
    w = mu / (1.0 + alpha_fit * mu)
    xw = x * np.sqrt(w)[:, None]
    h = np.diag(xw @ np.linalg.inv(xw.T @ xw) @ xw.T)
    a = _robust_alpha(y / (sf / np.exp(np.mean(np.log(sf)))), groups)
    pearson = (y - mu) ** 2 / (mu + a * mu**2)
    return float(np.max(pearson / x.shape[1] * h / (1.0 - h) ** 2))


def _replaced_counts(y: np.ndarray, sf: np.ndarray, rows: list[int]) -> np.ndarray:
    """DESeq2's replacement: the 20 % trimmed mean of normalised counts times the size factor."""
    out = y.copy()
    out[rows] = np.trunc(stats.trim_mean(y / sf, 0.2) * sf[rows])
    return out


def test_max_cooks_after_replacement_is_the_refits(table, run) -> None:
    method, de = run
    _, obs, y = table
    t = de.summary()
    assert np.isfinite(t["maxCooks"]).all()
    planted_genes = sorted({j for j, _ in PLANTED})
    np.testing.assert_array_equal(np.flatnonzero(de.replaced), planted_genes)
    sf = de.size_factors
    groups = (obs["condition"] == "b").to_numpy().astype(int)
    x = np.column_stack([np.ones(16), groups]).astype(float)
    for j in (33, 29):  # a gene with two replaced counts, and one without
        rows = [i for g, i in PLANTED if g == j]
        yj = _replaced_counts(y[:, j], sf, rows) if rows else y[:, j]
        alpha = float(de.nb_dispersion[j])
        mu = _nb_fit(yj, x, sf, alpha)
        expected = _max_cooks(yj, mu, x, sf, alpha, groups)
        assert t["maxCooks"].iloc[j] == pytest.approx(expected, rel=1e-5), (method, j)
    # The refit's distances are below the cutoff (the outliers were replaced), and no
    # feature is flagged: every observation could be replaced (DESeq2's rule).
    assert (t["maxCooks"] < de.cooks_cutoff).all()
    assert not (t["status"] == "outlier").any()


def test_summary_line_after_replacement_says_what_happened(run) -> None:
    method, de = run
    line = de.summary_line()
    assert "5 replaced outlier counts in 4 features" in line
    refit = "all 120 features refit" if method == "ql" else "4 features refit"
    assert refit in line
    assert de.n_counts_replaced == 5
    assert de.n_refit == (120 if method == "ql" else 4)
