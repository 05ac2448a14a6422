"""CountTable.group_sums returns the last sums again for the same predictors (fixed-scale fits)."""

from __future__ import annotations

import numpy as np
from scipy import special

from batchglm.families import get_family
from batchglm.solvers.count_table import CountTable


def test_repeated_predictors_give_fresh_copies_of_the_same_sums():
    rng = np.random.default_rng(5)
    y = rng.poisson(3.0, (30, 8)).astype(float)
    group = np.arange(30) % 2
    table = CountTable(y, group, 2)
    fam = get_family("nb")
    eta = rng.normal(1.0, 0.5, (2, 8))
    first = table.group_sums(fam, eta, 0)
    assert first is not None
    r = np.exp(eta)[group]
    want = (special.gammaln(y + r) - special.gammaln(r)).reshape(30, 8)
    want = np.stack([want[group == g].sum(axis=0) for g in range(2)])
    np.testing.assert_allclose(first[0], want, rtol=1e-12)
    first[0][:] = 0.0  # a caller writing into its result must not change the next one
    again = table.group_sums(fam, eta.copy(), 0)
    assert again is not None
    np.testing.assert_allclose(again[0], want, rtol=1e-12)
    # A higher order or other predictors are evaluated, not taken from the memo.
    second = table.group_sums(fam, eta, 2)
    assert second is not None and second[1] is not None and second[2] is not None
    moved = table.group_sums(fam, eta + 0.1, 0)
    assert moved is not None and not np.allclose(moved[0], want)
    lower = table.group_sums(fam, eta + 0.1, 0)
    assert lower is not None
    np.testing.assert_array_equal(lower[0], moved[0])
