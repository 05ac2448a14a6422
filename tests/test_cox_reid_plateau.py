"""The gene-wise Cox-Reid plateau rule: estimates towards the Poisson limit do not move with
the grid, and the bound is returned only where no dispersion is appreciably better.

New data: Poisson counts (no over-dispersion, so about half the features have an adjusted
profile likelihood that rises or stays flat all the way to ``alpha -> 0``), checked against
an independent dense evaluation of the same APL written out below.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import batchglm.dispersion.cox_reid as cr
from batchglm.dispersion.cox_reid import MIN_ALPHA, cox_reid_search, log_r_grid

HI = 5000.0
T_END = -np.log(MIN_ALPHA)


def _poisson(seed: int, n_obs: int, n_feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n_obs), np.arange(n_obs) % 2])
    sf = np.exp(rng.normal(0.0, 0.2, n_obs))
    mean = np.exp(rng.uniform(np.log(0.5), np.log(HI), n_feat))
    lfc = rng.normal(0.0, 0.5, n_feat)
    mu = sf[:, None] * mean[None, :] * np.exp(np.outer(x[:, 1], lfc))
    y = rng.poisson(mu).astype(float)
    keep = y.any(axis=0)
    return y[:, keep], mu[:, keep], x


def _dense_apl(t: np.ndarray, y: np.ndarray, mu: np.ndarray, x: np.ndarray) -> np.ndarray:
    """APL ``(len(t), F)`` written for large ``r`` too: ``log Gamma(y + r) - log Gamma(r)``
    as ``sum_{j < y} log(r + j)`` (integer counts), the rest with ``log1p``."""
    y_int = y.astype(np.int64)
    j = np.arange(int(y_int.max()) + 1, dtype=np.float64)
    out = np.empty((t.size, y.shape[1]))
    for g, tg in enumerate(t):
        r = float(np.exp(tg))
        # cum[k] = sum_{j < k} log1p(j / r); the k log r parts combine with -y log(r + mu).
        cum = np.concatenate([[0.0], np.cumsum(np.log1p(j / r))])[:-1]
        ll = (
            cum[y_int]
            - (y + r) * np.log1p(mu / r)
            + special.xlogy(y, mu)
            - special.gammaln(y + 1.0)
        )
        w = mu / (1.0 + mu / r)
        info = np.einsum("ik,if,il->fkl", x, w, x)
        out[g] = ll.sum(axis=0) - 0.5 * np.linalg.slogdet(info)[1]
    return out


@pytest.fixture(scope="module")
def poisson_counts():
    return _poisson(21, 30, 400)


def _flat_near_poisson(seed: int, n_feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features whose APL is flat to second order at ``alpha -> 0``.

    Intercept-only, four observations at one mean ``m``, counts ``m - d, m + d, m, m``: the
    APL's slope in ``alpha`` at 0 is ``(sum (y - mu)^2 - sum y + sum h mu) / 2 =
    d^2 - 1.5 m``, zero at ``d = sqrt(1.5 m)``. A relative change ``eps`` of ``d`` puts a
    maximum at a tiny ``alpha`` (or none) whose height above the Poisson limit ranges from
    rounding (``eps ~ 1e-7``) to clear (``eps ~ 1e-2``).
    """
    rng = np.random.default_rng(seed)
    m = np.exp(rng.uniform(np.log(5.0), np.log(5000.0), n_feat))
    eps = np.exp(rng.uniform(np.log(1e-7), np.log(1e-2), n_feat)) * rng.choice([-1, 1], n_feat)
    d = np.sqrt(1.5 * m) * (1.0 + eps)
    y = np.stack([m - d, m + d, m, m])
    return y, np.tile(m, (4, 1)), np.ones((4, 1))


def test_gene_wise_estimates_do_not_depend_on_the_grid(monkeypatch):
    # Without the plateau rule, 75-142 of these features change sides (bound or not) between
    # grids of step 0.1, 0.25 and 0.5, and their estimates move by up to 1.7 in log r.
    y, mu, x = _flat_near_poisson(3, 600)
    found = {}
    for step in (0.1, 0.25, 0.5):
        monkeypatch.setattr(cr, "_GRID_STEP", step)
        assert log_r_grid(y.shape[0])[-1] == pytest.approx(T_END)
        found[step] = cox_reid_search(y, mu, x)[0]
    at_bound = found[0.5] == T_END
    assert 100 < at_bound.sum() < y.shape[1] - 100
    for step in (0.1, 0.25):
        # The same features on the bound, exactly there ...
        np.testing.assert_array_equal(found[step] == T_END, at_bound)
        # ... and the interior maxima located to Newton's precision on flat profiles.
        np.testing.assert_allclose(found[step], found[0.5], rtol=0, atol=5e-5)


def test_bound_only_where_no_dispersion_is_better(poisson_counts):
    y, mu, x = poisson_counts
    est = cox_reid_search(y, mu, x)[0]
    lo = -np.log(cr.max_alpha(y.shape[0]))
    dense = np.linspace(lo, T_END, 801)
    values = _dense_apl(dense, y, mu, x)
    at_end = values[-1]
    scale = np.maximum(np.abs(at_end), 1.0)
    on_bound = est == T_END
    # On the bound: no point of the dense grid is above the APL there by more than the
    # rule's tolerance (plus the rounding of the two evaluations).
    excess = values[:, on_bound].max(axis=0) - at_end[on_bound]
    assert np.all(excess <= cr.PLATEAU_TOL + 1e-11 * scale[on_bound])
    # Inside: the estimate is at least the dense maximum (Newton polishes between its
    # points) and above the APL at the bound.
    inside = ~on_bound
    at_est = np.array(
        [
            _dense_apl(np.array([est[f]]), y[:, [f]], mu[:, [f]], x)[0, 0]
            for f in np.flatnonzero(inside)
        ]
    )
    assert np.all(at_est >= values[:, inside].max(axis=0) - 1e-10 * scale[inside])
    assert np.all(at_est > at_end[inside])
