"""Likelihood-ratio tests: nesting, ready fits, scale model, agreement with references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from nb_reference import nb_counts

from conftest import seed_example_1
from reference import fit_feature


@pytest.fixture(scope="module")
def data():
    """Two conditions and two batches; location effects on half, scale effects on some."""
    rng = np.random.default_rng(5)
    n, f = 160, 80
    cond = np.tile([0.0, 1.0], n // 2)
    batch = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), cond, batch])
    lfc = np.where(np.arange(f) < f // 2, rng.choice([-1.0, 1.0], f) * 0.8, 0.0)
    log_r = np.log(rng.uniform(2, 10, f))[None, :] + np.outer(
        cond, np.where(np.arange(f) % 4 == 0, np.log(6.0), 0.0)
    )
    mu = np.exp(rng.uniform(1, 4, f)[None, :] + np.outer(cond, lfc) + 0.2 * batch[:, None])
    y = nb_counts(rng, mu, np.exp(log_r))
    return y, x


def test_lrt_is_twice_the_loglik_difference(data):
    y, x = data
    de = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    full = bg.fit(y, x)
    reduced = bg.fit(y, x[:, [0, 2]])
    stat = 2 * (full.loglik - reduced.loglik).to_numpy()
    np.testing.assert_allclose(de.stat, np.maximum(stat, 0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(de.pval, stats.chi2.sf(de.stat, 1))
    assert de.df == 1 and de.model == "loc" and de.test == "lrt"
    # The effect is the full column the reduced design lacks, found by values.
    assert de.effect_model == "loc" and list(de.estimates.columns) == ["p1"]
    np.testing.assert_allclose(de.coef_mle, full.coef_loc["p1"])
    np.testing.assert_allclose(de.coef_se, full.se_loc["p1"])
    np.testing.assert_allclose(de.loglik_reduced, reduced.loglik)
    ready = bg.de.lrt(full=full, reduced=reduced)
    np.testing.assert_allclose(ready.pval, de.pval, rtol=1e-12)


def test_nesting_is_by_column_space(data):
    y, x = data
    cell_means = np.column_stack([1 - x[:, 1], x[:, 1], x[:, 2]])
    a = bg.de.lrt(y, full_loc=cell_means, reduced_loc=x[:, [0, 2]])
    b = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    assert a.df == 1
    np.testing.assert_allclose(a.stat, b.stat, rtol=1e-6, atol=1e-7)
    # Both full columns lie outside the reduced space: no single effect to report.
    assert a.effect_model is None and np.isnan(a.log2fc).all()


def test_wald_and_lrt_agree_in_rank(data):
    y, x = data
    res = bg.fit(y, x)
    wald = bg.de.wald(res, coef="p1")
    lrt = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    rho = stats.spearmanr(wald.pval, lrt.pval).statistic
    assert rho > 0.99


def test_scale_lrt(data):
    y, x = data
    de = bg.de.lrt(y, full_loc=x, full_scale=x[:, :2], reduced_scale=x[:, :1])
    assert de.model == "scale" and de.df == 1 and de.effect_model == "scale"
    full = bg.fit(y, x, x[:, :2])
    np.testing.assert_allclose(de.coef_mle, full.coef_scale["p1"])
    # Features with a 6-fold change of the size r are found much more often than the rest.
    hit = de.pval < 0.01
    truth = np.arange(y.shape[1]) % 4 == 0
    assert hit[truth].mean() > 0.5 and hit[~truth].mean() < 0.1


def test_joint_loc_and_scale_lrt(data):
    y, x = data
    de = bg.de.lrt(
        y, full_loc=x, reduced_loc=x[:, [0, 2]], full_scale=x[:, :2], reduced_scale=x[:, :1]
    )
    assert de.model == "loc+scale" and de.df == 2 and de.effect_model is None
    with pytest.raises(ValueError, match=r"needs a log2 fold change"):
        bg.pl.volcano(de)
    named = bg.de.lrt(
        y,
        full_loc=x,
        reduced_loc=x[:, [0, 2]],
        full_scale=x[:, :2],
        reduced_scale=x[:, :1],
        coef="p1",
    )
    assert named.effect_model == "loc"
    named_scale = bg.de.lrt(
        y,
        full_loc=x,
        full_scale=np.column_stack([x[:, :2], x[:, 2]]),
        reduced_scale=x[:, :1],
        coef="p2",
    )
    assert named_scale.effect_model == "scale" and named_scale.df == 2


def test_lrt_with_constraints():
    dmat, cons = seed_example_1(400)
    sim = bg.simulate(dmat, n_features=20, constraints_loc=cons, seed=11)
    de = bg.de.lrt(
        sim.data,
        full_loc=dmat,
        reduced_loc=dmat[:, :5],
        constraints_full_loc=cons,
        constraints_reduced_loc=cons[:, :5],
    )
    assert de.df == 1
    full = bg.fit(sim.data, dmat, constraints_loc=cons)
    reduced = bg.fit(sim.data, dmat[:, :5], constraints_loc=cons[:, :5])
    np.testing.assert_allclose(de.stat, 2 * (full.loglik - reduced.loglik), rtol=1e-9)
    # The scale test keeps the constrained location model in both fits.
    sc = bg.de.lrt(
        sim.data,
        full_loc=dmat,
        constraints_full_loc=cons,
        full_scale=dmat[:, [0, 5]],
        reduced_scale=dmat[:, [0]],
    )
    assert sc.df == 1 and sc.reduced is not None
    assert sc.reduced.loc.n_free == 4


def test_lrt_matches_independent_reference(data):
    y, x = data
    z_full, z_red = x[:, :2], x[:, :1]
    loc_de = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    # The plain likelihood ratio; the Cox-Reid adjusted default is checked in
    # test_scale_lrt.py.
    scale_de = bg.de.lrt(y, full_loc=x, full_scale=z_full, reduced_scale=z_red, scale_test="plain")
    offset = np.zeros(y.shape[0])
    for j in (0, 3, 4, 41):
        yj = y[:, j]
        icpt = np.log(yj.mean() + 0.1)
        _, ll_full = fit_feature(yj, x, z_red, offset, np.r_[icpt, 0.0, 0.0, 0.0])
        _, ll_red = fit_feature(yj, x[:, [0, 2]], z_red, offset, np.r_[icpt, 0.0, 0.0])
        assert loc_de.stat[j] == pytest.approx(2 * (ll_full - ll_red), abs=1e-5)
        _, ll_full_s = fit_feature(yj, x, z_full, offset, np.r_[icpt, 0.0, 0.0, 0.0, 0.0])
        assert scale_de.stat[j] == pytest.approx(2 * (ll_full_s - ll_full), abs=1e-5)


def test_untested_features(data):
    y, x = data
    y = y.copy()
    y[:, 1] = 0.0
    de = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    assert np.isnan(de.pval[1]) and np.isnan(de.qval[1]) and not de.converged[1]
    ok = np.isfinite(de.pval)
    np.testing.assert_allclose(de.qval[ok], stats.false_discovery_control(de.pval[ok]))


def test_not_nested_errors(data):
    y, x = data
    other = np.column_stack([np.ones(len(y)), np.arange(len(y)) % 3 == 0]).astype(float)
    with pytest.raises(ValueError, match=r"reduced `loc` model is not nested .*\['column 1'\]"):
        bg.de.lrt(y, full_loc=x[:, :2], reduced_loc=other)
    with pytest.raises(ValueError, match=r"reduced `scale` model is not nested"):
        bg.de.lrt(y, full_loc=x, full_scale=x[:, :2], reduced_scale=other)
    # After fitting (ready fits) the same check names the reduced coefficients.
    full = bg.fit(y[:, :3], x[:, :2])
    reduced = bg.fit(y[:, :3], pd.DataFrame({"Intercept": 1.0, "third": other[:, 1]}))
    with pytest.raises(ValueError, match=r"not nested .*\['third'\]"):
        bg.de.lrt(full=full, reduced=reduced)
    recoded = np.column_stack([1 - x[:, 1], x[:, 1:]])
    with pytest.raises(ValueError, match=r"same column spaces .*\(0 degrees of freedom\)"):
        bg.de.lrt(y[:, :3], full_loc=x, reduced_loc=recoded)
    with pytest.raises(ValueError, match=r"same column spaces .*\(0 degrees of freedom\)"):
        bg.de.lrt(full=bg.fit(y[:, :3], x), reduced=bg.fit(y[:, :3], recoded))


def test_argument_errors(data):
    y, x = data
    small = y[:, :3]
    full = bg.fit(small, x)
    reduced = bg.fit(small, x[:, :1])
    with pytest.raises(ValueError, match=r"pass `data` and `full_loc`"):
        bg.de.lrt(small)
    with pytest.raises(ValueError, match=r"give a reduced model"):
        bg.de.lrt(small, full_loc=x)
    with pytest.raises(ValueError, match=r"pass both `full` and `reduced` fits"):
        bg.de.lrt(full=full)
    with pytest.raises(ValueError, match=r"leave out the fitting arguments \['data', 'max_iter'\]"):
        bg.de.lrt(small, full=full, reduced=reduced, max_iter=5)
    with pytest.raises(ValueError, match=r"must be FitResult objects"):
        bg.de.lrt(full=full, reduced=3)
    with pytest.raises(ValueError, match=r"take ready fits \(bg.fit\) or bg.de.Model objects"):
        bg.de.lrt(full=full, reduced="reduced")
    with pytest.raises(ValueError, match=r"same features in the same order"):
        bg.de.lrt(full=full, reduced=bg.fit(y[:, :4], x[:, :1]))
    with pytest.raises(ValueError, match=r"same observations"):
        bg.de.lrt(
            full=full,
            reduced=bg.fit(
                pd.DataFrame(small)
                .iloc[::-1]
                .reset_index(drop=True)
                .rename(index=lambda i: f"o{i}")
                .set_axis([f"feature{j}" for j in range(3)], axis=1),
                x[:, :1],
            ),
        )
    with pytest.raises(ValueError, match=r"same size factors"):
        bg.de.lrt(full=full, reduced=bg.fit(small, x[:, :1], size_factors=np.full(len(y), 2.0)))
    with pytest.raises(ValueError, match=r"`coef` 'nope' is not a coefficient of the full"):
        bg.de.lrt(full=full, reduced=reduced, coef="nope")


def test_fit_errors_pass_through(data):
    y, x = data
    with pytest.raises(ValueError, match=r"`design_loc` has 10 rows"):
        bg.de.lrt(y, full_loc=x[:10], reduced_loc=x[:10, :1])


def test_lrt_with_formulas(data):
    y, x = data
    obs = pd.DataFrame(
        {
            "condition": np.where(x[:, 1] == 1, "treated", "control"),
            "batch": np.where(x[:, 2] == 1, "b2", "b1"),
        }
    )
    de = bg.de.lrt(y, full_loc="~ 1 + condition + batch", reduced_loc="~ 1 + batch", obs=obs)
    ref = bg.de.lrt(y, full_loc=x, reduced_loc=x[:, [0, 2]])
    np.testing.assert_allclose(de.stat, ref.stat, rtol=1e-8, atol=1e-8)
    assert list(de.estimates.columns) == ["condition[T.treated]"]
    sc = bg.de.lrt(
        y,
        full_loc="~ 1 + condition + batch",
        full_scale="~ 1 + condition",
        reduced_scale="~ 1",
        obs=obs,
    )
    assert sc.model == "scale" and sc.effect_model == "scale"
    with pytest.raises(ValueError, match=r"reduced `loc` model is not nested .*'condition"):
        bg.de.lrt(y[:, :3], full_loc="~ 1 + batch", reduced_loc="~ 1 + condition", obs=obs)


def test_lrt_progress_bars_only_when_asked(capsys):
    """``progress=True`` draws the bars of both fits (and the dispersion passes) on stderr."""
    rng = np.random.default_rng(31)
    y = nb_counts(rng, np.exp(rng.uniform(1, 4, 30))[None, :] * np.ones((10, 1)), 4.0)
    x = np.column_stack([np.ones(10), np.repeat([0.0, 1.0], 5)])
    bg.de.lrt(y, full_loc=x, reduced_loc=x[:, :1], dispersion="map", progress=False)
    assert capsys.readouterr() == ("", "")
    bg.de.lrt(y, full_loc=x, reduced_loc=x[:, :1], dispersion="map", progress=True)
    out, err = capsys.readouterr()
    # the full fit, its refit at the MAP dispersions and the reduced fit
    assert out == "" and err.count("batchglm.fit") >= 3 and "MAP dispersions" in err
    full, red = bg.fit(y, x, progress=False), bg.fit(y, x[:, :1], progress=False)
    bg.de.lrt(y, full=full, reduced=red, dispersion="map", progress=True)
    err = capsys.readouterr().err
    assert "MAP dispersions" in err and "batchglm.fit" in err
    bg.de.lrt(y, full=full, reduced=red, dispersion="map", progress=False)
    assert capsys.readouterr() == ("", "")
