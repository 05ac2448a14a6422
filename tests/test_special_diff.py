from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from batchglm.families.special_diff import digamma_diff, lgamma_diff, trigamma, trigamma_diff

R = [0.01, 0.5, 5.0, 49.0, 51.0, 1e3, 1e5, 1e8]
Y = [1.0, 3.0, 50.0, 1e4, 1e6]


@pytest.mark.parametrize("r", R)
def test_differences_match_mpmath(r):
    mp.mp.dps = 40
    y = np.array(Y)
    rr = np.full_like(y, r)
    for f, ref in [
        (lgamma_diff, lambda a, b: mp.loggamma(a + b) - mp.loggamma(b)),
        (digamma_diff, lambda a, b: mp.digamma(a + b) - mp.digamma(b)),
        (trigamma_diff, lambda a, b: mp.polygamma(1, a + b) - mp.polygamma(1, b)),
    ]:
        expected = np.array([float(ref(mp.mpf(v), mp.mpf(r))) for v in Y])
        np.testing.assert_allclose(f(y, rr), expected, rtol=1e-12)


def test_trigamma_matches_mpmath():
    x = np.array([1e-6, 0.01, 0.5, 1.0, 7.3, 19.99, 20.0, 55.0, 1e4, 1e9])
    expected = np.array([float(mp.polygamma(1, mp.mpf(v))) for v in x])
    np.testing.assert_allclose(trigamma(x), expected, rtol=2e-15)
