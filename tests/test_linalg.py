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


def test_pair_products_are_built_lazily_and_survive_pickling():
    import pickle

    from batchglm.solvers.linalg import PairProducts

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    w = rng.uniform(size=(50, 4))
    pp = PairProducts(a, b)
    sym = PairProducts(a, a, symmetric=True)
    assert not pp.built and not sym.built
    # Independent reference: A^T diag(w_f) B by einsum, feature by feature.
    np.testing.assert_allclose(pp(w), np.einsum("nk,nf,nl->fkl", a, w, b), rtol=1e-13)
    np.testing.assert_allclose(sym(w), np.einsum("nk,nf,nl->fkl", a, w, a), rtol=1e-13)
    assert pp.built
    again = pickle.loads(pickle.dumps(PairProducts(a, b)))
    np.testing.assert_allclose(again(w), pp(w), rtol=0)
