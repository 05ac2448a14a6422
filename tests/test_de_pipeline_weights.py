"""``bg.de.test(..., weights=, offset=)``: duplicated rows and size factors as references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.size_factors import size_factors as named_size_factors

# Per-gene ML dispersions with 14 residual df: the small-sample warning is tested elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

COLUMNS = ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    n, g = 16, 60
    obs = pd.DataFrame(
        {"c": np.repeat(["a", "b"], n // 2), "b": np.tile(["x", "y"], n // 2)},
        index=[f"s{i}" for i in range(n)],
    )
    sf = rng.uniform(0.5, 2.0, n)
    lfc = np.where(np.arange(g) < 20, rng.normal(0, 1.5, g), 0.0)
    mu = sf[:, None] * np.exp(rng.uniform(0, 6, g))[None, :] * np.exp(np.outer(obs.c == "b", lfc))
    y = pd.DataFrame(
        rng.negative_binomial(4, 4 / (4 + mu)),
        index=obs.index,
        columns=[f"g{i}" for i in range(g)],
    )
    return y, obs, sf


def _duplicated(y: pd.DataFrame, obs: pd.DataFrame, w: np.ndarray):
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    names = [f"d{i}" for i in range(idx.size)]
    yd, od = y.iloc[idx].copy(), obs.iloc[idx].copy()
    yd.index = od.index = names
    return yd, od, idx


@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_integer_weights_are_duplicated_rows(table, method: str) -> None:
    y, obs, _ = table
    w = np.random.default_rng(2).integers(1, 4, len(y)).astype(float)
    sf = named_size_factors(y.to_numpy(dtype=float), "median_ratio")
    kw = {"coef": "c[T.b]"} if method == "wald" else {"reduced": "~ b"}
    common = dict(method=method, dispersion="mle", cooks_cutoff=None, **kw)
    # weights as an obs column, matched by name
    got = bg.de.test(
        y, "~ b + c", obs=obs.assign(w=w), weights="w", size_factors=sf, **common
    ).summary()
    yd, od, idx = _duplicated(y, obs, w)
    want = bg.de.test(yd, "~ b + c", obs=od, size_factors=sf[idx], **common).summary()
    for col in COLUMNS if method == "wald" else ["baseMean", "stat", "pvalue", "padj"]:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-7, atol=1e-12, err_msg=col)
    assert got["padj"].notna().sum() == want["padj"].notna().sum()


@pytest.mark.parametrize("method", ["wald", "ql"])
def test_offset_per_observation_is_size_factors(table, method: str) -> None:
    """MAP or QL dispersions, Cook's distances and filtering: the same table."""
    y, obs, sf = table
    y = y.copy()
    y.iloc[3, 5] = 5000  # an outlier for Cook's
    want = bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, size_factors=sf, method=method)
    got = bg.de.test(
        y, "~ c", coef="c[T.b]", obs=obs, offset=pd.Series(np.log(sf), obs.index), method=method
    )
    pd.testing.assert_frame_equal(got.summary(), want.summary())
    if method == "ql":
        return
    assert want.replaced[5] and want.replaced.sum() >= 1  # the replacement and refit ran
    # an offset and explicit size factors multiply
    half = bg.de.test(
        y, "~ c", coef="c[T.b]", obs=obs, size_factors=sf / 2, offset=np.full(len(y), np.log(2))
    )
    pd.testing.assert_frame_equal(half.summary(), want.summary(), rtol=1e-9)


def test_offset_matrix_is_its_normalisation(table) -> None:
    y, obs, sf = table
    off = np.log(sf)[:, None] * np.ones(y.shape[1])
    args = dict(coef="c[T.b]", obs=obs, dispersion="mle", cooks_cutoff=None)
    got = bg.de.test(y, "~ c", offset=off, **args).summary()
    want = bg.de.test(y, "~ c", size_factors=sf, **args).summary()
    for col in COLUMNS:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-7, atol=1e-12, err_msg=col)


def test_weighted_base_mean_sparse_and_dense() -> None:
    from scipy import sparse

    from batchglm.de.pipeline_weights import weighted_base_mean

    y = np.array([[0.0, 4.0], [2.0, 0.0], [6.0, 8.0]])
    sf = np.array([1.0, 2.0, 0.5])
    w = np.array([1.0, 3.0, 2.0])
    off = np.log(np.array([[1.0, 2.0], [1.0, 1.0], [2.0, 1.0]]))
    want = ((y / sf[:, None] / np.exp(off)) * w[:, None]).sum(0) / w.sum()
    for values in (y, sparse.csr_matrix(y)):
        np.testing.assert_allclose(weighted_base_mean(values, sf, w, off), want, rtol=1e-14)


