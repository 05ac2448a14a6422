"""``ql_f``'s reduced model starts from the full refit at the trend and reaches its optimum.

The reduced location model (the tested coefficient dropped) is refitted at the trended
dispersion, warm-started from the full refit at that dispersion. Reference: scipy.optimize
on ``scipy.stats.nbinom.logpmf`` of the reduced design at the same fixed dispersion
(independent of batchglm's Newton solver), feature by feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

import batchglm as bg


def test_reduced_model_reaches_the_scipy_optimum_at_the_trend() -> None:
    rng = np.random.default_rng(20261201)
    n, n_feat = 24, 60
    obs = pd.DataFrame(
        {
            "condition": np.tile(["ctrl", "trt"], n // 2),
            "batch": np.repeat(["b0", "b1", "b2"], n // 3),
        }
    )
    base = np.exp(rng.normal(3.0, 1.5, n_feat))
    lfc = np.where(rng.uniform(size=n_feat) < 0.3, rng.normal(0.0, 1.0, n_feat), 0.0)
    sf = np.exp(rng.normal(0.0, 0.25, n))
    trt = (obs["condition"] == "trt").to_numpy()
    mu = sf[:, None] * base[None, :] * np.exp(np.outer(trt, lfc))
    r = 1.0 / (0.05 + 1.0 / base)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    res = bg.fit(y, "~ batch + condition", obs=obs, size_factors=sf, progress=False)
    de = bg.de.ql_f(res, "condition[T.trt]", data=y)
    reduced = de.reduced
    assert reduced is not None
    x_red = np.column_stack([np.ones(n), obs["batch"] == "b1", obs["batch"] == "b2"]).astype(float)
    log_r = reduced.coef_scale.to_numpy()[:, 0]
    checked = 0
    for f in range(0, n_feat, 6):
        if not np.all(y[:, f] > 0):  # features with zeros can be separated; skip them
            continue
        rr = float(np.exp(log_r[f]))

        def nll(p: np.ndarray, f: int = f, rr: float = rr) -> float:
            m = sf * np.exp(x_red @ p)
            return -float(stats.nbinom.logpmf(y[:, f], rr, rr / (rr + m)).sum())

        start = np.array([np.log(y[:, f].mean()), 0.0, 0.0])
        best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-10})
        assert reduced.loglik.iloc[f] >= -best.fun - 1e-8
        np.testing.assert_allclose(reduced.loglik.iloc[f], -best.fun, atol=1e-6)
        # The reduced coefficients, mapped to the full design's columns (condition = 0).
        got = reduced.coef_loc.to_numpy()[f]
        np.testing.assert_allclose(got[:3], best.x, atol=1e-4)
        np.testing.assert_allclose(got[3], 0.0, atol=1e-12)
        checked += 1
    assert checked >= 5
