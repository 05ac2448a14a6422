"""A count table gives the same results whatever its memory layout (row- or column-major)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import batchglm as bg
from batchglm.inputs import as_data


def test_frame_values_are_row_major() -> None:
    f_order = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    d = as_data(pd.DataFrame(f_order, columns=list("abc")))
    assert d.values.flags["C_CONTIGUOUS"]


def test_column_major_frame_gives_identical_table() -> None:
    rng = np.random.default_rng(11)
    n, g = 12, 150
    obs = pd.DataFrame(
        {"cond": np.repeat(["a", "b"], n // 2), "x": rng.uniform(20, 80, n)},
        index=[f"s{i}" for i in range(n)],
    )
    y = rng.negative_binomial(3, 3 / (3 + np.exp(rng.normal(2.5, 1.5, g)))[None, :], (n, g))
    cols = [f"g{j}" for j in range(g)]
    c_frame = pd.DataFrame(np.ascontiguousarray(y, dtype=float), index=obs.index, columns=cols)
    f_frame = pd.DataFrame(np.asfortranarray(y, dtype=float), index=obs.index, columns=cols)
    kw = {"obs": obs, "coef": "cond[T.b]", "progress": False}
    a = bg.de.test(c_frame, "~ x + cond", **kw).summary()
    b = bg.de.test(f_frame, "~ x + cond", **kw).summary()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
