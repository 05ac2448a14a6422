"""bg.de.lrt on mixed fits: moderated by default (as bg.de.wald), calibrated, more powerful."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.families.tails import f_sf


def _donors(seed: int, n_null: int, n_de: int, cells: list[int]) -> tuple[np.ndarray, pd.DataFrame]:
    """Donors nested in condition (first half ctrl), donor SD 0.25-0.5, DE at 2.5-fold."""
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(len(cells)), cells)
    stim = gid >= len(cells) // 2
    obs = pd.DataFrame({"donor": [f"p{g}" for g in gid], "condition": np.where(stim, "b", "a")})
    obs["condition"] = obs["condition"].map({"a": "ctrl", "b": "stim"})
    n = n_null + n_de
    sd = rng.uniform(0.25, 0.5, n)
    effect = np.r_[np.zeros(n_null), np.log(2.5) * rng.choice([-1.0, 1.0], n_de)]
    log_mu = rng.uniform(-0.3, 1.2, n) + rng.normal(size=(len(cells), n))[gid] * sd
    mu = np.exp(log_mu + np.outer(stim, effect))
    size = rng.uniform(3.0, 8.0, n)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


@pytest.fixture(scope="module")
def fits() -> tuple[bg.FitResult, bg.FitResult, int]:
    n_null, n_de = 400, 100
    y, obs = _donors(41, n_null, n_de, [30] * 8)
    full = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    reduced = bg.fit(y, "~ 1", obs=obs, random_effects="donor")
    return full, reduced, n_null


def test_moderated_lrt_calibrated_and_more_powerful(fits) -> None:
    full, reduced, n_null = fits
    mod = bg.de.lrt(full=full, reduced=reduced, coef="condition[T.stim]").summary()
    plain = bg.de.lrt(
        full=full, reduced=reduced, coef="condition[T.stim]", moderate=False
    ).summary()
    p = mod["pvalue"].to_numpy()
    null = p[:n_null][np.isfinite(p[:n_null])]
    assert 0.03 <= (null < 0.05).mean() <= 0.07
    assert stats.kstest(null, "uniform").pvalue > 0.01
    q, q0 = mod["padj"].to_numpy(), plain["padj"].to_numpy()
    assert (q[n_null:] < 0.05).sum() > (q0[n_null:] < 0.05).sum()
    assert (q[:n_null] < 0.05).sum() <= 0.1 * max((q < 0.05).sum(), 1)


def test_unmoderated_lrt_is_the_bartlett_f_reference(fits) -> None:
    # moderate=False: F = (exp(LR / G) - 1) (G - p_b) / df against F(df, G - p_b), G = 8
    # donors, p_b = 2, for features whose donor variance is interior.
    full, reduced, _ = fits
    plain = bg.de.lrt(full=full, reduced=reduced, coef="condition[T.stim]", moderate=False)
    inner = (full.status == "converged").to_numpy()
    lr = 2.0 * (full.loglik.to_numpy() - reduced.loglik.to_numpy())
    expect = f_sf(np.expm1(lr / 8) * 6 / 1, 1, 6)
    np.testing.assert_allclose(plain.pval[inner], expect[inner], rtol=1e-10)


def test_moderate_option_is_refused_without_random_effects() -> None:
    y, obs = _donors(42, 30, 0, [6] * 4)
    full = bg.fit(y, "~ condition", obs=obs)
    reduced = bg.fit(y, "~ 1", obs=obs)
    with pytest.raises(ValueError, match="needs a fit with `random_effects`"):
        bg.de.lrt(full=full, reduced=reduced, moderate=True)
