"""Named constraints (nested-factor dicts, equations) give the same fits as matrices."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm.design import build_design
from batchglm.named_constraints import null_space

from conftest import seed_example_1, seed_example_2

REPS = ["replicate[r1]", "replicate[r2]", "replicate[r3]", "replicate[r4]"]


def obs_example_1(n: int) -> pd.DataFrame:
    """The seed's example 1 as annotations: 4 replicates nested in 2 conditions."""
    q = n // 4
    return pd.DataFrame(
        {
            "condition": pd.Categorical(
                np.repeat(["untreated", "treated"], 2 * q), categories=["untreated", "treated"]
            ),
            "replicate": np.repeat(["r1", "r2", "r3", "r4"], q),
        },
        index=[f"cell{i}" for i in range(n)],
    )


def obs_example_2(n: int) -> pd.DataFrame:
    """The seed's example 2: technical replicates split from treated-untreated pairs."""
    block = np.arange(n) // (n // 8)
    bio = np.array(["b1", "b1", "b2", "b2", "b3", "b3", "b4", "b4"])[block]
    return pd.DataFrame(
        {
            "condition": pd.Categorical(
                np.where(block >= 4, "treated", "untreated"), categories=["untreated", "treated"]
            ),
            "bio": bio,
            "tech": np.array(["t1", "t2", "t3", "t4"])[block % 4],
            "pair": np.where(np.isin(bio, ["b1", "b3"]), "A", "B"),
        }
    )


def same_space(c1: np.ndarray, c2: np.ndarray) -> bool:
    proj = [c @ np.linalg.pinv(c) for c in (c1, c2)]
    return bool(np.allclose(proj[0], proj[1], atol=1e-12))


@pytest.fixture(scope="module")
def example_1_fits():
    n = 400
    dmat, cons = seed_example_1(n)
    sim = bg.simulate(
        dmat, dmat, n_features=12, constraints_loc=cons, constraints_scale=cons, seed=3
    )
    ref = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    adata = ad.AnnData(
        X=np.zeros_like(sim.data),
        obs=obs_example_1(n),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(12)]),
    )
    adata.layers["counts"] = sp.csr_matrix(sim.data)
    spec = {"replicate": "condition"}
    res = bg.fit(
        adata,
        "~ 1 + condition + replicate",
        "~ 1 + condition + replicate",
        layer="counts",
        constraints_loc=spec,
        constraints_scale=spec,
    )
    return ref, res


