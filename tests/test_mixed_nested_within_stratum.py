"""Within-stratum group-level variance of nested mixed fits (moderation's ``s_f^2``).

References: statsmodels OLS of the donors' log levels on batch indicators and the
condition (the error stratum of the nested design, 8 - 5 = 3 residual df), computed here
from the counts and the fit's fixed coefficients; the scaled chi-squared law
``sigma^2 chi2_3 / 3`` of that residual mean square (closed form, scipy); null rejection of
the moderated test at 0.05 on new nested data whose genes' donor variances differ.
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from scipy import stats

import batchglm as bg
from batchglm.mixed.moderation import stratum_s2, variance_prior
from mixed_reference import donors_in_batches

COEF = "condition[T.stim]"


def _nested_counts(
    seed: int,
    n_feat: int,
    level: float,
    cells: tuple[int, int],
    donor_sd: tuple[float, float],
    batch_sd: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, object, np.ndarray]:
    """Null Poisson counts of 4 vs 4 donors in 4 batches; (y, donor, obs, donor SD)."""
    rng = np.random.default_rng(seed)
    donor = np.repeat(np.arange(8), rng.integers(*cells, 8))
    obs, batch = donors_in_batches(donor, 4)
    sd = rng.uniform(*donor_sd, n_feat)
    eta = (
        level
        + rng.uniform(-0.5, 0.5, n_feat)
        + rng.normal(0.0, batch_sd, (4, n_feat))[batch[donor]]
        + rng.normal(0.0, 1.0, (8, n_feat))[donor] * sd
    )
    return rng.poisson(np.exp(eta)).astype(float), donor, obs, sd


def test_within_stratum_variance_matches_ols_of_donor_log_levels() -> None:
    y, donor, obs, _ = _nested_counts(11, 12, 2.0, (20, 60), (0.2, 0.4))
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    assert res.small_sample is not None
    s2 = stratum_s2(res.small_sample, res.coef_loc.to_numpy())
    assert s2 is not None
    # Independent: fixed-effect means from the coefficients, donor sums, OLS on [batch, stim].
    stim = (obs["condition"] == "stim").to_numpy(dtype=float)
    coef = res.coef_loc.to_numpy()
    mu = np.asarray(res.size_factors).reshape(-1, 1) * np.exp(
        coef[:, 0] + stim[:, None] * coef[:, 1]
    )
    ysum, musum = np.zeros((8, y.shape[1])), np.zeros((8, y.shape[1]))
    np.add.at(ysum, donor, y)
    np.add.at(musum, donor, mu)
    z = np.log((ysum + 0.5) / (musum + 0.5))
    x = np.column_stack([np.eye(4)[np.arange(8) % 4], np.repeat([0.0, 1.0], 4)])
    ref = np.array([sm.OLS(z[:, f], x).fit().mse_resid for f in range(y.shape[1])])
    np.testing.assert_allclose(s2, ref, rtol=1e-8)


def test_within_stratum_variance_is_scaled_chi2_with_the_containment_df() -> None:
    # Counts near e^5 on 10 cells per donor: the donors' log levels carry sampling variance
    # about 7e-4 against donor variance 0.09, so s_f^2 / 0.09 must follow chi2_3 / 3 (KS),
    # and log(s_f^2 / 0.09) has variance trigamma(3/2) = 0.93 (what the prior assumes).
    # Without a batch effect about half the fits put the batch variance at 0 and pool the
    # batch stratum: the covariance-implied variance (the old s_f^2) is then not chi2_3 / 3
    # (KS p 2e-6 measured), which is the fault this estimator fixes.
    n_feat = 240
    y, _, obs, _ = _nested_counts(21, n_feat, 5.0, (10, 11), (0.3, 0.3), batch_sd=0.0)
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    prior = variance_prior(res)
    assert prior.s2_wald is not None
    assert np.mean(np.asarray(res.random_var)[:, 1] < 1e-6) > 0.3
    ratio = prior.s2 / (0.09 + 7e-4)
    ok = np.isfinite(ratio)
    assert ok.sum() >= n_feat - 2
    assert stats.kstest(3.0 * ratio[ok], stats.chi2(3).cdf).pvalue > 0.01
    assert abs(np.var(np.log(ratio[ok])) - 0.9348) < 0.25
    old = prior.s2_wald[ok] / (0.09 + 7e-4)
    assert stats.kstest(3.0 * old, stats.chi2(3).cdf).pvalue < 1e-3


def test_moderated_wald_calibrated_with_unequal_donor_variances() -> None:
    # 300 null genes whose donor SD varies 0.15-0.45 (variances 9x apart) and unequal donors
    # (30-150 cells): the default moderated Wald test rejects within [0.03, 0.07] at 0.05
    # with uniform p-values (0.057 measured; 0.067 with the covariance-implied variance).
    y, _, obs, _ = _nested_counts(14, 300, 1.5, (30, 150), (0.15, 0.45))
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    p = bg.de.wald(res, coef=COEF).pval
    ok = np.isfinite(p)
    assert 0.03 <= np.mean(p[ok] < 0.05) <= 0.07
    assert stats.kstest(p[ok], "uniform").pvalue > 0.01


def test_singular_inner_hessian_on_a_trial_step_rejects_the_step_not_the_batch() -> None:
    # On these Poisson counts a Newton trial step of one feature drives its donor variance
    # to about e^40 and its inner Hessian to exact singularity; np.linalg.inv then failed
    # for the whole batch (LinAlgError). The feature's Laplace value is NaN at that point,
    # so the step is halved; the other features' fits must not depend on the batch.
    y, _, obs, _ = _nested_counts(13, 300, 1.0, (30, 150), (0.15, 0.45))
    y = y[:, 240:270]
    kw = {"obs": obs, "random_effects": ["donor", "batch"], "family": "poisson"}
    whole = bg.fit(y, "~ condition", **kw)
    halves = [bg.fit(y[:, sl], "~ condition", **kw) for sl in (slice(0, 15), slice(15, 30))]
    ll = np.concatenate([np.asarray(h.loglik) for h in halves])
    assert np.all(np.isfinite(np.asarray(whole.loglik)))
    np.testing.assert_allclose(np.asarray(whole.loglik), ll, rtol=1e-9)
