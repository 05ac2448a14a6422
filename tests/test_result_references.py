"""Result columns against independent references.

Each test here was written against a deliberate mutation that the rest of the suite let
through (project issue 12, item 5): the beta ``baseMean`` through ``exp`` instead of the
logistic function, QL standard errors not scaled by the posterior QL dispersion, and
``to_anndata`` writing 0 for every ``n_iter``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, special, stats

import batchglm as bg


def _beta_mle(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Beta regression (logit mean, log precision) by scipy.optimize on scipy's density."""

    def nll(params: np.ndarray) -> float:
        mu = special.expit(x @ params[:-1])
        phi = np.exp(params[-1])
        return -float(stats.beta.logpdf(y, mu * phi, (1.0 - mu) * phi).sum())

    start = np.zeros(x.shape[1] + 1)
    out = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-10})
    return np.asarray(out.x)


def test_beta_base_mean_is_the_mean_of_logistic_fitted_means():
    rng = np.random.default_rng(7)
    n = 40
    group = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), group])
    mu = special.expit(np.array([[-1.2, 0.8], [0.3, -0.5], [1.5, 0.4]]) @ x.T).T  # (n, 3)
    phi = np.array([8.0, 20.0, 5.0])
    y = rng.beta(mu * phi, (1.0 - mu) * phi)
    res = bg.fit(y, x, family="beta")
    table = bg.de.wald(res, coef="p1").summary()
    for j in range(y.shape[1]):
        params = _beta_mle(y[:, j], x)
        expected = special.expit(x @ params[:-1]).mean()
        np.testing.assert_allclose(table["baseMean"].iloc[j], expected, rtol=1e-5)
    # The means of a beta fit are proportions.
    assert ((table["baseMean"] > 0) & (table["baseMean"] < 1)).all()


def test_ql_standard_errors_are_scaled_by_the_posterior_ql_dispersion():
    rng = np.random.default_rng(11)
    n, n_features = 12, 40
    group = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), group])
    mean = rng.uniform(20, 200, n_features)[None, :] * np.exp(
        np.outer(group, rng.normal(0, 0.5, n_features))
    )
    # Dispersions spread around the trend, so that QL dispersions differ from 1.
    alpha = 0.1 * np.exp(rng.normal(0.0, 0.8, n_features))
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mean))
    res = bg.fit(y.astype(float), x)
    table = bg.de.ql_f(res, coef="p1").summary()
    ql = table["ql_dispersion"].to_numpy()
    assert np.ptp(ql) > 0.2  # the check below would not see a missing factor otherwise
    for j in range(n_features):
        # Group-only design without size factors: observed and expected information
        # agree at the MLE, so statsmodels' Fisher-information bse is the reference.
        model = sm.GLM(
            y[:, j], x, family=sm.families.NegativeBinomial(alpha=table["dispersion"].iloc[j])
        )
        ref = model.fit(scale=ql[j], tol=1e-12)
        np.testing.assert_allclose(table["lfcSE"].iloc[j], ref.bse[1] / np.log(2.0), rtol=1e-4)
        np.testing.assert_allclose(table["coef_se"].iloc[j], ref.bse[1], rtol=1e-4)


def test_to_anndata_writes_each_features_newton_iterations():
    rng = np.random.default_rng(3)
    n = 30
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2)])
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + rng.uniform(5, 500, (1, 5))), size=(n, 5))
    names = [f"g{j}" for j in range(5)]
    res = bg.fit(pd.DataFrame(y.astype(float), columns=names), x)
    # Another order in the AnnData: values follow the names.
    adata = ad.AnnData(np.zeros((n, 5)), var=pd.DataFrame(index=names[::-1]))
    adata.obs_names = [str(i) for i in range(n)]
    res.to_anndata(adata)
    stored = adata.var["batchglm_n_iter"].to_numpy()
    expected = np.asarray(res.n_iter_values)[::-1]
    # NB fits start away from the optimum, so every feature needs Newton steps.
    assert (expected >= 1).all()
    np.testing.assert_array_equal(stored, expected)
