"""The fused NB kernel (batchglm.families.nb_kernel) against the NumPy expressions.

The NumPy path is the reference: both must agree to rounding on every output, including
the Poisson limit (``r`` up to 1e8), strong over-dispersion and large counts; the fused
path's log-likelihood is also checked against ``scipy.stats.nbinom.logpmf``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from batchglm.families import get_family, nb_kernel
from batchglm.families.scratch import Scratch

pytestmark = pytest.mark.skipif(not nb_kernel.ENABLED, reason="numba kernel switched off")


@pytest.fixture(autouse=True)
def _kernel_for_small_blocks(monkeypatch):
    """The tests' blocks are small; by default such blocks skip the kernel."""
    monkeypatch.setattr(nb_kernel, "MIN_ENTRIES", 0)


def test_small_blocks_use_numpy_by_default(monkeypatch):
    monkeypatch.setattr(nb_kernel, "MIN_ENTRIES", 1 << 16)
    y, eta_loc, eta_scale = _block(300, 7, 1, False)
    assert not nb_kernel.applies(y, eta_loc, eta_scale)
    y, eta_loc, eta_scale = _block(20000, 4, 1, False)
    assert nb_kernel.applies(y, eta_loc, eta_scale)


def _block(n: int, n_feat: int, seed: int, per_obs_scale: bool):
    rng = np.random.default_rng(seed)
    eta_loc = rng.uniform(-6.0, 8.0, (n, n_feat))
    rows = n if per_obs_scale else 1
    eta_scale = rng.uniform(np.log(1e-3), np.log(1e8), (rows, n_feat))
    mu = np.exp(eta_loc)
    r = np.broadcast_to(np.exp(eta_scale), mu.shape)
    y = rng.negative_binomial(np.minimum(r, 1e6), np.minimum(r, 1e6) / (np.minimum(r, 1e6) + mu))
    return y.astype(np.float64), eta_loc, eta_scale


@pytest.mark.parametrize("per_obs_scale", [False, True])
def test_fused_kernel_matches_numpy(per_obs_scale):
    nb = get_family("nb")
    y, eta_loc, eta_scale = _block(300, 7, 1, per_obs_scale)
    assert nb_kernel.applies(y, eta_loc, eta_scale)
    fused = nb.derivatives(y, eta_loc, eta_scale, 2, Scratch())
    ref = nb.derivatives_numpy(y, eta_loc, eta_scale, 2)
    for name in ("ll", "d_loc", "d_scale", "d2_loc", "d2_cross", "d2_scale"):
        got, want = getattr(fused, name), getattr(ref, name)
        scale = np.abs(want).max() + 1e-300
        assert np.max(np.abs(got - want)) <= 1e-14 * scale, name
    only_ll = nb.derivatives(y, eta_loc, eta_scale, 0)
    np.testing.assert_array_equal(only_ll.ll, fused.ll)


def test_fused_loglik_against_scipy():
    nb = get_family("nb")
    rng = np.random.default_rng(4)
    eta_loc = rng.uniform(-3.0, 4.0, (500, 3))
    eta_scale = np.log(np.array([[0.3, 4.0, 50.0]]))
    mu, r = np.exp(eta_loc), np.exp(eta_scale)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    der = nb.derivatives(y, eta_loc, eta_scale, 0)
    # Elementary terms plus the count terms and constant give the full log-pmf.
    full = der.ll + special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1.0)
    ref = stats.nbinom.logpmf(y, r, r / (r + mu))
    np.testing.assert_allclose(full, ref, rtol=1e-11, atol=1e-11)


def test_kernel_not_used_for_broadcast_shapes():
    y = np.zeros((4, 2))
    assert not nb_kernel.applies(y, np.zeros((4, 1)), np.zeros((1, 2)))
    assert not nb_kernel.applies(y.astype(np.float32), np.zeros((4, 2)), np.zeros((1, 2)))


def test_switched_off_kernel_refuses(monkeypatch):
    monkeypatch.setattr(nb_kernel, "ENABLED", False)
    y = np.zeros((3, 2))
    assert not nb_kernel.applies(y, y, y[:1])
    with pytest.raises(RuntimeError, match="needs numba and BATCHGLM_NUMBA"):
        nb_kernel.nb_terms(y, y, y[:1], 0, (y,) * 6)
    # The family falls back to the NumPy expressions.
    der = get_family("nb").derivatives(y, y, y[:1], 2)
    np.testing.assert_allclose(der.ll, -np.log(2.0))
