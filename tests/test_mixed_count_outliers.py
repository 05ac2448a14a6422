"""Count outliers of mixed fits (``mixed/count_outliers.py``, hooks in ``bg.de.wald``/``lrt``).

References: tail probabilities against :func:`scipy.stats.nbinom.sf` and
:func:`scipy.stats.poisson.sf` (``P(Y >= y) = sf(y - 1)``) at conditional means rebuilt by
hand from the fit's public tables (``coef_loc``, ``coef_scale``, ``random_effects``,
``design_loc``, ``size_factors``); the planted count and its feature are known by
construction.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

import batchglm as bg
from batchglm.inputs import data_of_fit
from batchglm.mixed.count_outliers import count_tails, find_count_outliers, upper_tail


def _mixed(seed: int, n_genes: int = 40) -> tuple[np.ndarray, pd.DataFrame]:
    """4 vs 4 donors, 20-60 cells each, NB null genes with donor variance 0.05-0.3."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 61, 8)
    gid = np.repeat(np.arange(8), sizes)
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(gid >= 4, "stim", "ctrl")},
        index=[f"c{i}" for i in range(gid.size)],
    )
    u = rng.normal(size=(8, n_genes)) * np.sqrt(rng.uniform(0.05, 0.3, n_genes))
    mu = np.exp(rng.uniform(-1.0, 1.5, n_genes) + u[gid])
    size = rng.uniform(2.0, 10.0, n_genes)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


