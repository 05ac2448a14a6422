"""What a fit keeps: its Family object, typed settings, one fitted mean; deprecated names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import special

import batchglm as bg
from batchglm.de.result import base_mean
from batchglm.families import Beta, NegativeBinomial, get_family
from batchglm.families.link import LOG, LOGIT, get_link
from batchglm.fit_settings import FitSettings
from batchglm.fitted import fitted_mean


@pytest.fixture(scope="module")
def nb_fit():
    rng = np.random.default_rng(5)
    n = 40
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2)])
    sf = rng.uniform(0.5, 2.0, n)
    mu = sf[:, None] * np.exp(x @ np.array([[3.0, 2.0, 4.0], [0.5, -0.3, 0.0]]))
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu))
    return y.astype(float), x, sf, bg.fit(y.astype(float), x, size_factors=sf)


def test_the_fit_keeps_its_family_object_which_compares_as_its_name(nb_fit):
    _, _, _, res = nb_fit
    assert isinstance(res.family, NegativeBinomial)
    assert res.family == "nb" and res.family != "poisson"
    assert res.family in ("nb", "poisson") and str(res.family) == "nb"
    assert res.family == get_family("nb") and res.family != Beta()
    assert {res.family: 1}["nb"] == 1
    assert res.family.link == "log" and res.family.link is LOG
    assert Beta().link is LOGIT


def test_settings_are_typed_and_keep_item_access(nb_fit):
    _, _, _, res = nb_fit
    assert isinstance(res.settings, FitSettings)
    assert res.settings.family == "nb" and res.settings.size_factors == "given"
    assert res.settings["tol"] == res.settings.tol == 1e-10
    assert res.settings.get("layer") is None and res.settings.get("nothing", 3) == 3
    with pytest.raises(KeyError):
        res.settings["nothing"]
    with pytest.raises(ValueError, match=r"fit settings must be among .* \['bogus'\] were"):
        FitSettings.from_mapping({"bogus": True})


def test_fitted_mean_is_size_factor_times_exp_of_the_statsmodels_fit(nb_fit):
    y, x, sf, res = nb_fit
    mu = fitted_mean(res)
    for j in range(y.shape[1]):
        alpha = float(np.exp(-res.coef_scale.iloc[j, 0]))
        ref = sm.GLM(
            y[:, j], x, family=sm.families.NegativeBinomial(alpha=alpha), offset=np.log(sf)
        ).fit(tol=1e-12)
        np.testing.assert_allclose(mu[:, j], ref.fittedvalues, rtol=1e-6)
        np.testing.assert_allclose(base_mean(res)[j], np.exp(x @ ref.params).mean(), rtol=1e-6)
    np.testing.assert_allclose(res.fitted().to_numpy(), mu)


def test_links_invert_and_refuse_unknown_names():
    eta = np.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(LOGIT.inverse(eta), 1.0 / (1.0 + np.exp(-eta)))
    np.testing.assert_allclose(LOGIT.link(LOGIT.inverse(eta)), eta)
    np.testing.assert_allclose(LOGIT.d_inverse(eta), special.expit(eta) * special.expit(-eta))
    assert np.isfinite(LOG.inverse(np.array([1e4]))).all()
    with pytest.raises(ValueError, match=r"location link must be one of .* 'probit' was given"):
        get_link("probit")


def test_deviance_is_the_sum_of_unit_deviances_as_statsmodels(nb_fit):
    y, x, sf, res = nb_fit
    ref = sm.GLM(y[:, 0], x, family=sm.families.Poisson(), offset=np.log(sf)).fit()
    dev = get_family("poisson").deviance(y[:, :1], ref.fittedvalues[:, None], np.zeros((1, 1)))
    np.testing.assert_allclose(dev[0], ref.deviance, rtol=1e-8)


def test_deprecated_names_warn_and_read_the_same_values(nb_fit):
    y, x, _, res = nb_fit
    de = bg.de.lrt(y, x, x[:, :1])
    with pytest.warns(DeprecationWarning, match="`DEResult.ll` is deprecated; use `loglik`"):
        np.testing.assert_array_equal(de.ll, de.loglik)
    with pytest.warns(DeprecationWarning, match="use `loglik_reduced`"):
        np.testing.assert_array_equal(de.ll_reduced, de.loglik_reduced)
    with pytest.warns(DeprecationWarning, match="`DEResult.coef_sd` is deprecated; use `coef_se`"):
        np.testing.assert_array_equal(de.coef_sd, de.coef_se)
    from batchglm.de import result

    with pytest.warns(DeprecationWarning, match="`batchglm.de.result.fitted_mean` is deprecated"):
        np.testing.assert_array_equal(result.fitted_mean(res), base_mean(res))
    np.testing.assert_array_equal(de.summary()["loglik"].to_numpy(), de.loglik)
    assert isinstance(de.summary(), pd.DataFrame)
