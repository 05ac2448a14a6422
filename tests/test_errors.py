"""Every user-facing error says what must hold and what was given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

from conftest import seed_example_1


@pytest.fixture
def small():
    dmat, cons = seed_example_1(40)
    y = np.random.default_rng(0).poisson(5.0, size=(40, 3)).astype(float)
    return y, dmat, cons


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.nan, r"must be finite.*first is nan at observation 2, feature 1"),
        (np.inf, r"must be finite.*inf at observation 2, feature 1"),
        (-1.0, r"needs non-negative counts.*first is -1.0 at observation 2, feature 1"),
        (2.5, r"needs integer counts.*first is 2.5 at observation 2, feature 1"),
    ],
)
def test_bad_values(small, value, match):
    y, dmat, cons = small
    y[2, 1] = value
    with pytest.raises(ValueError, match=match):
        bg.fit(y, dmat, constraints_loc=cons)


def test_data_shapes(small):
    y, dmat, cons = small
    with pytest.raises(ValueError, match=r"`data` must be 2-D .* 1 dimension"):
        bg.fit(y[:, 0], dmat)
    with pytest.raises(ValueError, match=r"at least one observation and one feature"):
        bg.fit(y[:, :0], dmat)
    with pytest.raises(ValueError, match=r"`data` must be 2-D .* 3 dimension"):
        bg.fit(np.zeros((40, 2, 2)), dmat)
    with pytest.raises(ValueError, match=r"`data` must hold numbers only"):
        bg.fit(pd.DataFrame({"a": ["x"] * 40}), dmat)


def test_design_errors(small):
    y, dmat, cons = small
    with pytest.raises(ValueError, match=r"`design_loc` has 39 rows but `data` has 40"):
        bg.fit(y, dmat[:-1])
    with pytest.raises(ValueError, match=r"`design_scale` must be a 2-D matrix"):
        bg.fit(y, dmat, np.ones(40), constraints_loc=cons)
    bad = dmat.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`design_loc` must be finite"):
        bg.fit(y, bad)
    with pytest.raises(ValueError, match=r"at least one column"):
        bg.fit(y, np.ones((40, 0)))
    frame = pd.DataFrame(dmat[:, :2], columns=["a", "a"])
    with pytest.raises(ValueError, match=r"duplicate column names"):
        bg.fit(y, frame)
    with pytest.raises(ValueError, match=r"`design_loc` must hold numbers only"):
        bg.fit(y, pd.DataFrame({"a": ["x"] * 40}))


def test_rank_deficiency_names_the_columns(small):
    y, dmat, cons = small
    names = ["Intercept", "bio1", "bio2", "bio3", "bio4", "treated"]
    frame = pd.DataFrame(dmat, columns=names)
    with pytest.raises(ValueError, match=r"rank-deficient.*\(2 too many\).*'bio1'.*'treated'"):
        bg.fit(y, frame)
    with pytest.raises(ValueError, match=r"`design_scale` stays rank-deficient"):
        bg.fit(y, dmat, dmat, constraints_loc=cons)


def test_constraint_errors(small):
    y, dmat, cons = small
    with pytest.raises(ValueError, match=r"has shape \(2, 5\) but its design has 6 columns"):
        bg.fit(y, dmat, constraints_loc=cons[:, :5])
    with pytest.raises(ValueError, match=r"may only hold -1, 0 and \+1"):
        bg.fit(y, dmat, constraints_loc=cons * 2)
    two = cons.copy()
    two[0, 4] = -1
    with pytest.raises(ValueError, match=r"exactly one dependent parameter.*row 0 has 2"):
        bg.fit(y, dmat, constraints_loc=two)
    shared = cons.copy()
    shared[1] = cons[0]
    with pytest.raises(ValueError, match=r"different dependent \(-1\) parameter"):
        bg.fit(y, dmat, constraints_loc=shared)
    dependent = np.zeros((2, 6))
    dependent[0, [1, 2]] = [-1, 1]
    dependent[1, [2, 1]] = [-1, 1]
    with pytest.raises(ValueError, match=r"not independent"):
        bg.fit(y, dmat, constraints_loc=dependent)
    with pytest.raises(ValueError, match=r"must be a 2-D matrix"):
        bg.fit(y, dmat, constraints_loc=np.ones(6))
    with pytest.raises(ValueError, match=r"must be finite"):
        bg.fit(y, dmat, constraints_loc=np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match=r"must have full column rank 3, but its rank is 1"):
        bg.fit(y, dmat, constraints_loc=np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"more free parameters than the design has columns"):
        bg.fit(y, dmat[:, :2], constraints_loc=np.ones((2, 3)))


def test_size_factor_errors(small):
    y, dmat, cons = small
    with pytest.raises(ValueError, match=r"shape \(40,\), but its shape is \(39,\)"):
        bg.fit(y, dmat, constraints_loc=cons, size_factors=np.ones(39))
    sf = np.ones(40)
    sf[3] = 0
    with pytest.raises(ValueError, match=r"finite and positive.*0.0 at observation 3"):
        bg.fit(y, dmat, constraints_loc=cons, size_factors=sf)


def test_option_errors(small):
    y, dmat, cons = small
    with pytest.raises(ValueError, match=r"`family` must be one of \[.*'nb'.*\], but 'gamma'"):
        bg.fit(y, dmat, constraints_loc=cons, family="gamma")
    with pytest.raises(ValueError, match=r"`max_iter` must be at least 1, but 0"):
        bg.fit(y, dmat, constraints_loc=cons, max_iter=0)
    with pytest.raises(ValueError, match=r"`tol` must be positive"):
        bg.fit(y, dmat, constraints_loc=cons, tol=0.0)
    with pytest.raises(ValueError, match=r"`chunk_size` must be at least 1, but 0"):
        bg.fit(y, dmat, constraints_loc=cons, chunk_size=0)
    with pytest.raises(ValueError, match=r"`n_jobs` must be at least 1, but 0"):
        bg.fit(y, dmat, constraints_loc=cons, n_jobs=0)
    with pytest.raises(ValueError, match=r"`n_features` must be at least 1, but 0"):
        bg.simulate(dmat, n_features=0, constraints_loc=cons)
