"""Starting dispersion of sparse NB features (NegativeBinomial.start_scale).

With a rough location start the means of low-count features can be several times the
observed ones; the moment estimate about them is negative and used to start ``r`` at 1e6,
from where fits with a continuous covariate stalled at the upper bound (``r = 1e8``,
``scale_at_bound``) 5 log-likelihood units below the optimum. Reference: ``scipy.optimize``
on the same likelihood.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

import batchglm as bg


def test_sparse_overdispersed_features_leave_the_poisson_limit():
    n = 6000
    rng = np.random.default_rng(7)
    cell_type = rng.integers(0, 8, n)
    cond = rng.integers(0, 2, n)
    cov = rng.normal(size=n)
    sf = np.exp(rng.normal(0.0, 0.3, n))
    x = np.column_stack([np.ones(n)] + [cell_type == k for k in range(1, 8)] + [cond, cov]).astype(
        float
    )
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(cell_type), "condition": pd.Categorical(cond), "cov": cov}
    )
    n_feat = 6
    coef = np.column_stack([np.full(n_feat, np.log(0.03)), rng.uniform(-0.3, 0.3, (n_feat, 9))])
    r = np.full(n_feat, 1.0)
    mu = sf[:, None] * np.exp(x @ coef.T)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    res = bg.fit(y, "~ cell_type + condition + cov", obs=obs, size_factors=sf, n_jobs=1)
    for f in range(n_feat):

        def nll(p: np.ndarray, f: int = f) -> float:
            m = sf * np.exp(x @ p[:10])
            rr = np.exp(p[10])
            return -float(stats.nbinom.logpmf(y[:, f], rr, rr / (rr + m)).sum())

        best = optimize.minimize(nll, np.append(coef[f], 0.0), method="BFGS")
        assert res.loglik.iloc[f] >= -best.fun - 1e-6, f
    assert (res.status == "converged").all()
