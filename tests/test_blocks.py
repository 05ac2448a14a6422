"""One feature-block rule and one parallel map: the fit, size factors and pseudobulk give the
same numbers on one thread, many threads and dask tasks, and match independent references."""

from __future__ import annotations

import threading

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm import blocks
from batchglm.size_factors import size_factors

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(7)
    n, f = 240, 130
    mu = np.exp(rng.normal(1.0, 1.0, f))[None, :] * rng.uniform(0.5, 2.0, n)[:, None]
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float64)
    y[:, :40] += 1  # features without zeros, for median_ratio
    return y


def test_block_size_rule():
    assert blocks.block_size(1000) == blocks.BLOCK_BYTES // 8000
    assert blocks.block_size(10**7) == blocks.MIN_BLOCK
    assert blocks.block_size(10, chunk_size=3) == 3
    with pytest.raises(ValueError, match=r"`chunk_size` must be at least 1, but 0 was given"):
        blocks.block_size(10, chunk_size=0)
    with pytest.raises(ValueError, match=r"`n_jobs` must be at least 1, but 0 was given"):
        blocks.n_workers(0)
    sl = blocks.feature_blocks(23, 5)
    assert [(s.start, s.stop) for s in sl] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]


def test_map_blocks_keeps_order_and_raises_the_earliest_failure():
    spans = blocks.feature_blocks(100, 7)
    seen = []
    lock = threading.Lock()

    def f(sl):
        with lock:
            seen.append(sl.start)
        return sl.start * 2

    assert blocks.map_blocks(f, spans, n_jobs=4) == [s.start * 2 for s in spans]
    assert sorted(seen) == [s.start for s in spans]

    def bad(sl):
        if sl.start >= 14:
            raise ValueError(f"block {sl.start}")
        return 0

    with pytest.raises(ValueError, match=r"^block 14$"):
        blocks.map_blocks(bad, spans, n_jobs=1)
    with pytest.raises(ValueError, match=r"^block \d+$"):
        blocks.map_blocks(bad, spans, n_jobs=3)


def _median_ratio_reference(y):
    # DESeq2's estimateSizeFactors, written out: geometric means over features with no zero.
    keep = (y > 0).all(axis=0)
    log_gm = np.log(y[:, keep]).mean(axis=0)
    return np.exp(np.median(np.log(y[:, keep]) - log_gm, axis=1))


def _poscounts_reference(y):
    logs = np.log(np.where(y > 0, y, 1.0))
    log_gm = logs.sum(axis=0) / y.shape[0]
    keep = (y > 0).any(axis=0)
    out = np.empty(y.shape[0])
    for i in range(y.shape[0]):
        pos = (y[i] > 0) & keep
        out[i] = np.exp(np.median(logs[i, pos] - log_gm[pos]))
    return out / np.exp(np.mean(np.log(out)))


@pytest.mark.parametrize("method", ["median_ratio", "poscounts", "normed_sum"])
def test_size_factors_threads_dask_and_serial_agree(counts, method):
    y = counts
    ref = {
        "median_ratio": _median_ratio_reference,
        "poscounts": _poscounts_reference,
        "normed_sum": lambda v: v.sum(axis=1) / v.sum(axis=1).mean(),
    }[method](y)
    serial = size_factors(y, method, n_jobs=1)
    np.testing.assert_allclose(serial, ref, rtol=1e-12)
    inputs = [y, sp.csr_array(y), da.from_array(y, chunks=(60, 17))]
    for data in inputs:
        for jobs in (1, 4):
            np.testing.assert_array_equal(size_factors(data, method, n_jobs=jobs), serial)


def test_size_factor_errors_name_the_problem(counts):
    y = counts.copy()
    y[3, 50] = -1
    with pytest.raises(ValueError, match=r"finite, non-negative counts"):
        size_factors(sp.csc_array(y), "normed_sum", n_jobs=2)


def test_pseudobulk_parallel_matches_groupby_sum(counts):
    rng = np.random.default_rng(3)
    obs = pd.DataFrame(
        {
            "donor": rng.choice(["d1", "d2", "d3", "d4"], counts.shape[0]),
            "cell_type": rng.choice(["T", "B"], counts.shape[0]),
        },
        index=[f"c{i}" for i in range(counts.shape[0])],
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(counts.shape[1])])
    ref = pd.DataFrame(counts, index=obs.index).groupby([obs["donor"], obs["cell_type"]]).sum()
    ref.index = ["_".join(t) for t in ref.index]
    for x in (counts, sp.csr_matrix(counts)):
        adata = ad.AnnData(X=x, obs=obs, var=var)
        one = bg.pseudobulk(adata, "donor", "cell_type", n_jobs=1)
        many = bg.pseudobulk(adata, "donor", "cell_type", n_jobs=4)
        np.testing.assert_array_equal(one.X, many.X)
        np.testing.assert_array_equal(one.X, ref.loc[one.obs_names].to_numpy())


def test_fit_threads_and_blocks_do_not_change_the_result(counts):
    design = np.column_stack([np.ones(counts.shape[0]), np.arange(counts.shape[0]) % 2])
    one = bg.fit(counts, design, n_jobs=1, chunk_size=13)
    many = bg.fit(sp.csr_array(counts), design, n_jobs=3)
    np.testing.assert_allclose(
        many.coef_loc.to_numpy(), one.coef_loc.to_numpy(), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(many.loglik.to_numpy(), one.loglik.to_numpy(), rtol=1e-12)


def test_progress_bar_is_drawn_when_asked(counts, capsys):
    size_factors(counts, "normed_sum", progress=True)
    assert "batchglm.size_factors" in capsys.readouterr().err
    size_factors(counts, "normed_sum", progress=False)
    assert "batchglm.size_factors" not in capsys.readouterr().err


def test_fold_blocks_combines_in_block_order():
    spans = blocks.feature_blocks(50, 3)
    for jobs in (1, 3):
        out = blocks.fold_blocks(lambda sl: [sl.start], spans, lambda a, r: a + r, [], n_jobs=jobs)
        assert out == [s.start for s in spans]
    arr = da.from_array(np.arange(40.0).reshape(4, 10), chunks=(2, 4))
    out = blocks.fold_dask_blocks(
        lambda chunk, sl: [(sl.start, float(chunk.sum()))], arr, 3, lambda a, r: a + r, []
    )
    assert out == [(0, 192.0), (3, 228.0), (6, 264.0), (9, 96.0)]


def test_single_threaded_blas_limits_every_blas_and_keeps_its_scan():
    from threadpoolctl import threadpool_info

    from batchglm import blocks

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with blocks.single_threaded_blas():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        first = blocks._CONTROLLER
    assert inside == [1] * len(before)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before
    with blocks.single_threaded_blas():
        assert blocks._CONTROLLER is first  # no new scan without new imports
