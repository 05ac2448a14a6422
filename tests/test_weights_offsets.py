"""Observation weights and offsets of ``bg.fit``, against duplicated data and statsmodels.

Integer weights must reproduce the fit on duplicated observations (coefficients, standard
errors and log-likelihood), a weight of 0 must drop the observation, and a matrix offset
``log(size_factors)`` must reproduce the size-factor fit. Fractional weights and per-feature
offsets are checked against statsmodels' GLM and a direct scipy maximisation of the weighted
likelihood.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, sparse, special, stats

import batchglm as bg

RTOL = 1e-10
N_PER = 12


def _groups(n_per: int = N_PER, k: int = 3) -> np.ndarray:
    return np.repeat(np.arange(k), n_per)


def _design(g: np.ndarray) -> np.ndarray:
    k = int(g.max()) + 1
    return np.column_stack([np.ones(g.size)] + [(g == j).astype(float) for j in range(1, k)])


def _data(family: str, n: int, n_feat: int, rng: np.random.Generator) -> np.ndarray:
    if family in ("nb", "poisson"):
        mu = rng.uniform(3.0, 30.0, size=(1, n_feat)) * rng.uniform(0.5, 2.0, size=(n, 1))
        return rng.negative_binomial(4, 4 / (4 + mu)).astype(float)
    if family == "normal":
        return rng.normal(2.0, 1.5, size=(n, n_feat))
    return rng.beta(2.0, 5.0, size=(n, n_feat))


def _assert_same_fit(a: bg.FitResult, b: bg.FitResult, rtol: float = RTOL) -> None:
    """Coefficients, standard errors and log-likelihoods agree to ``rtol`` (and as much abs)."""
    for attr in ("coef_loc", "se_loc", "coef_scale", "se_scale", "loglik"):
        x = getattr(a, attr).to_numpy()
        y = getattr(b, attr).to_numpy()
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, err_msg=attr)


# Each case: family, whether the scale design has a second column (normal: Newton),
# size factors.
CASES = [
    ("nb", True, True),
    ("poisson", False, True),
    ("normal", False, False),  # closed form (intercept-only scale)
    ("normal", True, False),  # Newton (scale design with a group effect)
    ("beta", True, False),
]


@pytest.mark.parametrize(("family", "scale_design", "use_sf"), CASES)
def test_integer_weights_equal_duplicated_rows(
    family: str, scale_design: bool, use_sf: bool
) -> None:
    rng = np.random.default_rng(11)
    g = _groups()
    n = g.size
    x = _design(g)
    z = np.column_stack([np.ones(n), (g == 2).astype(float)]) if scale_design else None
    y = _data(family, n, 5, rng)
    sf = rng.uniform(0.5, 2.0, size=n) if use_sf else None
    w = rng.integers(1, 4, size=n).astype(float)
    w[[0, 5, 17]] = 0.0  # dropped observations
    rep = np.repeat(np.arange(n), w.astype(int))
    kw = {"family": family, "tol": 1e-14}
    weighted = bg.fit(y, x, z, size_factors=sf, weights=w, **kw)
    copied = bg.fit(
        y[rep],
        x[rep],
        None if z is None else z[rep],
        size_factors=None if sf is None else sf[rep],
        **kw,
    )
    assert weighted.converged.all()
    _assert_same_fit(weighted, copied)


def test_normal_closed_form_weighted_least_squares() -> None:
    """Weighted least squares and ``sd^2 = sum w r^2 / sum w`` for fractional weights."""
    rng = np.random.default_rng(3)
    g = _groups()
    x = _design(g)
    y = _data("normal", g.size, 3, rng)
    w = rng.uniform(0.2, 3.0, size=g.size)
    res = bg.fit(y, x, family="normal", weights=w)
    assert (res.n_iter == 0).all()  # the closed form
    sw = np.sqrt(w)[:, None]
    beta = np.linalg.lstsq(x * sw, y * sw, rcond=None)[0]
    np.testing.assert_allclose(res.coef_loc.to_numpy(), beta.T, rtol=1e-10)
    rss = (w[:, None] * (y - x @ beta) ** 2).sum(axis=0)
    np.testing.assert_allclose(res.coef_scale.to_numpy()[:, 0], 0.5 * np.log(rss / w.sum()))
    # The location covariance is sd^2 (X' W X)^-1 (statsmodels WLS with the ML scale).
    for j in range(y.shape[1]):
        ref = sm.GLM(y[:, j], x, family=sm.families.Gaussian(), var_weights=w).fit(
            scale=float(rss[j] / w.sum())
        )
        np.testing.assert_allclose(res.se_loc.to_numpy()[j], ref.bse, rtol=1e-8)


def test_per_feature_integer_weights_equal_featurewise_duplication() -> None:
    rng = np.random.default_rng(5)
    g = _groups()
    n = g.size
    x = _design(g)
    z = np.column_stack([np.ones(n), (g == 1).astype(float)])
    y = _data("nb", n, 4, rng)
    w = rng.integers(0, 4, size=(n, 4)).astype(float)
    w[:3] = 1.0
    w[g == 1] = np.maximum(w[g == 1], 1.0)
    res = bg.fit(y, x, z, weights=w, tol=1e-14)
    for j in range(4):
        rep = np.repeat(np.arange(n), w[:, j].astype(int))
        one = bg.fit(y[rep][:, [j]], x[rep], z[rep], tol=1e-14)
        for attr in ("coef_loc", "se_loc", "coef_scale", "se_scale", "loglik"):
            np.testing.assert_allclose(
                getattr(res, attr).to_numpy()[j],
                getattr(one, attr).to_numpy()[0],
                rtol=RTOL,
                atol=RTOL,
                err_msg=f"{attr}, feature {j}",
            )


def test_per_feature_weights_in_blocks_threads_and_sparse_data() -> None:
    rng = np.random.default_rng(8)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("nb", n, 7, rng)
    y[:, 3] = 0.0
    y[0, 3] = 4.0
    w = rng.uniform(0.0, 2.0, size=(n, 7))
    w[0, 3] = 0.0  # the only non-zero count of feature 3 is dropped: all-zero feature
    whole = bg.fit(y, x, weights=w, offset=rng.normal(0, 0.2, size=(n, 7)) * 0.0)
    parts = bg.fit(sparse.csr_matrix(y), x, weights=w, chunk_size=2, n_jobs=2)
    _assert_same_fit(whole, parts, rtol=1e-12)
    assert whole.status["feature3"] == "all_zero"


def test_zero_weights_equal_dropping_observations() -> None:
    rng = np.random.default_rng(2)
    g = _groups()
    n = g.size
    x = _design(g)
    z = np.column_stack([np.ones(n), (g == 2).astype(float)])
    y = _data("nb", n, 4, rng)
    y[3] = 5000.0  # outliers that weight 0 removes
    keep = np.ones(n, dtype=bool)
    keep[[3, 20, 30]] = False
    res = bg.fit(y, x, z, weights=keep.astype(float), tol=1e-14)
    ref = bg.fit(y[keep], x[keep], z[keep], tol=1e-14)
    _assert_same_fit(res, ref)


def test_matrix_offset_equal_to_log_size_factors_is_the_size_factor_fit() -> None:
    rng = np.random.default_rng(4)
    g = _groups()
    n = g.size
    x = _design(g)
    z = np.column_stack([np.ones(n), (g == 1).astype(float)])
    y = _data("nb", n, 5, rng)
    sf = rng.uniform(0.3, 3.0, size=n)
    by_sf = bg.fit(y, x, z, size_factors=sf, tol=1e-14)
    by_offset = bg.fit(y, x, z, offset=np.repeat(np.log(sf)[:, None], 5, axis=1), tol=1e-14)
    by_vector = bg.fit(y, x, z, offset=np.log(sf), tol=1e-14)
    _assert_same_fit(by_sf, by_offset)
    _assert_same_fit(by_sf, by_vector)
    # Offsets and size factors add up.
    both = bg.fit(y, x, z, size_factors=sf, offset=np.log(sf), tol=1e-14)
    _assert_same_fit(both, bg.fit(y, x, z, size_factors=sf**2, tol=1e-14))
    # Fitted means include the offset.
    np.testing.assert_allclose(by_offset.fitted().to_numpy(), by_sf.fitted().to_numpy(), rtol=1e-10)


def test_per_feature_offset_matches_statsmodels() -> None:
    rng = np.random.default_rng(6)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("poisson", n, 4, rng)
    off = rng.normal(0.0, 0.5, size=(n, 4))
    res = bg.fit(y, x, family="poisson", offset=off)
    for j in range(4):
        ref = sm.GLM(y[:, j], x, family=sm.families.Poisson(), offset=off[:, j]).fit(tol=1e-13)
        np.testing.assert_allclose(res.coef_loc.to_numpy()[j], ref.params, rtol=1e-8)
        np.testing.assert_allclose(res.se_loc.to_numpy()[j], ref.bse, rtol=1e-6)
        np.testing.assert_allclose(res.loglik.to_numpy()[j], ref.llf, rtol=1e-10)
        np.testing.assert_allclose(res.fitted().to_numpy()[:, j], ref.fittedvalues, rtol=1e-7)
    pearson = res.residuals(y, "pearson").to_numpy()
    ref = sm.GLM(y[:, 0], x, family=sm.families.Poisson(), offset=off[:, 0]).fit(tol=1e-13)
    np.testing.assert_allclose(pearson[:, 0], ref.resid_pearson, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("family", ["poisson", "normal"])
def test_fractional_weights_match_statsmodels_var_weights(family: str) -> None:
    rng = np.random.default_rng(9)
    g = _groups()
    n = g.size
    x = np.column_stack([_design(g), rng.normal(size=n)])
    y = _data(family, n, 3, rng)
    w = rng.uniform(0.1, 3.0, size=n)
    res = bg.fit(y, x, family=family, weights=w)
    fam = sm.families.Poisson() if family == "poisson" else sm.families.Gaussian()
    for j in range(3):
        if family == "normal":
            sd2 = float(np.exp(2 * res.coef_scale.to_numpy()[j, 0]))
            ref = sm.GLM(y[:, j], x, family=fam, var_weights=w).fit(scale=sd2)
        else:
            ref = sm.GLM(y[:, j], x, family=fam, var_weights=w).fit(tol=1e-13)
            # Poisson: statsmodels' llf is sum w_i log f(y_i), the weighted likelihood.
            np.testing.assert_allclose(res.loglik.to_numpy()[j], ref.llf, rtol=1e-10)
        np.testing.assert_allclose(res.coef_loc.to_numpy()[j], ref.params, rtol=1e-7)
        np.testing.assert_allclose(res.se_loc.to_numpy()[j], ref.bse, rtol=1e-6)


def test_nb_fixed_dispersion_matches_statsmodels_weights() -> None:
    rng = np.random.default_rng(10)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("nb", n, 3, rng)
    w = rng.uniform(0.2, 2.5, size=n)
    alpha = np.array([0.2, 0.5, 0.1])
    res = bg.fit(y, x, weights=w, fixed_scale=np.log(1.0 / alpha))
    for j in range(3):
        fam = sm.families.NegativeBinomial(alpha=float(alpha[j]))
        for kind in ("var_weights", "freq_weights"):
            ref = sm.GLM(y[:, j], x, family=fam, **{kind: w}).fit(tol=1e-13)
            np.testing.assert_allclose(res.coef_loc.to_numpy()[j], ref.params, rtol=1e-7)
            np.testing.assert_allclose(res.se_loc.to_numpy()[j], ref.bse, rtol=1e-6)


def _nb_weighted_negll(theta: np.ndarray, y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    a, log_r = theta[:-1], theta[-1]
    mu = np.exp(x @ a)
    r = np.exp(log_r)
    ll = (
        special.gammaln(y + r)
        - special.gammaln(r)
        - special.gammaln(y + 1)
        + r * np.log(r / (r + mu))
        + y * np.log(mu / (r + mu))
    )
    return float(-(w * ll).sum())


def test_nb_joint_weighted_likelihood_matches_scipy() -> None:
    rng = np.random.default_rng(12)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("nb", n, 2, rng)
    w = rng.uniform(0.1, 2.0, size=n)
    res = bg.fit(y, x, weights=w)
    for j in range(2):
        start = np.concatenate([np.linalg.lstsq(x, np.log(y[:, j] + 1), rcond=None)[0], [1.0]])
        opt = optimize.minimize(
            _nb_weighted_negll, start, args=(y[:, j], x, w), method="BFGS", options={"gtol": 1e-9}
        )
        np.testing.assert_allclose(res.coef_loc.to_numpy()[j], opt.x[:-1], atol=1e-5)
        np.testing.assert_allclose(res.coef_scale.to_numpy()[j, 0], opt.x[-1], atol=1e-4)
        np.testing.assert_allclose(res.loglik.to_numpy()[j], -opt.fun, rtol=1e-9)


def test_wald_and_lrt_of_weighted_poisson_fit_match_statsmodels() -> None:
    rng = np.random.default_rng(13)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("poisson", n, 3, rng)
    w = rng.uniform(0.2, 2.0, size=n)
    off = rng.normal(0.0, 0.3, size=n)
    full = pd.DataFrame(x, columns=["a", "b", "c"])
    res = bg.fit(y, full, family="poisson", weights=w, offset=off)
    wald = bg.de.wald(res, "c")
    lrt = bg.de.lrt(y, full, full[["a", "b"]], family="poisson", weights=w, offset=off)
    for j in range(3):
        kw = {"family": sm.families.Poisson(), "var_weights": w, "offset": off}
        ref = sm.GLM(y[:, j], x, **kw).fit(tol=1e-13)
        red = sm.GLM(y[:, j], x[:, :2], **kw).fit(tol=1e-13)
        np.testing.assert_allclose(wald.pval[j], ref.pvalues[2], rtol=1e-6)
        stat = 2.0 * (ref.llf - red.llf)
        np.testing.assert_allclose(lrt.stat[j], stat, rtol=1e-7)
        np.testing.assert_allclose(lrt.pval[j], stats.chi2.sf(stat, 1), rtol=1e-6)


def test_labelled_weights_follow_names() -> None:
    rng = np.random.default_rng(14)
    g = _groups()
    n = g.size
    obs_names = [f"s{i}" for i in range(n)]
    feats = [f"g{j}" for j in range(3)]
    y = pd.DataFrame(_data("nb", n, 3, rng), index=obs_names, columns=feats)
    x = _design(g)
    w = rng.uniform(0.5, 2.0, size=(n, 3))
    plain = bg.fit(y, x, weights=w)
    frame = pd.DataFrame(w, index=obs_names, columns=feats).iloc[::-1, ::-1]
    _assert_same_fit(plain, bg.fit(y, x, weights=frame), rtol=1e-12)
    obs = pd.DataFrame({"w": w[:, 0], "group": g.astype(str)}, index=obs_names)
    by_name = bg.fit(y, "~ group", obs=obs, weights="w")
    by_series = bg.fit(y, x, weights=obs["w"].iloc[::-1])
    np.testing.assert_allclose(by_name.loglik, by_series.loglik, rtol=1e-12)


def test_dask_with_observation_weights_equals_dense() -> None:
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(15)
    g = _groups()
    x = _design(g)
    y = _data("nb", g.size, 4, rng)
    w = rng.uniform(0.5, 2.0, size=g.size)
    off = rng.normal(0.0, 0.2, size=g.size)
    dense = bg.fit(y, x, weights=w, offset=off)
    lazy = bg.fit(da.from_array(y, chunks=(g.size, 2)), x, weights=w, offset=off)
    _assert_same_fit(dense, lazy, rtol=1e-12)
    with pytest.raises(ValueError, match=r"must be per observation, shape \(n_obs,\), for dask"):
        bg.fit(da.from_array(y, chunks=(g.size, 2)), x, weights=np.ones(y.shape))


def test_weight_and_offset_errors() -> None:
    rng = np.random.default_rng(16)
    g = _groups()
    n = g.size
    x = _design(g)
    y = _data("nb", n, 2, rng)
    w = np.ones(n)
    with pytest.raises(ValueError, match=r"`weights` must be non-negative, but 1 are negative"):
        bg.fit(y, x, weights=np.where(np.arange(n) == 4, -1.0, w))
    with pytest.raises(ValueError, match=r"`weights` must be finite, but 1 value"):
        bg.fit(y, x, weights=np.where(np.arange(n) == 4, np.nan, w))
    with pytest.raises(ValueError, match=r"`offset` must be finite"):
        bg.fit(y, x, offset=np.where(np.arange(n) == 4, np.inf, 0.0))
    with pytest.raises(ValueError, match=r"`weights` must have shape \(36,\) or \(36, 2\)"):
        bg.fit(y, x, weights=np.ones(n - 1))
    with pytest.raises(ValueError, match=r"`offset` must have shape \(36,\) or \(36, 2\)"):
        bg.fit(y, x, offset=np.zeros((n, 3)))
    zero_feature = np.ones((n, 2))
    zero_feature[:, 1] = 0.0
    with pytest.raises(ValueError, match=r"for feature 'feature1' all weights are 0"):
        bg.fit(y, x, weights=zero_feature)
    with pytest.raises(ValueError, match=r"`weights` must be a dense array"):
        bg.fit(y, x, weights=sparse.csr_matrix(np.ones((n, 2))))
    with pytest.raises(ValueError, match=r"names the obs column 'wt'"):
        bg.fit(y, x, weights="wt")
    with pytest.raises(ValueError, match=r"`weights` must be numeric"):
        bg.fit(y, x, weights=np.array(["a"] * n))


def test_unsupported_combinations_are_refused() -> None:
    rng = np.random.default_rng(17)
    g = _groups()
    n = g.size
    obs = pd.DataFrame({"group": g.astype(str), "donor": (np.arange(n) % 4).astype(str)})
    y = _data("nb", n, 2, rng)
    w = rng.uniform(0.5, 2.0, size=n)
    with pytest.raises(NotImplementedError, match=r"not supported with `random_effects`"):
        bg.fit(y, "~ group", obs=obs, weights=w, random_effects="donor")
    res = bg.fit(y, "~ group", obs=obs, weights=w)
    with pytest.raises(NotImplementedError, match=r"dispersion='map' does not support fits"):
        bg.de.wald(res, "group[T.1]", dispersion="map")
    with pytest.raises(NotImplementedError, match=r"dispersion='ql' does not support `weights`"):
        bg.de.lrt(y, "~ group", "~ 1", obs=obs, dispersion="ql", weights=w)
    full_scale = bg.fit(y, "~ group", "~ group", obs=obs, weights=w)
    with pytest.raises(NotImplementedError, match=r"pass `scale_test='plain'`"):
        bg.de.lrt(full=full_scale, reduced=res)
    plain = bg.de.lrt(full=full_scale, reduced=res, scale_test="plain")
    np.testing.assert_allclose(
        plain.stat, np.maximum(2 * (full_scale.loglik - res.loglik).to_numpy(), 0.0)
    )
    unweighted = bg.fit(y, "~ 1", obs=obs)
    with pytest.raises(ValueError, match=r"must use the same `weights` and `offset`"):
        bg.de.lrt(full=res, reduced=unweighted)


def test_backed_data_with_per_feature_weights_and_offsets(tmp_path) -> None:
    ad = pytest.importorskip("anndata")
    from batchglm.anndata_io import read_backed

    rng = np.random.default_rng(18)
    g = _groups()
    n = g.size
    y = _data("nb", n, 6, rng)
    obs = pd.DataFrame({"group": g.astype(str)}, index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(6)])
    ad.AnnData(X=sparse.csr_matrix(y), obs=obs, var=var).write_h5ad(tmp_path / "w.h5ad")
    w = rng.uniform(0.0, 2.0, size=(n, 6))
    off = rng.normal(0.0, 0.3, size=(n, 6))
    d = read_backed(tmp_path / "w.h5ad", memory_budget=0)
    assert d.kind == "disk"
    on_disk = bg.fit(d, "~ group", weights=w, offset=off, chunk_size=2)
    in_memory = bg.fit(y, "~ group", obs=obs, weights=w, offset=off)
    _assert_same_fit(on_disk, in_memory, rtol=1e-12)


def test_zero_weights_do_not_count_as_residual_degrees_of_freedom() -> None:
    rng = np.random.default_rng(19)
    g = _groups(4)
    n = g.size
    obs = pd.DataFrame({"group": g.astype(str)})
    y = _data("nb", n, 2, rng)
    w = np.zeros(n)
    w[[0, 4, 8]] = 1.0  # one observation per group: nothing left for the dispersion
    full = bg.fit(y, "~ group", obs=obs, weights=w)
    reduced = bg.fit(y, "~ 1", obs=obs, weights=w)
    with pytest.raises(ValueError, match=r"rank 3 with 3 observations \(0 residual df"):
        bg.de.lrt(full=full, reduced=reduced)


def test_wald_of_separated_weighted_feature_is_the_weighted_lrt() -> None:
    """A group of zeros (its one count has weight 0): the refit keeps the weights."""
    rng = np.random.default_rng(20)
    g = np.repeat([0, 1, 2], 8)
    n = g.size
    x = pd.DataFrame({"a": 1.0, "b": (g == 1) * 1.0, "c": (g == 2) * 1.0})
    y = rng.poisson(6.0, size=(n, 2)).astype(float)
    y[g == 2, 0] = 0.0
    w = rng.uniform(0.3, 2.0, size=n)
    first = int(np.flatnonzero(g == 2)[0])
    y[first, 0], w[first] = 3.0, 0.0
    res = bg.fit(y, x, family="poisson", weights=w)
    assert res.status.iloc[0] == "separated"
    test = bg.de.wald(res, "c")
    assert test.stat_kind is not None and test.stat_kind[0] == "lrt"
    # The supremum of the full likelihood: group c's means at 0, the rest fitted freely.
    keep = g != 2
    fam = sm.families.Poisson()
    sup = sm.GLM(y[keep, 0], x.to_numpy()[keep, :2], family=fam, var_weights=w[keep]).fit()
    red = sm.GLM(y[:, 0], x.to_numpy()[:, :2], family=fam, var_weights=w).fit()
    np.testing.assert_allclose(test.stat[0], 2.0 * (sup.llf - red.llf), rtol=1e-7)


@pytest.mark.parametrize("design_scale", [None, "~ group"])
def test_unit_weights_and_zero_offsets_keep_separation_handling(design_scale) -> None:
    """The weighted paths of the separation checks give the unweighted tests at w = 1."""
    rng = np.random.default_rng(21)
    g = np.repeat([0, 1, 2], 6)
    n = g.size
    obs = pd.DataFrame({"group": np.array(["a", "b", "c"])[g]})
    y = rng.negative_binomial(3, 0.3, size=(n, 4)).astype(float)
    y[g == 2, 0] = 0.0
    y[g == 1, 1] = 0.0
    kw = {"obs": obs, "size_factors": rng.uniform(0.5, 2.0, n)}
    unit = {"weights": np.ones((n, 4)), "offset": np.zeros((n, 4))}
    plain = bg.fit(y, "~ group", design_scale, **kw)
    weighted = bg.fit(y, "~ group", design_scale, **kw, **unit)
    assert list(plain.status[:2]) == ["separated", "separated"]

    def tests(full: bg.FitResult, reduced: bg.FitResult) -> tuple[list, list, set]:
        with warnings.catch_warnings(record=True) as seen:
            # Small samples and scale parameters of all-zero groups warn: both fits must
            # warn alike (the messages are compared below).
            warnings.simplefilter("always")
            out = [bg.de.wald(full, c) for c in ("group[T.b]", "group[T.c]")]
            out.append(bg.de.lrt(full=full, reduced=reduced))
        kinds = [list(t.stat_kind) for t in out if t.stat_kind is not None]
        return [t.pval for t in out], kinds, {str(w.message) for w in seen}

    a = tests(plain, bg.fit(y, "~ 1", design_scale, **kw))
    b = tests(weighted, bg.fit(y, "~ 1", design_scale, **kw, **unit))
    for pa, pb in zip(a[0], b[0], strict=True):
        np.testing.assert_allclose(pa, pb, rtol=1e-8)

    # The small-sample advice differs on purpose: dispersion='map'/'ql' refuse weighted
    # fits, so their warning names only what works (test_small_sample_advice_...).
    def same(msgs: set) -> set:
        return {re.sub(r"; use .*? See ", "; use ... See ", m) for m in msgs}

    assert a[1] == b[1] and same(a[2]) == same(b[2])
    assert any("SmallSample" in m or "residual df" in m for m in a[2])


def test_direct_dispersion_estimation_refuses_weighted_fits():
    rng = np.random.default_rng(11)
    y = rng.negative_binomial(5, 0.5, size=(12, 4)).astype(float)
    x = np.repeat(np.eye(2), 6, axis=0)
    res = bg.fit(y, x, weights=rng.integers(1, 3, size=12).astype(float))
    with pytest.raises(NotImplementedError, match="shrinking dispersions does not support"):
        bg.dispersion.estimate_dispersions(y, res)
    with pytest.raises(NotImplementedError, match="Cox-Reid dispersion estimation does not"):
        bg.dispersion.genewise_dispersions(y, res)


# (family, design_scale): nb with a scale design, and the other families.
SCALE_CASES = [("nb", "~ group"), ("poisson", None), ("normal", None), ("beta", "~ group")]


@pytest.mark.parametrize(("family", "design_scale"), SCALE_CASES)
def test_constant_factor_on_weights_leaves_estimates_unchanged(family, design_scale) -> None:
    """Weights times c: same coefficients, SEs times 1/sqrt(c), loglik times c (any c)."""
    rng = np.random.default_rng(31)
    g = _groups(8)
    n = g.size
    obs = pd.DataFrame({"group": np.array(["a", "b", "c"])[g]})
    y = _data(family, n, 3, rng)
    w = rng.uniform(0.2, 2.5, size=n)
    base = bg.fit(y, "~ group", design_scale, obs=obs, family=family, weights=w)
    assert base.converged.all()
    if family == "poisson":
        x = _design(g)
        for j in range(3):
            ref = sm.GLM(y[:, j], x, family=sm.families.Poisson(), var_weights=w).fit(tol=1e-13)
            np.testing.assert_allclose(base.coef_loc.to_numpy()[j], ref.params, rtol=1e-8)
    # Per feature: a matrix whose columns carry their own factors.
    factors = [1e-12, 1e-6, 1e6, np.array([1e-12, 1.0, 1e6])]
    for c in factors:
        wc = w * c if np.ndim(c) == 0 else w[:, None] * c[None, :]
        res = bg.fit(y, "~ group", design_scale, obs=obs, family=family, weights=wc)
        c_f = np.broadcast_to(c, (3,))
        assert res.converged.all(), c
        for attr in ("coef_loc", "coef_scale"):
            np.testing.assert_allclose(
                getattr(res, attr).to_numpy(), getattr(base, attr).to_numpy(), rtol=0, atol=1e-8
            )
        for attr in ("se_loc", "se_scale"):
            np.testing.assert_allclose(
                getattr(res, attr).to_numpy() * np.sqrt(c_f)[:, None],
                getattr(base, attr).to_numpy(),
                rtol=1e-6,
            )
        np.testing.assert_allclose(res.loglik.to_numpy() / c_f, base.loglik.to_numpy(), rtol=1e-9)


def test_level_with_only_zero_weights_names_the_weights() -> None:
    """Vector weights: a column all-zero on positive weights fails as dropped rows would,
    but the message says that its observations have weight 0 (the column is not zero)."""
    rng = np.random.default_rng(32)
    n = 24
    x = pd.DataFrame(
        {"Intercept": 1.0, "treated": np.repeat([0.0, 1.0], n // 2)},
        index=[f"o{i}" for i in range(n)],
    )
    y = pd.DataFrame(rng.negative_binomial(4, 0.3, (n, 3)), index=x.index)
    w = np.r_[rng.uniform(0.5, 2.0, n // 2), np.zeros(n // 2)]
    with pytest.raises(ValueError, match=r"all zero .*\['treated'\]"):
        bg.fit(y.iloc[: n // 2], x.iloc[: n // 2])
    msg = r"positive weight: every observation with a non-zero value in \['treated'\].*weight 0"
    with pytest.raises(ValueError, match=r"`design_loc` is not identifiable on the .*" + msg):
        bg.fit(y, x, weights=w)
    # The scale design is checked too.
    with pytest.raises(ValueError, match=r"`design_scale` is not identifiable on the .*" + msg):
        bg.fit(y, np.ones((n, 1)), x, weights=w)


def test_per_feature_zero_weight_level_is_unidentifiable_not_converged() -> None:
    """Matrix weights: such features get their own status, NaN tests, and one warning."""
    rng = np.random.default_rng(33)
    g = _groups(8)
    n = g.size
    obs = pd.DataFrame({"group": np.array(["a", "b", "c"])[g]})
    y = _data("nb", n, 6, rng)
    w = rng.uniform(0.5, 2.0, size=(n, 6))
    w[g == 1, 1] = 0.0  # level b unseen by feature 1 (location design)
    w[g == 2, 4] = 0.0  # level c unseen by feature 4 (location and scale designs)
    with pytest.warns(bg.UnidentifiableWarning, match=r"2 of 6 features \('feature1', 'feature4'"):
        res = bg.fit(y, "~ group", obs=obs, weights=w)
    status = res.status.to_numpy().astype(str)
    assert list(status) == ["converged"] + ["unidentifiable"] + ["converged"] * 2 + [
        "unidentifiable",
        "converged",
    ]
    bad = np.array([1, 4])
    ok = np.setdiff1d(np.arange(6), bad)
    assert np.isnan(res.coef_loc.to_numpy()[bad]).all() and not res.converged.iloc[bad].any()
    # The other features are the fits of those features alone.
    alone = bg.fit(y[:, ok], "~ group", obs=obs, weights=w[:, ok])
    np.testing.assert_allclose(res.coef_loc.to_numpy()[ok], alone.coef_loc.to_numpy(), rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)
        wald = bg.de.wald(res, "group[T.b]").summary()
        lrt = bg.de.lrt(full=res, reduced=bg.fit(y, "~ 1", obs=obs, weights=w)).summary()
    for table in (wald, lrt):
        assert table.pvalue.iloc[bad].isna().all() and table.padj.iloc[bad].isna().all()
        assert list(table.status.iloc[bad]) == ["unidentifiable"] * 2
        # Benjamini-Hochberg over the 4 tested features only.
        p = table.pvalue.to_numpy()[ok]
        np.testing.assert_allclose(
            table.padj.to_numpy()[ok], stats.false_discovery_control(p), rtol=1e-12
        )
    # A scale design that loses a level is unidentifiable too.
    w2 = np.ones((n, 2))
    w2[g == 2, 0] = 0.0
    with pytest.warns(bg.UnidentifiableWarning, match=r"'feature0'"):
        res2 = bg.fit(y[:, :2], "~ 1", "~ group", obs=obs, weights=w2)
    assert list(res2.status.astype(str)) == ["unidentifiable", "converged"]


def test_base_mean_with_integer_weights_is_that_of_duplicated_rows() -> None:
    rng = np.random.default_rng(34)
    g = _groups(8)
    n = g.size
    obs = pd.DataFrame({"group": np.array(["a", "b", "c"])[g]}, index=[f"o{i}" for i in range(n)])
    y = _data("nb", n, 5, rng)
    sf = rng.uniform(0.5, 2.0, n)
    w = rng.integers(0, 4, n)
    w[:3] = [0, 1, 3]
    idx = np.repeat(np.arange(n), w)
    obs_d = obs.iloc[idx].reset_index(drop=True)
    weighted = bg.fit(y, "~ group", obs=obs, weights=w, size_factors=sf)
    dup = bg.fit(y[idx], "~ group", obs=obs_d, size_factors=sf[idx])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)
        a = bg.de.wald(weighted, "group[T.b]").summary()
    b = bg.de.wald(dup, "group[T.b]").summary()
    np.testing.assert_allclose(a.baseMean.to_numpy(), b.baseMean.to_numpy(), rtol=1e-9)
    # Per-feature weights: each feature's own weighted mean.
    wm = np.column_stack([w] * 5).astype(float)
    wm[:, 0] = np.where(g == 0, 2.0, 1.0)
    resm = bg.fit(y, "~ group", obs=obs, weights=wm, size_factors=sf)
    means = resm.fitted().to_numpy() / sf[:, None]
    np.testing.assert_allclose(
        bg.de.result.base_mean(resm), (wm * means).sum(0) / wm.sum(0), rtol=1e-12
    )


def test_small_sample_advice_for_weighted_fits_names_only_what_works() -> None:
    rng = np.random.default_rng(35)
    g = _groups(5, 2)
    obs = pd.DataFrame({"group": g.astype(str)})
    y = _data("nb", g.size, 3, rng)
    for kw in ({"weights": rng.uniform(0.5, 1.5, g.size)}, {"offset": rng.normal(0, 0.1, g.size)}):
        res = bg.fit(y, "~ group", obs=obs, **kw)
        with pytest.warns(bg.de.SmallSampleWarning, match=r"use more observations") as seen:
            bg.de.wald(res, "group[T.1]")
        assert all("use dispersion='map'" not in str(m.message) for m in seen)
    plain = bg.fit(y, "~ group", obs=obs)
    with pytest.warns(bg.de.SmallSampleWarning, match=r"use dispersion='map' \(DESeq2\)"):
        bg.de.wald(plain, "group[T.1]")


def test_lfc_shrink_refuses_weighted_and_offset_fits_with_what_to_do() -> None:
    rng = np.random.default_rng(36)
    g = _groups(12, 2)
    obs = pd.DataFrame({"group": g.astype(str)})
    y = _data("nb", g.size, 4, rng)
    for kw in ({"weights": rng.uniform(0.5, 1.5, g.size)}, {"offset": rng.normal(0, 0.1, g.size)}):
        res = bg.fit(y, "~ group", obs=obs, **kw)
        for disp in ("map", "mle"):
            with pytest.raises(
                NotImplementedError,
                match=r"`lfc_shrink` does not support fits made with `weights` or `offset`.*"
                r"unshrunken fold changes of bg.de.wald",
            ):
                bg.de.lfc_shrink(res, "group[T.1]", data=y, dispersion=disp)
