"""The per-pattern rank check behind ``scale_free_at_zeros`` against a per-feature loop."""

from __future__ import annotations

import numpy as np

from batchglm.de.separation import _rank_drops


def test_rank_drops_match_per_feature_matrix_rank() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(4), 5)
    z = np.column_stack([np.ones(20), groups == 1, groups == 2, groups == 3]).astype(float)
    z = np.column_stack([z, rng.normal(size=20)])  # a covariate keeps some patterns full rank
    # Features drop whole groups (rank loss) or single observations (usually none).
    kept = np.ones((20, 300), dtype=bool)
    for f in range(300):
        if f % 3 == 0:
            kept[groups == rng.integers(4), f] = False
        elif f % 3 == 1:
            kept[rng.integers(20), f] = False
    full = np.linalg.matrix_rank(z)
    expected = np.array([np.linalg.matrix_rank(z[kept[:, f]]) < full for f in range(300)])
    got = _rank_drops(z, kept)
    np.testing.assert_array_equal(got, expected)
    assert 50 < got.sum() < 300
