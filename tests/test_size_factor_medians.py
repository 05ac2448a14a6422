"""Per-observation medians of the median-ratio size factors against a plain per-row median."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

sf_module = importlib.import_module("batchglm.size_factors")


def _reference(rows: np.ndarray, values: np.ndarray, n_obs: int) -> np.ndarray:
    out = np.full(n_obs, np.nan)
    for i in range(n_obs):
        part = values[rows == i]
        if part.size:
            out[i] = np.median(part)
    return out


@pytest.mark.parametrize("per_row", [[7, 7, 7, 7], [1, 1, 1], [6, 3, 0, 5], [4, 4, 4, 5]])
def test_row_medians_equal_plain_medians(per_row: list[int]) -> None:
    rng = np.random.default_rng(sum(per_row))
    rows = np.repeat(np.arange(len(per_row)), per_row).astype(np.int32)
    rng.shuffle(rows)
    values = np.round(rng.normal(size=rows.size), 1)  # ties
    got = sf_module._row_medians(rows, values, len(per_row))
    np.testing.assert_array_equal(got, _reference(rows, values, len(per_row)))


def test_median_ratio_size_factors_unchanged_on_a_table() -> None:
    rng = np.random.default_rng(5)
    y = rng.negative_binomial(5, 0.1, (9, 400)).astype(float) + 1.0
    log_gm = np.log(y).mean(axis=0)
    expected = np.exp(np.median(np.log(y) - log_gm, axis=1))
    np.testing.assert_allclose(sf_module.size_factors(y, "median_ratio"), expected, rtol=1e-12)
