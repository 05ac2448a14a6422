"""A singular or overflowing inner Newton system never stops a mixed fit.

A Poisson fit with donors nested in batches raised ``LinAlgError: Singular matrix`` from
the joint inner Newton (one feature's system after a trial step); NB fitted the same gene.
Data simulated here (the layout of the report: 8 donors in 4 batches).
"""

from __future__ import annotations

import numpy as np

import batchglm as bg
from batchglm.solvers.linalg import solve_or_nan
from mixed_reference import nested_null_poisson


def test_solve_or_nan_keeps_the_regular_systems_of_a_stack():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 3)) + 3.0 * np.eye(3)
    b = rng.normal(size=(5, 3))
    a[1] = np.outer([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])  # singular
    a[3, 0, 0] = np.inf
    out = solve_or_nan(a, b)
    for f in (0, 2, 4):
        np.testing.assert_allclose(out[f], np.linalg.solve(a[f], b[f]), rtol=1e-10)
    assert np.all(np.isnan(out[3])) and np.all(np.isfinite(out[1]))


def test_nested_poisson_fit_of_the_reported_gene_converges():
    y, obs = nested_null_poisson(np.random.default_rng(1), 8, 4, 400)
    y = y[:, [183]]
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"], family="poisson")
    assert res.status.tolist() == ["converged"]
    glm = bg.fit(y, "~ condition", obs=obs, family="poisson")
    # The Laplace likelihood with both variances free is at least the GLM's (variances 0).
    assert float(res.loglik.iloc[0]) >= float(glm.loglik.iloc[0]) - 1e-6
    assert np.all(np.isfinite(res.random_var.to_numpy()))