def test_upper_tail_matches_scipy() -> None:
    y = np.array([1.0, 3.0, 7.0, 40.0, 1e5])
    mu = np.array([0.2, 2.5, 1.0, 8.0, 0.5])
    r = np.array([0.5, 4.0, 9.0, 1.3, 2.0])
    nb = stats.nbinom.sf(y - 1, r, r / (r + mu))
    np.testing.assert_allclose(upper_tail("nb", y, mu, r), nb, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(
        upper_tail("poisson", y, mu), stats.poisson.sf(y - 1, mu), rtol=1e-10
    )


def test_upper_tail_messages() -> None:
    with pytest.raises(ValueError, match="count tails need family 'nb' or 'poisson', but 'normal'"):
        upper_tail("normal", np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="the NB tail needs `size`"):
        upper_tail("nb", np.ones(1), np.ones(1))


def test_tails_at_conditional_means_match_scipy() -> None:
    y, obs = _mixed(seed=3, n_genes=12)
    res = bg.fit(sparse.csr_matrix(y), "~ condition", obs=obs, random_effects="donor")
    tails = count_tails(res, data_of_fit(res.data, res), slice(0, 12))
    assert tails.tail.size == np.count_nonzero(y)
    # Conditional means by hand from the public tables.
    eta = res.design_loc.to_numpy() @ res.coef_loc.to_numpy().T
    modes = res.random_effects("donor").loc[obs["donor"]].to_numpy()
    mu = res.size_factors[:, None] * np.exp(eta + modes)
    r = np.exp(res.coef_scale.to_numpy()[:, 0])
    o, f = tails.obs, tails.feat
    np.testing.assert_allclose(tails.mean, mu[o, f], rtol=1e-10)
    ref = stats.nbinom.sf(y[o, f] - 1, r[f], r[f] / (r[f] + mu[o, f]))
    np.testing.assert_allclose(tails.tail, ref, rtol=1e-8)


def test_poisson_tails_match_scipy() -> None:
    y, obs = _mixed(seed=4, n_genes=6)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor", family="poisson")
    tails = count_tails(res, data_of_fit(res.data, res), slice(2, 6))
    eta = res.design_loc.to_numpy() @ res.coef_loc.to_numpy().T
    mu = res.size_factors[:, None] * np.exp(
        eta + res.random_effects("donor").loc[obs["donor"]].to_numpy()
    )
    o, f = tails.obs, tails.feat
    assert f.min() == 2
    np.testing.assert_allclose(tails.tail, stats.poisson.sf(y[o, f] - 1, mu[o, f]), rtol=1e-8)


@pytest.mark.parametrize("seed", [11, 12])
def test_clean_mixed_data_flag_nothing(seed: int) -> None:
    y, obs = _mixed(seed=seed, n_genes=60)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    found = find_count_outliers(res, data_of_fit(res.data, res))
    assert not found.outlier.any()
    assert found.worst is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no outlier warning
        de = bg.de.wald(res, coef="condition[T.stim]")
    assert de.count_outlier is not None and not de.count_outlier.any()


def test_planted_count_is_flagged_by_wald_and_lrt() -> None:
    y, obs = _mixed(seed=5, n_genes=30)
    y[7, 4] = 1e5  # one cell of a null gene
    names = [f"g{j}" for j in range(30)]
    adata = __import__("anndata").AnnData(sparse.csr_matrix(y), obs=obs)
    adata.var_names = names
    res = bg.fit(adata, "~ condition", random_effects="donor")
    msg = (
        r"1 feature\(s\) \(g4\) of this mixed fit have a count whose upper-tail probability "
        r".*worst: count 100000 of 'g4' in observation 'c7', conditional mean .*status "
        r"'outlier' and NaN p-values.*bg\.pseudobulk \+ bg\.de\.test.*count_outlier_alpha=None"
    )
    with pytest.warns(UserWarning, match=msg):
        table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert table.loc["g4", "status"] == "outlier"
    assert np.isnan(table.loc["g4", ["pvalue", "padj"]].astype(float)).all()
    others = table.drop(index="g4")
    assert (others["status"] != "outlier").all() and np.isfinite(others["pvalue"]).all()
    reduced = bg.fit(adata, "~ 1", random_effects="donor")
    with pytest.warns(UserWarning, match=msg):
        lrt = bg.de.lrt(full=res, reduced=reduced).summary()
    assert lrt.loc["g4", "status"] == "outlier" and np.isnan(lrt.loc["g4", "pvalue"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = bg.de.wald(res, coef="condition[T.stim]", count_outlier_alpha=None).summary()
    assert np.isfinite(off.loc["g4", "pvalue"]) and off.loc["g4", "status"] != "outlier"


def test_alpha_must_lie_in_unit_interval() -> None:
    y, obs = _mixed(seed=6, n_genes=5)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    with pytest.raises(
        ValueError, match=r"`count_outlier_alpha` must lie in \(0, 1\) or be None, but 2"
    ):
        bg.de.wald(res, coef="condition[T.stim]", count_outlier_alpha=2)
    with pytest.raises(ValueError, match=r"`count_outlier_alpha` must lie in \(0, 1\).*but 0"):
        find_count_outliers(res, data_of_fit(res.data, res), alpha=0.0)


def test_plain_glm_is_not_checked() -> None:
    y, obs = _mixed(seed=7, n_genes=5)
    y[0, 0] = 1e5
    res = bg.fit(y, "~ condition", obs=obs)
    de = bg.de.wald(res, coef="condition[T.stim]")
    assert de.count_outlier is None


def test_two_factors_add_both_intercepts() -> None:
    y, obs = _mixed(seed=8, n_genes=6)
    rng = np.random.default_rng(8)
    obs["batch"] = np.where(rng.uniform(size=len(obs)) < 0.5, "b0", "b1")
    obs["batch"] = obs["batch"] + "_" + rng.choice(["x", "y", "z"], len(obs))
    res = bg.fit(y, "~ condition", obs=obs, random_effects=["donor", "batch"])
    tails = count_tails(res, data_of_fit(res.data, res), slice(0, 6))
    eta = res.design_loc.to_numpy() @ res.coef_loc.to_numpy().T
    eta += res.random_effects("donor").loc[obs["donor"]].to_numpy()
    eta += res.random_effects("batch").loc[obs["batch"]].to_numpy()
    mu = res.size_factors[:, None] * np.exp(eta)
    np.testing.assert_allclose(tails.mean, mu[tails.obs, tails.feat], rtol=1e-10)
