"""Fitted values and residuals against statsmodels, scipy and closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, special, stats
from statsmodels.genmod.generalized_linear_model import GLMResults

import batchglm as bg


def _count_data(family: str, seed: int = 3, n: int = 80, f: int = 6):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"cond": np.tile(["ctl", "trt"], n // 2), "x": rng.normal(size=n)},
        index=[f"cell{i}" for i in range(n)],
    )
    x = np.column_stack([np.ones(n), obs["cond"] == "trt", obs["x"]]).astype(float)
    sf = rng.uniform(0.4, 2.5, n)
    beta = np.column_stack([rng.uniform(0.5, 4, f), rng.normal(0, 0.7, f), rng.normal(0, 0.3, f)])
    mu = sf[:, None] * np.exp(x @ beta.T)
    y = rng.negative_binomial(4, 4 / (4 + mu)) if family == "nb" else rng.poisson(mu)
    data = pd.DataFrame(y.astype(float), index=obs.index, columns=[f"gene{j}" for j in range(f)])
    res = bg.fit(data, "~ cond + x", obs=obs, size_factors=sf, family=family)
    return data, x, sf, res


@pytest.mark.parametrize("family", ["nb", "poisson"])
def test_pearson_deviance_fitted_match_statsmodels(family):
    data, x, sf, res = _count_data(family)
    pearson = res.residuals(data, "pearson")
    deviance = res.residuals(data, kind="deviance")
    fitted = res.fitted()
    assert fitted.shape == data.shape and fitted.index.equals(data.index)
    for j, name in enumerate(data.columns):
        if family == "nb":
            alpha = float(np.exp(-res.coef_scale.iloc[j, 0]))
            fam = sm.families.NegativeBinomial(alpha=alpha)
        else:
            fam = sm.families.Poisson()
        model = sm.GLM(data[name].to_numpy(), x, family=fam, offset=np.log(sf))
        ref = GLMResults(model, res.coef_loc.iloc[j].to_numpy(), None, scale=1.0)
        np.testing.assert_allclose(fitted[name], ref.fittedvalues, rtol=1e-12)
        np.testing.assert_allclose(pearson[name], ref.resid_pearson, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(deviance[name], ref.resid_deviance, rtol=1e-8, atol=1e-10)


def test_feature_blocks_allocate_only_the_block():
    data, _, _, res = _count_data("nb")
    full = res.residuals(data, "deviance")
    block = res.residuals(data, "deviance", features=["gene4", "gene1"])
    assert list(block.columns) == ["gene4", "gene1"]
    np.testing.assert_array_equal(block.to_numpy(), full[["gene4", "gene1"]].to_numpy())
    assert res.fitted(features=slice(1, 3)).shape == (data.shape[0], 2)
    assert list(res.fitted(features=slice("gene2", "gene3")).columns) == ["gene2", "gene3"]
    assert list(res.fitted("gene5").columns) == ["gene5"]
    with pytest.raises(KeyError, match="not features of the fit"):
        res.fitted(features=["gene1", "nope"])
    with pytest.raises(KeyError, match=r"feature positions must lie in \[0, 6\)"):
        res.fitted(features=[0, 6])
    assert list(res.fitted(features=[-1]).columns) == ["gene5"]
    with pytest.warns(bg.align.DuplicateNamesWarning, match=r"2 features sharing 1 name"):
        dup = bg.fit(
            data.set_axis(["a", "a", "b", "c", "d", "e"], axis=1),
            "~ cond + x",
            obs=res.obs,
            size_factors=res.size_factors,
        )
    with pytest.raises(ValueError, match=r"names are unique, but \['a'\] occur more than once"):
        dup.fitted("a")
    assert dup.fitted([0, 1]).shape == (data.shape[0], 2)


def test_quantile_residuals_of_a_correct_nb_model_are_standard_normal():
    sim = bg.simulate(np.repeat(np.eye(2), 150, axis=0), n_features=30, seed=11)
    res = bg.fit(sim.data, np.repeat(np.eye(2), 150, axis=0), progress=False)
    z = res.residuals(sim.data, "quantile", seed=5).to_numpy().ravel()
    assert stats.kstest(z, "norm").pvalue > 0.01
    # The check can fail: Pearson residuals of the same counts are far from normal.
    pearson = res.residuals(sim.data, "pearson").to_numpy().ravel()
    assert stats.kstest(pearson, "norm").pvalue < 1e-6
    again = res.residuals(sim.data, "quantile", seed=5)
    other = res.residuals(sim.data, "quantile", seed=6)
    np.testing.assert_array_equal(again.to_numpy().ravel(), z)
    assert not np.array_equal(other.to_numpy().ravel(), z)


def test_randomized_quantile_residual_lies_in_the_count_interval():
    data, _, sf, res = _count_data("poisson")
    z = res.residuals(data, "quantile", seed=1).to_numpy()
    mu = res.fitted().to_numpy()
    lo = stats.norm.ppf(stats.poisson.cdf(data.to_numpy() - 1, mu))
    hi = stats.norm.ppf(stats.poisson.cdf(data.to_numpy(), mu))
    assert np.all((z >= lo - 1e-9) & (z <= hi + 1e-9))


def test_normal_residuals_are_standardised_exactly():
    rng = np.random.default_rng(2)
    x = np.column_stack([np.ones(50), rng.normal(size=50)])
    y = x @ np.array([[1.0, 2.0], [0.5, -1.0]]) + rng.normal(0, 0.7, (50, 2))
    res = bg.fit(y, x, family="normal")
    sd = np.exp(res.coef_scale.to_numpy()[:, 0])
    expected = (y - x @ res.coef_loc.to_numpy().T) / sd
    for kind in ("pearson", "quantile"):
        np.testing.assert_allclose(
            res.residuals(y, kind).to_numpy(), expected, rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(res.residuals(y, "deviance").to_numpy(), expected, rtol=1e-9)


def test_beta_residuals_against_scipy():
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(60), np.repeat([0.0, 1.0], 30)])
    mu = special.expit(x @ np.array([[0.3, -0.8]]).T)
    y = rng.beta(mu * 20, (1 - mu) * 20)
    res = bg.fit(y, x, family="beta")
    m = special.expit(x @ res.coef_loc.to_numpy()[0])
    phi = float(np.exp(res.coef_scale.iloc[0, 0]))
    yy = y[:, 0]
    a, b = m * phi, (1 - m) * phi
    q = res.residuals(y, "quantile").to_numpy()[:, 0]
    np.testing.assert_allclose(q, stats.norm.ppf(stats.beta.cdf(yy, a, b)), rtol=1e-8)
    p = res.residuals(y, "pearson").to_numpy()[:, 0]
    np.testing.assert_allclose(p, (yy - m) / np.sqrt(stats.beta.var(a, b)), rtol=1e-10)
    d = res.residuals(y, "deviance").to_numpy()[:, 0]
    for i in (0, 17, 45):

        def nll(t, i=i):
            mm = special.expit(t)
            return -stats.beta.logpdf(yy[i], mm * phi, (1 - mm) * phi)

        best = optimize.minimize_scalar(
            nll, bounds=(-15, 15), method="bounded", options={"xatol": 1e-12}
        ).fun
        dev = 2 * (stats.beta.logpdf(yy[i], a[i], b[i]) * -1 - best)
        assert d[i] == pytest.approx(np.sign(yy[i] - m[i]) * np.sqrt(dev), rel=1e-6)


def test_residual_errors():
    data, _, _, res = _count_data("nb")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        res.residuals(data, "working")
    with pytest.raises(ValueError, match=r"`data` lacks 1 feature of the fit"):
        res.residuals(data.iloc[:, :5], "pearson")  # named: the names say what is missing
    with pytest.raises(ValueError, match=r"must be the data of the fit, shape \(80, 6\)"):
        res.residuals(data.to_numpy()[:, :5], "pearson")
    # Reordered observations are matched by name (docs/inputs.md), never paired by position.
    pd.testing.assert_frame_equal(
        res.residuals(data.iloc[::-1], "pearson"), res.residuals(data, "pearson")
    )
    renamed = data.rename(columns={"gene0": "other"})
    with pytest.raises(
        ValueError,
        match=r"`data` must name the same features as the fit, "
        r"but `data` lacks 1 feature of the fit \(e.g. \['gene0'\]\)",
    ):
        res.residuals(renamed, "pearson")
    # A plain array has no names: only the shape is checked.
    assert res.residuals(data.to_numpy(), "pearson").shape == data.shape


def test_feature_blocks_do_not_allocate_the_full_matrix():
    import tracemalloc

    rng = np.random.default_rng(8)
    y = rng.poisson(5.0, (3000, 300)).astype(float)
    res = bg.fit(y, np.ones((3000, 1)), family="poisson")
    res.fitted(features=[0])  # warm caches
    tracemalloc.start()
    block = res.fitted(features=[3, 7])
    resid = res.residuals(y, "deviance", features=[3, 7])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert block.shape == resid.shape == (3000, 2)
    full_bytes = y.nbytes  # 7.2 MB
    assert peak < full_bytes / 10