def test_dict_on_sparse_anndata_equals_seed_matrices(example_1_fits):
    ref, res = example_1_fits
    names = ["Intercept", "condition[T.treated]", *REPS]
    assert list(res.coef_loc.columns) == names
    assert list(res.coef_scale.columns) == names
    assert list(res.loglik.index) == [f"gene{j}" for j in range(12)]
    assert res.converged.all()
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-8)
    # The seed's columns are Intercept, bio1..bio4, treated.
    order = [0, 5, 1, 2, 3, 4]
    for mine, seed in ((res.coef_loc, ref.coef_loc), (res.coef_scale, ref.coef_scale)):
        # Different parametrisations stop at slightly different points of a flat optimum.
        np.testing.assert_allclose(mine.to_numpy(), seed.to_numpy()[:, order], atol=1e-4)
    np.testing.assert_allclose(res.se_loc.to_numpy(), ref.se_loc.to_numpy()[:, order], rtol=1e-4)
    # Replicates sum to zero within each condition.
    coef = res.coef_loc
    np.testing.assert_allclose(coef[REPS[0]] + coef[REPS[1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(coef[REPS[2]] + coef[REPS[3]], 0.0, atol=1e-12)
    assert same_space(res.loc.constraints, ref.loc.constraints[[0, 5, 1, 2, 3, 4]])


def test_example_2_without_a_matrix_row():
    n = 400
    dmat, cons = seed_example_2(n)
    obs = obs_example_2(n)
    sim = bg.simulate(
        dmat, dmat, n_features=8, constraints_loc=cons, constraints_scale=cons, seed=5
    )
    ref = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    spec = {"bio": "condition", "tech": "pair"}
    formula = "~ 1 + condition + bio + tech"
    res = bg.fit(sim.data, formula, formula, obs=obs, constraints_loc=spec, constraints_scale=spec)
    assert list(res.coef_loc.columns) == [
        "Intercept",
        "condition[T.treated]",
        "bio[b1]",
        "bio[b2]",
        "bio[b3]",
        "bio[b4]",
        "tech[t1]",
        "tech[t2]",
        "tech[t3]",
        "tech[t4]",
    ]
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(res.coef_loc["condition[T.treated]"], ref.coef_loc["p9"], atol=1e-4)


def test_equations_give_the_dict_constraints():
    obs = obs_example_1(40)
    by_dict = build_design(
        "~ 1 + condition + replicate", {"replicate": "condition"}, 40, "loc", obs=obs
    )
    frame = by_dict.frame()
    equations = ["replicate[r1] + replicate[r2] = 0", "replicate[r3] + replicate[r4] = 0"]
    by_strings = build_design(frame, equations, 40, "loc")
    np.testing.assert_array_equal(by_strings.constraints, by_dict.constraints)
    assert by_strings.constraint_spec == equations
    one = build_design(frame, ", ".join(equations), 40, "loc")
    np.testing.assert_array_equal(one.constraints, by_dict.constraints)


def test_equations_fit_equals_seed_rows():
    n = 200
    dmat, cons = seed_example_1(n)
    names = ["Intercept", "bio1", "bio2", "bio3", "bio4", "treated"]
    frame = pd.DataFrame(dmat, columns=names)
    y = bg.simulate(dmat, n_features=5, constraints_loc=cons, seed=1).data
    ref = bg.fit(y, dmat, constraints_loc=cons)
    res = bg.fit(y, frame, constraints_loc=["bio1 + bio2 = 0", "bio3 + bio4 = 0"])
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(res.coef_loc.to_numpy(), ref.coef_loc.to_numpy(), atol=1e-8)


def test_grouping_one_sums_all_levels():
    obs = obs_example_1(40)
    d = build_design("~ 0 + replicate", {"replicate": "1"}, 40, "loc", obs=obs, check=False)
    assert d.names == REPS
    np.testing.assert_allclose(d.constraints.sum(axis=0), 0.0)
    assert d.n_free == 3


def test_numeric_factor_levels_are_categories():
    obs = obs_example_1(40).assign(replicate=np.repeat([1, 2, 3, 4], 10))
    d = build_design("~ 1 + condition + replicate", {"replicate": "condition"}, 40, "loc", obs=obs)
    assert d.names[2:] == ["replicate[1]", "replicate[2]", "replicate[3]", "replicate[4]"]
    wrapped = build_design(
        "~ 1 + condition + C(replicate)", {"replicate": "condition"}, 40, "loc", obs=obs
    )
    assert wrapped.names == d.names


def test_null_space_drops_redundant_rows():
    r = np.array([[0.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    c = null_space(r, ["a", "b", "c"], "constraints_loc")
    assert c.shape == (3, 2)
    np.testing.assert_allclose(r @ c, 0.0)


def test_dict_errors():
    obs = obs_example_1(40)
    f = "~ 1 + condition + replicate"
    with pytest.raises(ValueError, match=r"'replicate' is not nested in 'batch': level 'r1'"):
        build_design(
            f, {"replicate": "batch"}, 40, "loc", obs=obs.assign(batch=np.tile(["x", "y"], 20))
        )
    with pytest.raises(ValueError, match=r"names grouping 'donor', which is not a column"):
        build_design(f, {"replicate": "donor"}, 40, "loc", obs=obs)
    with pytest.raises(
        ValueError,
        match=r"constrains \['replicate'\], but the formula "
        r"'~ 1 \+ condition' .* has no such term",
    ):
        build_design("~ 1 + condition", {"replicate": "condition"}, 40, "loc", obs=obs)
    with pytest.raises(ValueError, match=r"needs a formula `design_loc`"):
        build_design(np.ones((40, 1)), {"replicate": "condition"}, 40, "loc", obs=obs)
    with pytest.raises(ValueError, match=r"must map factor names to grouping names"):
        build_design(f, {"replicate": 1}, 40, "loc", obs=obs)
    with pytest.raises(ValueError, match=r"is an empty dict"):
        build_design(f, {}, 40, "loc", obs=obs)
    gaps = obs.astype({"replicate": object})
    gaps.loc[gaps.index[0], "replicate"] = None
    with pytest.raises(ValueError, match=r"the factor 'replicate' has 1 missing values"):
        build_design(f, {"replicate": "condition"}, 40, "loc", obs=gaps)
    with pytest.raises(ValueError, match=r"adds columns \['replicate\[r1\]'"):
        build_design(
            "~ 1 + `replicate[r1]` + replicate",
            {"replicate": "condition"},
            40,
            "loc",
            obs=obs.assign(**{"replicate[r1]": 1.0}),
            check=False,
        )


def test_dict_through_fit_errors():
    obs = obs_example_1(40)
    y = np.ones((40, 2))
    with pytest.raises(ValueError, match=r"`constraints_scale` names nested factors"):
        bg.fit(y, "~ 1", np.ones((40, 1)), obs=obs, constraints_scale={"replicate": "condition"})


def test_equation_errors():
    frame = pd.DataFrame(np.eye(4)[np.arange(40) % 4], columns=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"uses the name 'e', which is not a coefficient"):
        build_design(frame, ["a + e = 0"], 40, "loc")
    with pytest.raises(ValueError, match=r"must have a zero right-hand side.*1.0"):
        build_design(frame, ["a + b = 1"], 40, "loc")
    with pytest.raises(ValueError, match=r"`constraints_scale` could not be parsed"):
        build_design(frame, ["a + = 0"], 40, "scale")
    with pytest.raises(ValueError, match=r"leaves no free parameter"):
        build_design(frame, ["a = 0", "b = 0", "c = 0", "d = 0"], 40, "loc")
    with pytest.raises(ValueError, match=r"rank-deficient"):
        build_design(pd.concat([frame, frame["a"].rename("e")], axis=1), ["b = c"], 40, "loc")


# --- Equations naming every level of a factor whose formula coding drops a reference ---

LEVELS6 = [f"replicate[s{k}]" for k in range(1, 7)]
SUM_TO_ZERO6 = [
    "replicate[s1] + replicate[s2] + replicate[s3] = 0",
    "replicate[s4] + replicate[s5] + replicate[s6] = 0",
]


def obs_three_per_condition(per_rep: int) -> pd.DataFrame:
    """2 conditions x 3 replicates each (replicates s1..s6 nested in the condition)."""
    rep = np.repeat([f"s{k}" for k in range(1, 7)], per_rep)
    return pd.DataFrame(
        {"condition": np.where(np.isin(rep, ["s1", "s2", "s3"]), "ctrl", "stim"), "replicate": rep},
        index=[f"obs{i}" for i in range(rep.size)],
    )


@pytest.fixture(scope="module")
def three_per_condition():
    per_rep, n_genes = 30, 6
    obs = obs_three_per_condition(per_rep)
    rng = np.random.default_rng(11)
    rep_effect = np.array([0.3, -0.1, -0.2, 0.25, 0.05, -0.3])[:, None]
    log_mu = 1.5 + rng.normal(0.0, 0.5, n_genes) + rep_effect
    log_mu[3:] += rng.normal(0.0, 0.7, n_genes)
    mu = np.repeat(np.exp(log_mu), per_rep, axis=0)
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(float)
    return y, obs


def test_equations_over_all_levels_code_every_level(three_per_condition):
    y, obs = three_per_condition
    f = "~ 1 + condition + replicate"
    by_eq = bg.fit(y, f, f, obs=obs, constraints_loc=SUM_TO_ZERO6, constraints_scale=SUM_TO_ZERO6)
    by_dict = bg.fit(
        y,
        f,
        f,
        obs=obs,
        constraints_loc={"replicate": "condition"},
        constraints_scale={"replicate": "condition"},
    )
    names = ["Intercept", "condition[T.stim]", *LEVELS6]
    assert list(by_eq.coef_loc.columns) == names
    assert list(by_eq.coef_scale.columns) == names
    assert by_eq.converged.all()
    np.testing.assert_array_equal(by_eq.loc.constraints, by_dict.loc.constraints)
    np.testing.assert_allclose(by_eq.loglik.to_numpy(), by_dict.loglik.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(by_eq.coef_loc.to_numpy(), by_dict.coef_loc.to_numpy(), atol=1e-10)
    np.testing.assert_allclose(by_eq.se_loc.to_numpy(), by_dict.se_loc.to_numpy(), rtol=1e-8)
    # A hand-built matrix over the same columns: the same model, however it is written.
    c = np.zeros((8, 6))
    c[[0, 1, 2, 3, 5, 6], np.arange(6)] = 1.0
    c[4, 2:4] = -1.0  # s3 = -(s1 + s2)
    c[7, 4:6] = -1.0  # s6 = -(s4 + s5)
    by_hand = bg.fit(
        y, by_eq.loc.frame(), by_eq.scale.frame(), constraints_loc=c, constraints_scale=c
    )
    np.testing.assert_allclose(by_hand.loglik.to_numpy(), by_eq.loglik.to_numpy(), rtol=1e-9)


def test_equations_over_all_levels_match_closed_form(three_per_condition):
    """Replicates nested in the condition: the location optimum is each replicate's mean.

    With one scale per condition, the negative binomial mean of a replicate group is its
    sample mean at the optimum, whatever the dispersion; under sum-to-zero replicates the
    condition effect is the mean over stimulated replicates of log(mean) minus that over
    control replicates, and the log-likelihood equals the fit with one mean per replicate.
    """
    y, obs = three_per_condition
    res = bg.fit(
        y, "~ 1 + condition + replicate", "~ 1 + condition", obs=obs, constraints_loc=SUM_TO_ZERO6
    )
    log_means = np.log(pd.DataFrame(y).groupby(obs["replicate"].to_numpy()).mean().to_numpy())
    effect = log_means[3:].mean(axis=0) - log_means[:3].mean(axis=0)
    np.testing.assert_allclose(res.coef_loc["condition[T.stim]"], effect, atol=1e-7)
    np.testing.assert_allclose(res.coef_loc["Intercept"], log_means[:3].mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(
        res.coef_loc[LEVELS6].to_numpy(),
        (log_means - np.repeat(log_means.reshape(2, 3, -1).mean(axis=1), 3, axis=0)).T,
        atol=1e-7,
    )
    per_rep = bg.fit(y, "~ 0 + replicate", "~ 1 + condition", obs=obs)
    np.testing.assert_allclose(res.loglik.to_numpy(), per_rep.loglik.to_numpy(), rtol=1e-10)


def test_equations_with_formula_coefficients_are_unchanged():
    obs = obs_three_per_condition(4)
    d = build_design(
        "~ 1 + condition + replicate",
        ["replicate[T.s2] = replicate[T.s3]"],
        24,
        "loc",
        obs=obs,
        check=False,
    )
    assert d.names[2] == "replicate[T.s2]"
    assert d.n_free == len(d.names) - 1
    # A formula that already codes every level keeps its own columns.
    full = build_design(
        "~ 0 + replicate", ["replicate[s1] + replicate[s2] = 0"], 24, "loc", obs=obs, check=False
    )
    assert full.names == LEVELS6


def test_equations_over_all_levels_errors():
    obs = obs_three_per_condition(4)
    f = "~ 1 + condition + replicate"
    with pytest.raises(
        ValueError,
        match=r"uses replicate\[s1\], but 'replicate' is not a term "
        r"of the formula '~ 1 \+ condition'.*add 'replicate'",
    ):
        build_design("~ 1 + condition", SUM_TO_ZERO6, 24, "loc", obs=obs)
    with pytest.raises(
        ValueError,
        match=r"uses replicate\[s9\], but no observation has level "
        r"'s9' of 'replicate'; its levels are \['s1', 's2'",
    ):
        build_design(f, ["replicate[s1] + replicate[s9] = 0"], 24, "loc", obs=obs)
    # An unused category is no level either: it would be a column of zeros.
    unused = obs.assign(
        replicate=pd.Categorical(
            obs["replicate"], categories=[*(f"s{k}" for k in range(1, 7)), "s7"]
        )
    )
    unused_warning = r"'replicate' used in `design_loc` has categories that no observation has"
    with (
        pytest.warns(bg.formula.AnnotationWarning, match=unused_warning),
        pytest.raises(ValueError, match=r"no observation has level 's7'"),
    ):
        build_design(f, ["replicate[s1] + replicate[s7] = 0"], 24, "loc", obs=unused)
    with pytest.warns(bg.formula.AnnotationWarning, match=unused_warning):
        ok = build_design(f, SUM_TO_ZERO6, 24, "loc", obs=unused)
    assert ok.names[2:] == LEVELS6
    with pytest.raises(ValueError, match=r"uses 'C\(replicate\)\[s1\]'.*so write replicate\[s1\]"):
        build_design("~ 1 + condition + C(replicate)", ["C(replicate)[s1] = 0"], 24, "loc", obs=obs)
    with pytest.raises(
        ValueError,
        match=r"uses 'replicate\[T.s2\]' together with "
        r"replicate\[s1\].*as replicate\[<level>\]",
    ):
        build_design(f, ["replicate[s1] + replicate[T.s2] = 0"], 24, "scale", obs=obs)
    # Coding every level needs a constraint per condition: one is not enough.
    with pytest.raises(
        ValueError,
        match=r"stays rank-deficient after `constraints_loc`.*"
        r"'replicate\[s4\]'",
    ):
        build_design(f, SUM_TO_ZERO6[:1], 24, "loc", obs=obs)
    with pytest.raises(ValueError, match=r"uses the name 'batch\[b1\]', which is not a coef"):
        build_design(f, ["batch[b1] = 0"], 24, "loc", obs=obs)
    with pytest.raises(ValueError, match=r"`constraints_loc` could not be parsed"):
        build_design(f, ["replicate[s1] + = 0"], 24, "loc", obs=obs)
