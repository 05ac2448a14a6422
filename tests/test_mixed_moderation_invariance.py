"""Moderated mixed-model tests do not depend on how a cell-level covariate is parametrised."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.mixed.moderation import variance_prior

COEF = "condition[T.stim]"


def _cells_with_depth(seed: int, n_feat: int = 160) -> tuple[np.ndarray, pd.DataFrame]:
    """NB counts of 8 donors nested in condition, with a raw-scale cell covariate (thousands).

    The covariate (``n_genes``, 1,500-5,000) has an effect of 0-0.4 per 1,000 on the log mean,
    so an intercept read at ``n_genes = 0`` is far from the data.
    """
    rng = np.random.default_rng(seed)
    sizes = [25, 40, 30, 35, 30, 25, 40, 35]
    gid = np.repeat(np.arange(8), sizes)
    stim = gid >= 4
    n_genes = rng.uniform(1500, 5000, gid.size)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in gid],
            "condition": np.where(stim, "stim", "ctrl"),
            "n_genes": n_genes,
        }
    )
    u = rng.normal(size=(8, n_feat)) * np.sqrt(rng.uniform(0.05, 0.3, n_feat))
    slope = rng.uniform(0.0, 0.4, n_feat) / 1000
    de = np.where(np.arange(n_feat) < n_feat // 5, np.log(2.0), 0.0)
    eta = rng.uniform(-0.5, 1.5, n_feat) + u[gid] + stim[:, None] * de
    mu = np.exp(eta + (n_genes - 3000)[:, None] * slope)
    size = rng.uniform(2.0, 10.0, n_feat)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


@pytest.fixture(scope="module")
def fits() -> dict[str, bg.FitResult]:
    y, obs = _cells_with_depth(5)
    ng = obs["n_genes"]
    variants = {
        "raw": ng,
        "centred": ng - ng.mean(),
        "rescaled": ng / 1000.0,
        "shifted": ng + 10_000.0,
    }
    return {
        name: bg.fit(y, "~ 1 + condition + cov", obs=obs.assign(cov=col), random_effects="donor")
        for name, col in variants.items()
    }


@pytest.mark.parametrize("moderate", [None, "limma"])
def test_moderated_pvalues_invariant_to_covariate_origin_and_scale(
    fits: dict[str, bg.FitResult], moderate: str | None
) -> None:
    ref = fits["raw"]
    np.testing.assert_allclose(
        fits["shifted"].coef_loc[COEF], ref.coef_loc[COEF], rtol=1e-6, atol=1e-8
    )
    p_ref = bg.de.wald(ref, coef=COEF, moderate=moderate).pval
    assert np.isfinite(p_ref).sum() > 150
    for name in ("centred", "rescaled", "shifted"):
        p = bg.de.wald(fits[name], coef=COEF, moderate=moderate).pval
        ok = np.isfinite(p_ref)
        np.testing.assert_array_equal(np.isfinite(p), ok)
        # Measured: 1e-12 in log p (the fits agree to about that); 3.5 in log p before the
        # trend read each feature's log expression at covariate value 0.
        np.testing.assert_allclose(np.log(p[ok]), np.log(p_ref[ok]), rtol=0, atol=1e-8)


def test_trend_covariate_is_mean_fitted_log_expression(fits: dict[str, bg.FitResult]) -> None:
    # A_f, computed here from the data frame: the average over donors of each donor's mean
    # fixed-effect linear predictor Intercept + stim * beta + cov * slope.
    _, obs = _cells_with_depth(5)
    res = fits["shifted"]
    coef = res.coef_loc
    obs = obs.assign(cov=obs["n_genes"] + 10_000.0)
    eta = (
        coef["Intercept"].to_numpy()[None, :]
        + (obs["condition"] == "stim").to_numpy()[:, None] * coef[COEF].to_numpy()[None, :]
        + obs["cov"].to_numpy()[:, None] * coef["cov"].to_numpy()[None, :]
    )
    donor_means = pd.DataFrame(eta).groupby(obs["donor"].to_numpy()).mean()
    expect = donor_means.mean(axis=0).to_numpy()
    prior = variance_prior(res)
    np.testing.assert_allclose(prior.log_mean, expect, rtol=1e-10, atol=1e-10)
    # ...and equal across parametrisations (the intercepts themselves differ by about 4).
    base = variance_prior(fits["raw"])
    assert np.nanmax(np.abs(res.coef_loc["Intercept"] - fits["raw"].coef_loc["Intercept"])) > 1
    np.testing.assert_allclose(prior.log_mean, base.log_mean, atol=1e-6)
    np.testing.assert_allclose(prior.s2, base.s2, rtol=1e-5)
