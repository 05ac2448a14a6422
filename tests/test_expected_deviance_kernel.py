"""The compiled table column of the expected NB unit deviance against mpmath's sums (an
independent 40-digit evaluation of the same truncated expectation) and the NumPy path."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from batchglm.dispersion import expected_deviance as ed
from batchglm.families import nb_kernel

pytestmark = pytest.mark.skipif(not nb_kernel.ENABLED, reason="numba kernels disabled")


def _kappa_mpmath(mu: float, r: float, last: int) -> float:
    """``sum_{y <= last} P(y) d(y)`` with log-gamma probabilities at 40 digits."""
    with mpmath.workdps(40):
        m, s = mpmath.mpf(mu), mpmath.mpf(r)
        total = mpmath.mpf(0)
        for k in range(last + 1):
            y = mpmath.mpf(k)
            log_p = (
                mpmath.loggamma(y + s)
                - mpmath.loggamma(s)
                - mpmath.loggamma(y + 1)
                + s * mpmath.log(s / (s + m))
                + y * mpmath.log(m / (s + m))
            )
            dev = 2 * (
                (y * mpmath.log(y / m) if k else 0) - (y + s) * mpmath.log((y + s) / (m + s))
            )
            total += mpmath.exp(log_p) * max(dev, 0)
        return float(total)


@pytest.mark.parametrize(
    ("mu", "r"),
    [(1e-4, 3.0), (0.3, 0.05), (2.5, 40.0), (30.0, 2.0), (64.0, 0.5), (1.2e-4, 1e8), (10.0, 1e4)],
)
def test_column_matches_mpmath(mu, r):
    mus = np.array([mu])
    last = int(ed._last_count(mus, r)[0])
    want = _kappa_mpmath(mu, r, last)
    assert ed._column(mus, r, True)[0] == pytest.approx(want, rel=1e-13)


def test_column_matches_the_numpy_sums_where_they_are_accurate():
    # The NumPy path's gammaln(y + r) - gammaln(r) loses about r * 1e-16 (relative 6e-5 at
    # r = 1e8, mu = 1e-4, against mpmath); up to r = 1e3 it agrees to 1e-9.
    mu = np.exp(np.linspace(np.log(1e-4), np.log(64.0), 97))
    for r in (0.02, 0.3, 1.0, 7.0, 60.0, 1e3):
        np.testing.assert_allclose(ed._column(mu, r, True), ed._exact_column(mu, r), rtol=1e-9)
