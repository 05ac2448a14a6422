"""Cox-Reid dispersions summed by cells and count table equal a direct APL maximisation."""

import numpy as np
import pytest
from scipy import optimize, special

from batchglm.dispersion.cox_reid import cox_reid_log_r


def _apl(log_r: float, y: np.ndarray, mu: np.ndarray, x: np.ndarray) -> float:
    r = np.exp(log_r)
    ll = np.sum(
        special.gammaln(y + r)
        - special.gammaln(r)
        - special.gammaln(y + 1)
        + r * np.log(r / (r + mu))
        + special.xlogy(y, mu / (r + mu))
    )
    w = mu / (1.0 + mu / r)
    return float(ll - 0.5 * np.linalg.slogdet((x * w[:, None]).T @ x)[1])


@pytest.mark.parametrize("n_sf", [1, 2, 40])  # cells of 10 / 5 observations, or none
def test_cells_and_count_table_reach_the_apl_maximum(n_sf):
    rng = np.random.default_rng(5 + n_sf)
    n, f = 40, 12
    x = np.column_stack(
        [np.ones(n), np.tile([0.0, 1.0, 0.0, 0.0], 10), np.tile([0.0, 0.0, 1.0, 0.0], 10)]
    )
    sf = rng.choice(np.exp(rng.normal(0, 0.3, n_sf)), n)
    mu = sf[:, None] * np.exp(x @ rng.normal([2.0, 0.5, -0.5], 0.8, (f, 3)).T)
    y = rng.negative_binomial(4, 4 / (4 + mu)).astype(float)
    got = cox_reid_log_r(y, mu, x)
    for j in range(f):
        ref = optimize.minimize_scalar(
            lambda t, j=j: -_apl(t, y[:, j], mu[:, j], x),
            bounds=(-5, 15),
            method="bounded",
            options={"xatol": 1e-9},
        )
        assert _apl(got[j], y[:, j], mu[:, j], x) >= -ref.fun - 1e-7
        if -5 < ref.x < 15 - 1e-3:
            assert got[j] == pytest.approx(ref.x, abs=1e-4)
