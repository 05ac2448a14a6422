from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from batchglm.families import get_family

FAM = get_family("nb")


def _total(y, el, es, order):
    d = FAM.derivatives(y, el, es, order)
    c = FAM.count_terms(y, es, order)
    pos = y > 0
    ll = d.ll + np.where(pos, c.ll, 0.0)
    if order == 0:
        return ll
    ds = d.d_scale + np.where(pos, c.d_scale, 0.0)
    d2s = d.d2_scale + np.where(pos, c.d2_scale, 0.0)
    return ll, d.d_loc, ds, d.d2_loc, d.d2_cross, d2s


@pytest.fixture
def grid():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 60, size=200).astype(float)
    y[:5] = [0, 1, 1000, 10**6, 3]
    el = rng.uniform(np.log(1e-4), np.log(1e4), size=200)
    es = rng.uniform(np.log(0.05), np.log(1e6), size=200)
    return y, el, es


def _mp_logpmf(y, mu, r):
    mp.mp.dps = 40
    y, mu, r = mp.mpf(y), mp.mpf(mu), mp.mpf(r)
    return float(
        mp.loggamma(y + r)
        - mp.loggamma(r)
        - mp.loggamma(y + 1)
        + r * mp.log(r / (r + mu))
        + y * mp.log(mu / (r + mu))
    )


def test_loglik_matches_high_precision_reference(grid):
    y, el, es = grid
    mu, r = np.exp(el), np.exp(es)
    ref = np.array([_mp_logpmf(*v) for v in zip(y, mu, r, strict=True)])
    np.testing.assert_allclose(FAM.loglik(y, el, es), ref, rtol=1e-12, atol=1e-12)
    # scipy agrees to its own (lower) accuracy at large sizes
    np.testing.assert_allclose(stats.nbinom.logpmf(y, r, r / (r + mu)), ref, rtol=1e-7)


def test_first_derivatives_match_finite_differences(grid):
    y, el, es = grid
    h = 1e-6
    _, d_loc, d_scale, *_ = _total(y, el, es, 2)
    fd_loc = (_total(y, el + h, es, 0) - _total(y, el - h, es, 0)) / (2 * h)
    fd_scale = (_total(y, el, es + h, 0) - _total(y, el, es - h, 0)) / (2 * h)
    np.testing.assert_allclose(d_loc, fd_loc, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d_scale, fd_scale, rtol=1e-5, atol=1e-4)


def test_second_derivatives_match_finite_differences(grid):
    y, el, es = grid
    h = 1e-5
    _, _, _, d2_loc, d2_cross, d2_scale = _total(y, el, es, 2)
    up_l, dn_l = _total(y, el + h, es, 2), _total(y, el - h, es, 2)
    up_s, dn_s = _total(y, el, es + h, 2), _total(y, el, es - h, 2)
    np.testing.assert_allclose(d2_loc, (up_l[1] - dn_l[1]) / (2 * h), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d2_cross, (up_l[2] - dn_l[2]) / (2 * h), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d2_cross, (up_s[1] - dn_s[1]) / (2 * h), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d2_scale, (up_s[2] - dn_s[2]) / (2 * h), rtol=1e-5, atol=1e-4)


def test_sample_has_requested_moments():
    rng = np.random.default_rng(0)
    el = np.full(200_000, np.log(20.0))
    es = np.full(200_000, np.log(4.0))
    y = FAM.sample(rng, el, es)
    assert abs(y.mean() - 20.0) < 0.1
    assert abs(y.var() - (20.0 + 400.0 / 4.0)) < 2.0


def test_count_terms_evaluate_only_the_derivatives_of_their_order():
    """Order 1 gives value and first derivative (no trigamma); both match scipy's closed forms."""
    from scipy import special

    fam = get_family("nb")
    rng = np.random.default_rng(17)
    y = rng.integers(1, 400, 50).astype(np.float64)
    t = rng.uniform(-3.0, 12.0, 50)
    r = np.exp(t)
    first = fam.count_terms(y, t, 1)
    second = fam.count_terms(y, t, 2)
    assert first.d2_scale is None and second.d2_scale is not None
    np.testing.assert_array_equal(first.ll, second.ll)
    np.testing.assert_array_equal(first.d_scale, second.d_scale)
    # d/dt [lgamma(y + r) - lgamma(r)] = r (digamma(y + r) - digamma(r)), r = e^t; exact
    # where r is small enough for the plain difference not to cancel.
    plain = r < 1e3
    ref = r * (special.digamma(y + r) - special.digamma(r))
    np.testing.assert_allclose(first.d_scale[plain], ref[plain], rtol=1e-10)
    ref_ll = special.gammaln(y + r) - special.gammaln(r)
    np.testing.assert_allclose(first.ll[plain], ref_ll[plain], rtol=1e-10)
