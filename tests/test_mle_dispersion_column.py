"""Tables of ``dispersion="mle"`` tests carry the per-feature NB dispersion.

A user's script that read the ``dispersion`` column of ``"map"`` tables hit a KeyError on
``"mle"`` tables. The reference is statsmodels' NB2 maximum likelihood on the same gene.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

import batchglm as bg


def _data() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 24
    obs = pd.DataFrame({"c": np.repeat(["a", "b"], n // 2)}, index=[f"s{i}" for i in range(n)])
    mu = np.exp(rng.normal(3.0, 0.5, 6))
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu[None, :]), (n, 6)).astype(float)
    return y, obs


def test_mle_table_has_the_maximum_likelihood_dispersion():
    y, obs = _data()
    res = bg.fit(y, "~ c", obs=obs)
    table = bg.de.wald(res, coef="c[T.b]", dispersion="mle").summary()
    x = np.column_stack([np.ones(len(obs)), (obs["c"] == "b").to_numpy(float)])
    for j in range(3):
        ref = sm.NegativeBinomial(y[:, j], x, loglike_method="nb2").fit(disp=0, maxiter=200)
        np.testing.assert_allclose(table["dispersion"].iloc[j], ref.params[-1], rtol=2e-3)


def test_no_dispersion_column_where_there_is_no_single_one():
    y, obs = _data()
    varying = bg.fit(y, "~ c", "~ c", obs=obs)  # a dispersion per condition
    assert "dispersion" not in bg.de.wald(varying, coef="c[T.b]").summary().columns
    poisson = bg.fit(y, "~ c", obs=obs, family="poisson")
    assert "dispersion" not in bg.de.wald(poisson, coef="c[T.b]").summary().columns
