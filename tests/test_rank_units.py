"""Rank decisions (identifiability, nesting, residual df) ignore the units of a column."""

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de.nested import check_nested
from batchglm.design import column_rank


def _design(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])


@pytest.mark.parametrize("scales", [(1e8, 1e-8), (1e-8, 1e8), (1.0, 1.0)])
def test_column_rank_and_nesting_are_unit_free(scales):
    rng = np.random.default_rng(3)
    x = _design(rng, 40) * np.array([1.0, *scales])
    assert column_rank(x) == 3
    assert check_nested(x, x[:, [0, 2]], "loc") == 1
    collinear = np.column_stack([x, 2.0 * x[:, 2]])
    assert column_rank(collinear) == 3
    with pytest.raises(ValueError, match="not nested"):
        check_nested(x[:, :2], x[:, [0, 2]], "loc")


def test_lrt_with_raw_scale_columns_equals_rescaled():
    rng = np.random.default_rng(4)
    n, g = 30, 12
    base = _design(rng, n)
    mu = np.exp(2.0 + 0.4 * base[:, 1:2] + 0.0 * base[:, 2:3])
    y = rng.negative_binomial(4, 4 / (4 + mu), size=(n, g)).astype(float)
    scale = np.array([1.0, 1e8, 1e-8])
    names = ["Intercept", "big", "tiny"]
    raw = pd.DataFrame(base * scale, columns=names)
    unit = pd.DataFrame(base, columns=names)
    p_raw = bg.de.lrt(y, full_loc=raw, reduced_loc=raw[["Intercept", "tiny"]]).pval
    p_unit = bg.de.lrt(y, full_loc=unit, reduced_loc=unit[["Intercept", "tiny"]]).pval
    np.testing.assert_allclose(p_raw, p_unit, rtol=1e-6)
    assert np.all(np.isfinite(p_raw))
