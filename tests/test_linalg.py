"""Batched linear algebra: one awkward feature never changes another feature's step."""

from __future__ import annotations

import numpy as np

from batchglm.solvers.linalg import newton_direction


def test_indefinite_hessian_does_not_spoil_the_batch():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    pd = -(a @ a.T + 3 * np.eye(3))  # negative definite: a proper maximum
    indefinite = np.diag([-1.0, 2.0, -3.0])
    grad = rng.normal(size=(2, 3)) * 10
    direction, modified = newton_direction(grad, np.stack([pd, indefinite]))
    np.testing.assert_allclose(direction[0], np.linalg.solve(-pd, grad[0]), rtol=1e-12)
    assert modified.tolist() == [False, True]
    # the modified step is an ascent direction no longer than one unit per eigen-direction
    assert grad[1] @ direction[1] > 0
    assert np.abs(direction[1]).max() <= 1.0 + 1e-12
