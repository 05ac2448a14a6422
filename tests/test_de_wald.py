"""Wald tests: single coefficients, joint tests, contrasts, constraints, scale model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from nb_reference import nb_counts
from table_columns import RESULTS_COLUMNS

from conftest import seed_example_1


@pytest.fixture(scope="module")
def two_by_two():
    """Intercept + condition + batch, location and scale; a few true effects."""
    rng = np.random.default_rng(1)
    n, f = 120, 60
    cond = np.tile([0.0, 1.0], n // 2)
    batch = np.repeat([0.0, 1.0], n // 2)
    x = pd.DataFrame({"Intercept": 1.0, "cond": cond, "batch": batch})
    a = np.column_stack([rng.uniform(1, 5, f), rng.normal(0, 0.7, f), rng.normal(0, 0.3, f)])
    mu = np.exp(x.to_numpy() @ a.T)
    y = nb_counts(rng, mu, rng.uniform(2, 10, f))
    y[:, 0] = 0.0  # an all-zero feature
    res = bg.fit(y, x, x)
    return y, x, res


def test_single_coefficient_is_z_squared(two_by_two):
    _, _, res = two_by_two
    de = bg.de.wald(res, coef="cond")
    z = res.coef_loc["cond"] / res.se_loc["cond"]
    ok = res.converged.to_numpy()
    np.testing.assert_allclose(de.stat[ok], (z**2)[ok], rtol=1e-10)
    np.testing.assert_allclose(de.pval[ok], 2 * stats.norm.sf(np.abs(z[ok])), rtol=1e-8)
    np.testing.assert_allclose(de.coef_mle, res.coef_loc["cond"])
    np.testing.assert_allclose(de.coef_se[ok], res.se_loc["cond"][ok], rtol=1e-10)
    zero = (res.status == "all_zero").to_numpy()  # no fold change (NA, as DESeq2)
    assert np.isnan(de.log2fc[zero]).all()
    np.testing.assert_allclose(de.log2fc[~zero], (res.coef_loc["cond"] / np.log(2))[~zero])
    assert de.df == 1 and de.model == "loc" and de.effect_model == "loc"
    by_index = bg.de.wald(res, coef=1)
    by_negative = bg.de.wald(res, coef=-2)
    np.testing.assert_array_equal(by_index.pval, de.pval)
    np.testing.assert_array_equal(by_negative.pval, de.pval)


def test_untested_features_are_nan_and_left_out_of_bh(two_by_two):
    _, _, res = two_by_two
    de = bg.de.wald(res, coef="cond")
    assert res.status.iloc[0] == "all_zero"
    assert np.isnan(de.pval[0]) and np.isnan(de.qval[0]) and not de.converged[0]
    ok = np.isfinite(de.pval)
    assert ok.sum() == len(ok) - 1
    np.testing.assert_allclose(de.qval[ok], stats.false_discovery_control(de.pval[ok]))


def test_summary_columns(two_by_two):
    _, _, res = two_by_two
    tab = bg.de.wald(res, coef="cond").summary(sort_by=None)
    assert list(tab.columns) == [
        *RESULTS_COLUMNS,
        "stat_kind",
        "lfc_capped",
        "coef_mle",
        "coef_se",
        "loglik",
        "converged",
    ]
    assert len(tab) == 60
    assert tab.index.name == "feature" and tab.index.tolist() == list(res.feature_names)
    np.testing.assert_allclose(tab["loglik"], res.loglik)
    # The mean is the fitted mean without size factors; close to the data mean here.
    y = two_by_two[0]
    np.testing.assert_allclose(tab["baseMean"][1:], y.mean(axis=0)[1:], rtol=0.2)


def test_joint_test_equals_quadratic_form(two_by_two):
    _, _, res = two_by_two
    de = bg.de.wald(res, coef=["cond", "batch"])
    assert de.df == 2 and np.isnan(de.coef_mle).all() and de.effect_model is None
    assert list(de.estimates.columns) == ["cond", "batch"]
    for f in range(1, 6):
        cov = res.covariance(f).loc["loc"].loc[["cond", "batch"], ["loc"]]
        v = res.covariance()[f][1:3, 1:3]
        e = res.coef_loc.iloc[f][["cond", "batch"]].to_numpy()
        assert de.stat[f] == pytest.approx(e @ np.linalg.solve(v, e), rel=1e-10)
        assert cov.shape == (2, 3)
    np.testing.assert_allclose(de.pval[1:], stats.chi2.sf(de.stat[1:], 2))


def test_contrast_forms_agree(two_by_two):
    _, x, res = two_by_two
    ref = bg.de.wald(res, coef="cond")
    for contrast in (
        [0, 1, 0],
        np.array([[0.0, 1.0, 0.0]]),
        {"cond": 1.0},
        pd.Series({"cond": 1.0, "Intercept": 0.0}),
        pd.DataFrame([[1.0]], columns=["cond"]),
    ):
        de = bg.de.wald(res, contrast=contrast)
        np.testing.assert_allclose(de.pval, ref.pval, rtol=1e-12, equal_nan=True)
    diff = bg.de.wald(res, contrast={"cond": 1.0, "batch": -1.0})
    e = res.coef_loc["cond"] - res.coef_loc["batch"]
    cov = res.covariance()
    var = cov[:, 1, 1] + cov[:, 2, 2] - 2 * cov[:, 1, 2]
    np.testing.assert_allclose(diff.coef_mle, e)
    np.testing.assert_allclose(diff.stat[1:], (e**2 / var)[1:], rtol=1e-10)
    assert diff.tested == "+1*cond -1*batch"
    joint = bg.de.wald(res, contrast=np.array([[0, 1, 0], [0, 0, 1]]))
    np.testing.assert_allclose(joint.stat, bg.de.wald(res, coef=[1, 2]).stat, rtol=1e-12)


def test_scale_model_wald(two_by_two):
    _, _, res = two_by_two
    de = bg.de.wald(res, coef="cond", model="scale")
    ok = res.converged.to_numpy() & (res.status == "converged").to_numpy()
    z = (res.coef_scale["cond"] / res.se_scale["cond"]).to_numpy()
    np.testing.assert_allclose(de.stat[ok], (z**2)[ok], rtol=1e-10)
    assert de.model == "scale" and de.effect_model == "scale"


def test_constraints_reduce_the_degrees_of_freedom():
    # Seed example 1: p3 + p4 = 0 and p1 + p2 + p3 + p4 = 0, hence p1 + p2 = 0 as well.
    dmat, cons = seed_example_1(400)
    sim = bg.simulate(dmat, n_features=20, constraints_loc=cons, seed=3)
    res = bg.fit(sim.data, dmat, constraints_loc=cons)
    joint = bg.de.wald(res, coef=["p1", "p2"])
    single = bg.de.wald(res, coef="p1")
    assert joint.df == 1
    np.testing.assert_allclose(joint.stat, single.stat, rtol=1e-8)
    # The Moore-Penrose form on the singular full covariance gives the same statistic.
    cov = res.covariance()[:, 1:3, 1:3]
    est = res.coef_loc[["p1", "p2"]].to_numpy()
    mp = np.einsum("fi,fij,fj->f", est, np.linalg.pinv(cov, hermitian=True), est)
    np.testing.assert_allclose(joint.stat, mp, rtol=1e-6)
    # Three replicate effects and the condition: rank 3 of 4 rows under the constraints.
    four = bg.de.wald(res, coef=["p1", "p2", "p3", "p5"])
    assert four.df == 3
    with pytest.raises(ValueError, match=r"identically zero under the constraints"):
        bg.de.wald(res, contrast={"p1": 1.0, "p2": 1.0})


def test_level_contrast_needs_a_formula_fit(two_by_two):
    _, _, res = two_by_two
    with pytest.raises(ValueError, match=r"needs a fit from a formula.*matrix design"):
        bg.de.wald(res, contrast=("condition", "treated", "control"))
    with pytest.raises(ValueError, match=r"only available for `model='loc'`"):
        bg.de.wald(res, contrast=("condition", "treated", "control"), model="scale")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"pass exactly one of `coef` and `contrast`"),
        ({"coef": "cond", "contrast": [0, 1, 0]}, r"pass exactly one of `coef` and `contrast`"),
        ({"coef": "nope"}, r"coefficient 'nope' is not in the loc model; its coefficients are"),
        ({"coef": 3}, r"position 3 is out of range for the loc model with 3 coefficients"),
        ({"coef": 1.5}, r"`coef` must be a coefficient name, a position"),
        ({"coef": []}, r"`coef` must name at least one coefficient"),
        ({"coef": ["cond", 1]}, r"names a coefficient more than once"),
        ({"contrast": [0, 1]}, r"must have 3 weights per row .* shape is \(2,\)"),
        ({"contrast": {"cnd": 1}}, r"names coefficients \['cnd'\] that are not in the loc"),
        ({"contrast": pd.DataFrame({"x": [1.0]})}, r"names coefficients \['x'\] that are"),
        ({"contrast": ["a", "b", "c"]}, r"`contrast` must be numeric weights"),
        ({"contrast": [0, np.nan, 1]}, r"at least one row of finite weights"),
        ({"contrast": [0, 0, 0]}, r"identically zero"),
        ({"coef": "cond", "model": "dispersion"}, r"`model` must be 'loc' or 'scale'"),
    ],
)
def test_wald_errors(two_by_two, kwargs, match):
    _, _, res = two_by_two
    with pytest.raises(ValueError, match=match):
        bg.de.wald(res, **kwargs)


def test_scale_wald_needs_a_scale_model(two_by_two):
    from batchglm.families import get_family

    try:
        get_family("poisson")
    except ValueError:
        pytest.skip("no family without a scale model is registered yet")
    y, x, _ = two_by_two
    res = bg.fit(y, x, family="poisson")
    with pytest.raises(ValueError, match=r"needs a fit with a scale model"):
        bg.de.wald(res, coef="cond", model="scale")


def test_significant_and_repr(two_by_two):
    _, _, res = two_by_two
    de = bg.de.wald(res, coef="cond")
    sig = de.significant(0.05)
    assert set(sig) == set(res.feature_names[de.qval < 0.05])
    assert "DEResult(test='wald'" in repr(de)
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(0, 1\)"):
        de.significant(1.5)


def test_bh_qvalues_errors():
    with pytest.raises(ValueError, match=r"`pvals` must be 1-D"):
        bg.de.bh_qvalues(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        bg.de.bh_qvalues([0.1, 1.2])
    q = bg.de.bh_qvalues([0.01, np.nan, 0.04])
    np.testing.assert_allclose(q, [0.02, np.nan, 0.04])


@pytest.fixture(scope="module")
def formula_fits():
    rng = np.random.default_rng(8)
    n = 60
    obs = pd.DataFrame(
        {
            "condition": np.repeat(["A", "B", "C"], n // 3),
            "rep": np.tile(["r1", "r2"], n // 2),
        }
    )
    obs["replicate"] = obs["condition"] + obs["rep"]
    mu = np.exp(rng.uniform(1, 3, 12))[None, :] * np.where(
        obs["condition"].to_numpy()[:, None] == "B", 2.0, 1.0
    )
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(float)
    plain = bg.fit(y, "~ 1 + condition", obs=obs)
    nested = bg.fit(
        y, "~ 1 + condition + replicate", obs=obs, constraints_loc={"replicate": "condition"}
    )
    crossed = bg.fit(y, "~ 1 + condition * rep", obs=obs)
    return plain, nested, crossed


def test_level_contrast_from_formula(formula_fits):
    plain, nested, _ = formula_fits
    de = bg.de.wald(plain, contrast=("condition", "B", "C"))
    ref = bg.de.wald(plain, contrast={"condition[T.B]": 1.0, "condition[T.C]": -1.0})
    np.testing.assert_allclose(de.stat, ref.stat, rtol=1e-12)
    np.testing.assert_allclose(
        de.coef_mle, plain.coef_loc["condition[T.B]"] - plain.coef_loc["condition[T.C]"]
    )
    assert de.tested == "condition: B vs C"
    vs_reference = bg.de.wald(plain, contrast=("condition", "B", "A"))
    np.testing.assert_allclose(vs_reference.stat, bg.de.wald(plain, coef="condition[T.B]").stat)
    # With replicates nested in conditions (named constraints) the condition contrast is
    # still the treatment coefficient, and replicates of one condition can be compared.
    with pytest.warns(UserWarning, match="`condition: B vs A` is constant within the levels"):
        de_n = bg.de.wald(nested, contrast=("condition", "B", "A"))
    np.testing.assert_allclose(de_n.coef_mle, nested.coef_loc["condition[T.B]"])
    reps = bg.de.wald(nested, contrast=("replicate", "Br1", "Br2"))
    np.testing.assert_allclose(
        reps.coef_mle, nested.coef_loc["replicate[Br1]"] - nested.coef_loc["replicate[Br2]"]
    )
    assert reps.df == 1


@pytest.mark.parametrize(
    ("which", "contrast", "match"),
    [
        (0, ("cond", "B", "A"), r"'cond' is not a column of the fit's `obs`; its columns"),
        (0, ("condition", "D", "A"), r"'D' is not a level of 'condition'; its levels are"),
        (0, ("condition", "A", "A"), r"`level` and `reference` must differ"),
        (2, ("condition", "B", "A"), r"depends on other variables .* interacts"),
    ],
)
def test_level_contrast_errors(formula_fits, which, contrast, match):
    with pytest.raises(ValueError, match=match):
        bg.de.wald(formula_fits[which], contrast=contrast)
