"""An ``obs`` annotation warning is given once per call of a user-facing function.

A donor-level integer covariate (age) in the full and the reduced model of a
likelihood-ratio test, or in a location and a scale design, used to repeat the same
"make it a factor?" advice for every design built in the call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.formula import AnnotationWarning

AGE = r"`obs` column 'age' in `design_loc` \('~ age \+ c'\) has 4 distinct integer values"


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(11)
    n = 16
    obs = pd.DataFrame(
        {
            "c": ["A"] * 8 + ["B"] * 8,
            "age": np.repeat([31, 45, 52, 60, 38, 47, 55, 62], 2) // 10 * 10,
            "batch": pd.Categorical(["b1"] * n, categories=["b1", "b2"]),
        },
        index=[f"s{i}" for i in range(n)],
    )
    y = rng.negative_binomial(5, 5 / (5 + 20), size=(n, 20))
    return y, obs


def _annotation_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]


def test_lrt_warns_once_for_full_and_reduced_models(table):
    y, obs = table
    assert sorted(obs["age"].unique()) == [30, 40, 50, 60]  # 4 integer codes, repeated
    for call in (
        lambda: bg.de.lrt(y, "~ age + c", "~ age", obs=obs, dispersion="map"),
        lambda: bg.de.test(y, "~ age + c", obs=obs, method="lrt", reduced="~ age"),
        lambda: bg.de.test(y, "~ age + c", obs=obs, coef="c[T.B]", dispersion="map"),
        lambda: bg.fit(y, "~ age + c", design_scale="~ age", obs=obs),
    ):
        given = _annotation_warnings(call)
        assert len(given) == 1, given
        assert "make it a factor" in given[0]
    # Two calls: the advice is given in each (once per call, not once per session).
    with pytest.warns(AnnotationWarning, match=AGE) as first:
        bg.fit(y, "~ age + c", obs=obs)
    with pytest.warns(AnnotationWarning, match=AGE) as second:
        bg.fit(y, "~ age + c", obs=obs)
    assert len(first) == len(second) == 1


def test_unused_levels_are_reported_once_per_call(table):
    y, obs = table
    given = _annotation_warnings(
        lambda: bg.de.lrt(y, "~ batch + c", "~ batch", obs=obs, dispersion="map")
    )
    unused = [m for m in given if "categories that no observation has: ['b2']" in m]
    single = [m for m in given if "has a single level ('b1')" in m]
    assert len(unused) == 1 and len(single) == 1, given


def test_a_user_filter_still_silences_it(table):
    y, obs = table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=AnnotationWarning)
        bg.de.lrt(y, "~ age + c", "~ age", obs=obs, dispersion="map")
    assert not [w for w in caught if issubclass(w.category, AnnotationWarning)]
