"""Contrasts written as strings over coefficient names and as ``cond()`` differences."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de.contrasts import parse_expression

# These tests use few replicates on purpose (small designs for contrasts); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

NAMES = ["Intercept", "condition[T.ifn]", "condition[T.stim]", "batch[T.b]", "dose"]


@pytest.fixture(scope="module")
def formula_fit() -> tuple[bg.FitResult, pd.DataFrame]:
    rng = np.random.default_rng(7)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.repeat(["ctrl", "ifn", "stim"], 6)),
            "batch": np.tile(["a", "b"], 9),
            "dose": np.tile([0.0, 0.5, 1.5], 6),
        }
    )
    stim = (obs["condition"] == "stim").to_numpy()
    mu = rng.gamma(2.0, 30.0, size=(1, 12)) * np.exp(0.4 * stim)[:, None]
    y = rng.negative_binomial(4, 4 / (4 + mu))
    res = bg.fit(y, "~ condition + batch + dose", obs=obs)
    return res, obs


def test_parser_weights_by_hand() -> None:
    # 0.5 * (ifn + stim) - 2 * dose / 4, written with unary minus and parentheses.
    w = parse_expression("0.5*(condition[T.ifn] + condition[T.stim]) - 2*dose/4", NAMES)
    np.testing.assert_array_equal(w, [0, 0.5, 0.5, 0, -0.5])
    w = parse_expression("-(condition[T.stim] - condition[T.ifn])", NAMES)
    np.testing.assert_array_equal(w, [0, 1, -1, 0, 0])
    # An equation is its left side minus its right side.
    w = parse_expression("condition[T.stim] = condition[T.ifn]", NAMES)
    np.testing.assert_array_equal(w, [0, -1, 1, 0, 0])
    w = parse_expression("`batch[T.b]` * 3 + 1e-1 * dose", NAMES)
    np.testing.assert_allclose(w, [0, 0, 0, 3, 0.1])


def test_longest_name_wins() -> None:
    names = ["a", "a:b", "ab"]
    np.testing.assert_array_equal(parse_expression("a:b - a", names), [-1, 1, 0])
    np.testing.assert_array_equal(parse_expression("ab-a", names), [-1, 0, 1])


def test_string_contrast_equals_weights(formula_fit) -> None:
    res, _ = formula_fit
    by_string = bg.de.wald(res, contrast="condition[T.stim] - condition[T.ifn]")
    by_weights = bg.de.wald(res, contrast=[0, -1, 1, 0, 0])
    np.testing.assert_allclose(by_string.pval, by_weights.pval, rtol=1e-12)
    np.testing.assert_allclose(by_string.coef_mle, by_weights.coef_mle, rtol=1e-12)
    assert by_string.tested == "condition[T.stim] - condition[T.ifn]"
    # Comma-separated expressions are tested jointly, as a two-row matrix.
    joint = bg.de.wald(res, contrast="condition[T.stim], condition[T.ifn] - dose")
    rows = bg.de.wald(res, contrast=[[0, 0, 1, 0, 0], [0, 1, 0, 0, -1]])
    assert joint.df == 2
    np.testing.assert_allclose(joint.pval, rows.pval, rtol=1e-12)


def test_cond_matches_level_tuple_and_slope(formula_fit) -> None:
    res, _ = formula_fit
    cond = bg.de.cond
    by_cond = bg.de.wald(res, contrast=cond(condition="stim") - cond(condition="ifn"))
    by_tuple = bg.de.wald(res, contrast=("condition", "stim", "ifn"))
    np.testing.assert_allclose(by_cond.pval, by_tuple.pval, rtol=1e-12)
    np.testing.assert_allclose(
        by_cond.coef_mle,
        res.coef_loc["condition[T.stim]"] - res.coef_loc["condition[T.ifn]"],
        rtol=1e-12,
        atol=1e-14,
    )
    # Fixing another variable on both sides changes nothing without interactions.
    fixed = bg.de.wald(
        res, contrast=cond(condition="stim", batch="b") - cond(condition="ctrl", batch="b")
    )
    np.testing.assert_allclose(fixed.coef_mle, res.coef_loc["condition[T.stim]"], rtol=1e-12)
    # A numeric variable: the exact formula weights give dose 1.5 vs 0 = 1.5 * slope.
    slope = bg.de.wald(res, contrast=cond(dose=1.5) - cond(dose=0))
    np.testing.assert_allclose(slope.coef_mle, 1.5 * res.coef_loc["dose"], rtol=1e-12)
    # Average of two levels against the reference, with numbers and division.
    avg = bg.de.wald(
        res,
        contrast=(cond(condition="stim") + cond(condition="ifn")) / 2 - 1 * cond(condition="ctrl"),
    )
    want = 0.5 * (res.coef_loc["condition[T.stim]"] + res.coef_loc["condition[T.ifn]"])
    np.testing.assert_allclose(avg.coef_mle, want, rtol=1e-12)


def test_cond_with_interaction_needs_the_other_variable() -> None:
    rng = np.random.default_rng(3)
    obs = pd.DataFrame(
        {"condition": np.repeat(["ctrl", "stim"], 8), "batch": np.tile(["a", "a", "b", "b"], 4)}
    )
    y = rng.poisson(20, size=(16, 5))
    res = bg.fit(y, "~ condition * batch", obs=obs)
    cond = bg.de.cond
    with pytest.raises(ValueError, match="depends on variables it does not fix"):
        bg.de.wald(res, contrast=cond(condition="stim") - cond(condition="ctrl"))
    in_b = bg.de.wald(
        res, contrast=cond(condition="stim", batch="b") - cond(condition="ctrl", batch="b")
    )
    want = res.coef_loc["condition[T.stim]"] + res.coef_loc["condition[T.stim]:batch[T.b]"]
    np.testing.assert_allclose(in_b.coef_mle, want, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("condition[T.foo] - dose", r"names 'condition\[T.foo\]', which is not a coefficient"),
        ("`nope` - dose", r"names 'nope', which is not a coefficient"),
        ("dose *", "unexpected end of the expression"),
        ("dose * dose", "a product of two coefficients is not linear"),
        ("1 / dose", "division by a coefficient is not linear"),
        ("dose / 0", "division by zero"),
        ("(dose", r"missing '\)'"),
        ("dose + 1", "has a constant term 1"),
        ("dose = 2", "has a constant term -2"),
        ("dose - dose", "gives all-zero weights"),
        ("dose )", r"unexpected '\)'"),
        ("dose,", "has an empty expression"),
        ("`dose", "missing closing '`'"),
    ],
)
def test_expression_errors(formula_fit, text: str, match: str) -> None:
    res, _ = formula_fit
    with pytest.raises(ValueError, match=match):
        bg.de.wald(res, contrast=text)


def test_cond_errors(formula_fit) -> None:
    res, _ = formula_fit
    cond = bg.de.cond
    with pytest.raises(ValueError, match="needs at least one variable"):
        cond()
    with pytest.raises(ValueError, match="'donor', which is not a column"):
        bg.de.wald(res, contrast=cond(donor="d1") - cond(donor="d2"))
    with pytest.raises(ValueError, match=r"'condition' to 'IFN', which is not one of its levels"):
        bg.de.wald(res, contrast=cond(condition="IFN") - cond(condition="ctrl"))
    with pytest.raises(ValueError, match="sets the numeric column 'dose' to 'high'"):
        bg.de.wald(res, contrast=cond(dose="high") - cond(dose=0))
    with pytest.raises(ValueError, match="gives all-zero weights"):
        bg.de.wald(res, contrast=cond(condition="stim") - cond(condition="stim"))
    y = np.random.default_rng(0).poisson(10, size=(len(res.obs_names), 3))
    matrix_fit = bg.fit(y, res.design_loc.to_numpy())
    with pytest.raises(ValueError, match="uses cond\\(\\), which needs a fit from a formula"):
        bg.de.wald(matrix_fit, contrast=cond(condition="stim") - cond(condition="ctrl"))


def test_cond_arithmetic_rejects_non_numbers() -> None:
    c = bg.de.cond(condition="stim")
    with pytest.raises(TypeError):
        c * "2"  # type: ignore[operator]
    with pytest.raises(TypeError):
        c + 1  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert str(-c) == "-1*cond(condition='stim')"


def test_cond_refuses_recoded_columns_of_named_constraints() -> None:
    rng = np.random.default_rng(4)
    obs = pd.DataFrame(
        {
            "condition": np.repeat(["ctrl", "stim"], 12),
            "replicate": np.repeat([f"r{k}" for k in range(1, 7)], 4),
        }
    )
    y = rng.poisson(15, size=(24, 4))
    res = bg.fit(
        y, "~ 1 + condition + replicate", obs=obs, constraints_loc={"replicate": "condition"}
    )
    with pytest.raises(ValueError, match="named constraints recode them"):
        bg.de.wald(res, contrast=bg.de.cond(condition="stim") - bg.de.cond(condition="ctrl"))
    # A string over the (recoded) coefficient names still works.
    with pytest.warns(UserWarning, match=r"`condition\[T.stim\]` is constant within the levels"):
        de = bg.de.wald(res, contrast="condition[T.stim]")
    np.testing.assert_allclose(de.coef_mle, res.coef_loc["condition[T.stim]"], rtol=1e-12)
