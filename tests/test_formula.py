"""Formula designs: formulaic's column names, errors naming the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.design import build_design
from batchglm.formula import evaluate_formula, nested_pairs

from conftest import seed_example_1


def obs_example_1(n: int) -> pd.DataFrame:
    """The seed's example 1 as annotations: 4 replicates nested in 2 conditions."""
    q = n // 4
    return pd.DataFrame(
        {
            "condition": pd.Categorical(
                np.repeat(["untreated", "treated"], 2 * q), categories=["untreated", "treated"]
            ),
            "replicate": np.repeat(["r1", "r2", "r3", "r4"], q),
            "depth": np.linspace(-1.0, 1.0, n),
        },
        index=[f"cell{i}" for i in range(n)],
    )


@pytest.fixture
def small():
    obs = obs_example_1(40)
    y = np.random.default_rng(0).poisson(5.0, size=(40, 3)).astype(float)
    return y, obs


def test_columns_are_formulaic_names(small):
    _, obs = small
    frame = evaluate_formula("~ 1 + condition + depth", obs, "design_loc")
    assert list(frame.columns) == ["Intercept", "condition[T.treated]", "depth"]
    assert frame.index.equals(obs.index)
    expected = np.column_stack([np.ones(40), obs["condition"] == "treated", obs["depth"]])
    np.testing.assert_array_equal(frame.to_numpy(), expected)


def test_formula_fit_equals_matrix_fit(small):
    y, obs = small
    res = bg.fit(y, "~ 1 + condition", "~ 1 + condition", obs=obs)
    x = pd.DataFrame({"Intercept": 1.0, "treated": (obs["condition"] == "treated") * 1.0})
    ref = bg.fit(y, x.to_numpy(), x.to_numpy())
    assert list(res.coef_loc.columns) == ["Intercept", "condition[T.treated]"]
    assert list(res.coef_scale.columns) == ["Intercept", "condition[T.treated]"]
    np.testing.assert_allclose(res.loglik, ref.loglik, rtol=1e-10)
    np.testing.assert_allclose(res.coef_loc.to_numpy(), ref.coef_loc.to_numpy(), atol=1e-8)
    assert res.loc.formula == "~ 1 + condition"
    assert res.obs is obs


def test_intercept_only_formula_needs_no_obs(small):
    y, _ = small
    res = bg.fit(y, "~ 1", "~ 1")
    assert list(res.coef_loc.columns) == ["Intercept"]


def test_simulate_accepts_formulas(small):
    _, obs = small
    sim = bg.simulate("~ 1 + condition", "~ 1", n_features=4, obs=obs, seed=0)
    assert sim.data.shape == (40, 4)
    assert list(sim.coef_loc.columns) == ["Intercept", "condition[T.treated]"]
    with pytest.raises(ValueError, match=r"`design_loc` is a formula, so `obs`"):
        bg.simulate("~ 1 + condition", n_features=4)


def test_unknown_variables_are_named(small):
    y, obs = small
    with pytest.raises(
        ValueError,
        match=r"not columns of `obs`: \['batch', 'donor'\]; "
        r"`obs` has columns \['condition'",
    ):
        bg.fit(y, "~ 1 + condition + batch + donor", obs=obs)
    with pytest.raises(ValueError, match=r"`design_scale` formula .*\['batch'\]"):
        bg.fit(y, "~ 1", "~ batch", obs=obs)
    with pytest.raises(ValueError, match=r"\['condition'\]; no `obs` was given"):
        bg.fit(y, "~ 1 + condition")


def test_unknown_variable_inside_a_transform(small):
    y, obs = small
    # Stateful transforms hide their variables from formulaic's parser; evaluation names it.
    with pytest.raises(ValueError, match=r"could not be evaluated on `obs`.*'nope' is not"):
        bg.fit(y, "~ center(nope)", obs=obs)


def test_formula_errors(small):
    y, obs = small
    with pytest.raises(ValueError, match=r"must be a one-sided formula"):
        bg.fit(y, "y ~ condition", obs=obs)
    with pytest.raises(ValueError, match=r"`design_loc` could not be parsed as a formula"):
        bg.fit(y, "~ 1 + (condition", obs=obs)
    with pytest.raises(ValueError, match=r"`obs` has 39 rows but `data` has 40"):
        bg.fit(y, "~ condition", obs=obs.iloc[:-1])
    with pytest.raises(ValueError, match=r"`obs` must be a pandas DataFrame"):
        bg.fit(y, "~ condition", obs=obs.to_numpy())
    gaps = obs.copy()
    gaps.loc[gaps.index[3], "depth"] = np.nan
    with pytest.raises(ValueError, match=r"'depth': 1 of 40 .*drop those observations"):
        bg.fit(y, "~ depth", obs=gaps)
    with pytest.raises(ValueError, match=r"`layer` \('counts'\) selects an AnnData layer"):
        bg.fit(y, "~ 1", layer="counts")


def test_confounded_formula_suggests_the_dict_form(small):
    y, obs = small
    with pytest.raises(
        ValueError,
        match=(
            r"stays rank-deficient.*confounded: \['condition\[T.treated\]', 'replicate\[T.r3\]', "
            r"'replicate\[T.r4\]'\].*constraints_loc=\{'replicate': 'condition'\}"
        ),
    ):
        bg.fit(y, "~ 1 + condition + replicate", obs=obs)
    with pytest.raises(ValueError, match=r"constraints_scale=\{'replicate': 'condition'\}"):
        bg.fit(y, "~ 1", "~ 1 + condition + replicate", obs=obs)


def test_confounded_without_nesting_gets_a_generic_hint(small):
    y, obs = small
    twin = obs.assign(twin=obs["depth"] * 2.0)
    with pytest.raises(ValueError, match=r"\['depth', 'twin'\].*'<nested factor>'"):
        bg.fit(y, "~ 1 + depth + twin", obs=twin)


def test_matrix_designs_keep_the_plain_message():
    dmat, _ = seed_example_1(40)
    with pytest.raises(ValueError, match=r"nested in a condition\)\.$"):
        build_design(dmat, None, 40, "loc")


def test_nested_pairs(small):
    _, obs = small
    assert nested_pairs(obs, ["replicate", "condition"], ["condition", "replicate"]) == [
        ("replicate", "condition")
    ]
    assert nested_pairs(obs, ["depth"], ["condition"]) == []