def test_refusals(table) -> None:
    y, obs, sf = table
    w = np.full(len(y), 2.0)
    with pytest.raises(NotImplementedError, match=r"needs dispersion='mle'.*'map' was given"):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, weights=w, cooks_cutoff=None)
    # method='ql' without a dispersion: the message names method='ql', not a dispersion
    with pytest.raises(
        NotImplementedError,
        match=r"needs method 'wald' or 'lrt' with dispersion='mle' .*but method='ql' was given",
    ):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, weights=w, method="ql")
    with pytest.raises(ValueError, match=r"unweighted counts.*cooks_cutoff=None"):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, weights=w, dispersion="mle")
    off = np.zeros(y.shape)
    with pytest.raises(NotImplementedError, match="an `offset` per observation and feature"):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, offset=off, cooks_cutoff=None)
    with pytest.raises(ValueError, match="one normalisation factor per observation"):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, offset=off, dispersion="mle")
    with pytest.raises(ValueError, match="`weights` must be non-negative"):
        bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, weights=-w, dispersion="mle")
    # unit weights keep Cook's distances (nothing is weighted)
    ones = bg.de.test(
        y, "~ c", coef="c[T.b]", obs=obs, weights=np.ones(len(y)), dispersion="mle"
    ).summary()
    plain = bg.de.test(y, "~ c", coef="c[T.b]", obs=obs, dispersion="mle").summary()
    np.testing.assert_allclose(ones["pvalue"], plain["pvalue"], rtol=1e-9)
    np.testing.assert_allclose(ones["maxCooks"], plain["maxCooks"], rtol=1e-9)


@pytest.mark.parametrize("sf_method", ["default", "poscounts"])
def test_integer_weights_with_estimated_size_factors_are_duplicated_rows(table, sf_method) -> None:
    # Size factors estimated by the pipeline: the weighted estimator on the original rows
    # must give the unweighted estimator's table on the duplicated rows.
    y, obs, _ = table
    y = y.copy()
    y.iloc[::5, ::3] = 0  # zeros, so poscounts differs from median_ratio
    w = np.random.default_rng(5).integers(1, 4, len(y)).astype(float)
    common = dict(coef="c[T.b]", dispersion="mle", cooks_cutoff=None, size_factors=sf_method)
    got = bg.de.test(y, "~ b + c", obs=obs, weights=w, **common).summary()
    yd, od, _ = _duplicated(y, obs, w)
    want = bg.de.test(yd, "~ b + c", obs=od, **common).summary()
    for col in COLUMNS:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-8, atol=1e-12, err_msg=col)


def test_weight_zero_sample_does_not_shape_the_size_factors(table) -> None:
    # A weight-0 sample equals dropping it, also for the estimated (median-ratio) factors.
    y, obs, _ = table
    y = y.copy()
    y.iloc[4] = y.iloc[4] * 9  # an odd library: it would pull the geometric means
    w = np.ones(len(y))
    w[4] = 0.0
    common = dict(coef="c[T.b]", dispersion="mle", cooks_cutoff=None)
    got = bg.de.test(y, "~ b + c", obs=obs, weights=w, **common).summary()
    keep = np.arange(len(y)) != 4
    want = bg.de.test(y[keep], "~ b + c", obs=obs[keep], **common).summary()
    for col in COLUMNS:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-8, atol=1e-12, err_msg=col)


def test_tmm_with_weights_is_refused(table) -> None:
    y, obs, _ = table
    w = np.full(len(y), 2.0)
    with pytest.raises(ValueError, match="'tmm' cannot honour `weights` other than 1"):
        bg.de.test(
            y,
            "~ c",
            obs=obs,
            weights=w,
            size_factors="tmm",
            coef="c[T.b]",
            dispersion="mle",
            cooks_cutoff=None,
        )


def test_condition_with_only_zero_weights_names_the_weights(table) -> None:
    y, obs, sf = table
    w = np.where(obs["c"] == "b", 0.0, 1.0)
    with pytest.raises(
        ValueError,
        match=r"`design_loc` is not identifiable on the observations of positive weight: every "
        r"observation with a non-zero value in \['c\[T\.b\]'\] .*has weight 0",
    ):
        bg.de.test(
            y,
            "~ c",
            obs=obs,
            weights=w,
            size_factors=sf,
            coef="c[T.b]",
            dispersion="mle",
            cooks_cutoff=None,
        )
