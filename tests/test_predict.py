"""Predictions for new observations against statsmodels' GLM predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import batchglm as bg
from batchglm.predict import Prediction


def _poisson_fit(seed: int = 7, n: int = 90):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"tissue": rng.choice(["liver", "lung", "gut"], n), "age": rng.uniform(20, 70, n)},
        index=[f"s{i}" for i in range(n)],
    )
    sf = rng.uniform(0.5, 2.0, n)
    x = pd.get_dummies(obs["tissue"], drop_first=True, dtype=float)
    eta = 1.5 + x.to_numpy() @ np.array([0.4, -0.6]) + 0.01 * obs["age"].to_numpy()
    y = rng.poisson(sf[:, None] * np.exp(eta[:, None] + rng.normal(0, 0.5, (1, 4))))
    data = pd.DataFrame(y.astype(float), index=obs.index, columns=list("abcd"))
    res = bg.fit(data, "~ tissue + age", obs=obs, size_factors=sf, family="poisson")
    return data, obs, sf, res


def test_prediction_and_standard_errors_match_statsmodels():
    data, obs, sf, res = _poisson_fit()
    new = pd.DataFrame(
        {"tissue": ["lung", "gut", "liver"], "age": [25.0, 50.0, 80.0]}, index=["n1", "n2", "n3"]
    )
    new_sf = np.array([1.0, 0.5, 3.0])
    pred = res.predict(new, se=True, size_factors=new_sf)
    assert isinstance(pred, Prediction)
    assert list(pred.mean.index) == ["n1", "n2", "n3"]
    x_train = np.column_stack(
        [np.ones(len(obs)), obs["tissue"] == "liver", obs["tissue"] == "lung", obs["age"]]
    ).astype(float)
    x_new = np.column_stack(
        [np.ones(3), new["tissue"] == "liver", new["tissue"] == "lung", new["age"]]
    ).astype(float)
    for name in data.columns:
        ref = sm.GLM(
            data[name].to_numpy(), x_train, family=sm.families.Poisson(), offset=np.log(sf)
        ).fit(tol=1e-12)
        p = ref.get_prediction(x_new, offset=np.log(new_sf))
        np.testing.assert_allclose(pred.mean[name], p.predicted_mean, rtol=1e-6)
        np.testing.assert_allclose(pred.se_link[name], p.linpred.se, rtol=1e-5)
        np.testing.assert_allclose(pred.se_mean[name], p.se_mean, rtol=1e-5)


def test_predict_on_training_obs_equals_fitted():
    data, obs, sf, res = _poisson_fit()
    again = res.predict(obs, size_factors=res.size_factors)
    np.testing.assert_allclose(again.to_numpy(), res.fitted().to_numpy(), rtol=1e-12)
    normalised = res.predict(obs, features=["b", "d"])
    np.testing.assert_allclose(
        normalised.to_numpy(), res.fitted(["b", "d"]).to_numpy() / sf[:, None], rtol=1e-12
    )


def test_unseen_levels_and_missing_variables_are_errors():
    _, _, _, res = _poisson_fit()
    with pytest.raises(ValueError, match=r"column 'tissue' has levels \['brain'\] not seen"):
        res.predict(pd.DataFrame({"tissue": ["lung", "brain"], "age": [30.0, 40.0]}))
    wrapped = bg.fit(res.fitted(), "~ C(tissue) + age", obs=res.obs, family="normal")
    with pytest.raises(ValueError, match=r"does not match the training annotations.*'brain'"):
        wrapped.predict(pd.DataFrame({"tissue": ["brain"], "age": [30.0]}))
    with pytest.raises(ValueError, match="could not be evaluated on `obs_new`"):
        res.predict(pd.DataFrame({"tissue": ["lung"]}))
    with pytest.raises(ValueError, match=r"`size_factors` must have one value per observation"):
        res.predict(pd.DataFrame({"tissue": ["lung"], "age": [3.0]}), size_factors=[1.0, 2.0])


def test_matrix_design_fits_take_a_design_matrix():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(40), np.repeat([0.0, 1.0], 20)])
    y = rng.poisson(np.exp(x @ np.array([[2.0, 0.7]]).T)).astype(float)
    res = bg.fit(y, x, family="poisson")
    pred = res.predict(np.array([[1.0, 0.0], [1.0, 1.0]]))
    # Poisson MLE with group indicators: the group means.
    np.testing.assert_allclose(pred.to_numpy()[:, 0], [y[:20].mean(), y[20:].mean()], rtol=1e-8)
    with pytest.raises(ValueError, match=r"must have shape \(n_new, 2\)"):
        res.predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="the fit has a matrix design"):
        res.predict(pd.DataFrame({"condition": ["a"]}))
    named = res.predict(pd.DataFrame({"p0": [1.0], "p1": [1.0]}))
    assert named.iloc[0, 0] == pytest.approx(y[20:].mean(), rel=1e-8)


def test_normal_fit_predicts_least_squares_means_without_size_factors():
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(30), rng.normal(size=30)])
    y = x @ np.array([[2.0], [0.5]]) + rng.normal(0, 0.3, (30, 1))
    res = bg.fit(y, x, family="normal")
    new = np.array([[1.0, -1.0], [1.0, 2.0]])
    ols = sm.OLS(y[:, 0], x).fit()
    np.testing.assert_allclose(res.predict(new).to_numpy()[:, 0], ols.predict(new), rtol=1e-10)
    with pytest.raises(ValueError, match="identity link for the mean, so `size_factors`"):
        res.predict(new, size_factors=[1.0, 2.0])


def test_nested_constraint_designs_need_a_design_matrix():
    rng = np.random.default_rng(3)
    obs = pd.DataFrame(
        {"cond": np.repeat(["a", "b"], 20), "rep": np.repeat(["r1", "r2", "r3", "r4"], 10)}
    )
    y = rng.poisson(20, (40, 2)).astype(float)
    res = bg.fit(y, "~ 1 + cond + rep", obs=obs, constraints_loc={"rep": "cond"}, family="poisson")
    with pytest.raises(ValueError, match="without nested-factor constraints"):
        res.predict(obs)
    design = res.design_loc.iloc[:2]
    np.testing.assert_allclose(
        res.predict(design).to_numpy(), res.fitted().to_numpy()[:2], rtol=1e-12
    )
