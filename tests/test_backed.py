"""Matrices on disk (backed .h5ad, zarr; CSR, CSC, dense; .X or a layer) are fitted without
being read whole, with the same result as the in-memory fit and as a dask cluster fit."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import optimize, stats

import batchglm as bg
from batchglm import backed
from batchglm.anndata_io import read_backed
from batchglm.inputs import as_data


def _counts(n, f, seed, density=0.4):
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n)
    effect = np.array([0.0, 0.7, -0.5])[pd.Categorical(group, ["a", "b", "c"]).codes]
    mu = np.exp(rng.normal(1.5, 0.8, f))[None, :] * np.exp(effect)[:, None]
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu)).astype(np.float32)
    y[rng.random((n, f)) > density] = 0
    obs = pd.DataFrame({"group": group}, index=[f"cell{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(f)])
    return y, obs, var


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    y, obs, var = _counts(400, 37, seed=11)
    adata = ad.AnnData(
        X=sp.csr_matrix(y), obs=obs, var=var, layers={"csc": sp.csc_matrix(y), "dense": y.copy()}
    )
    root = tmp_path_factory.mktemp("backed")
    adata.write_h5ad(root / "cells.h5ad")
    adata.write_zarr(root / "cells.zarr")
    ref = bg.fit(y.astype(np.float64), "~ group", obs=obs, size_factors="poscounts", n_jobs=1)
    return root, y, obs, ref


def _same(res, ref):
    np.testing.assert_array_equal(res.status.astype(str), ref.status.astype(str))
    np.testing.assert_allclose(
        res.coef_loc.to_numpy(), ref.coef_loc.to_numpy(), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(res.se_loc.to_numpy(), ref.se_loc.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-12)


def test_reference_fit_is_the_nb_maximum(files):
    # The in-memory fit that the on-disk fits are compared with, checked on one feature
    # against scipy.optimize on the same NB likelihood with the same size factors.
    _, y, obs, ref = files
    j = 5
    x = np.column_stack([np.ones(len(obs)), obs["group"] == "b", obs["group"] == "c"]).astype(float)
    off = np.log(ref.size_factors)

    def nll(p):
        mu = np.exp(x @ p[:3] + off)
        r = np.exp(p[3])
        return -stats.nbinom.logpmf(y[:, j].astype(float), r, r / (r + mu)).sum()

    ours = np.r_[ref.coef_loc.to_numpy()[j], ref.coef_scale.to_numpy()[j]]
    assert -nll(ours) == pytest.approx(ref.loglik.iloc[j], abs=1e-8)
    # A maximum: zero gradient, and an independent optimiser finds nothing higher.
    grad = optimize.approx_fprime(ours, nll, 1e-6)
    assert np.abs(grad).max() < 1e-3
    start = np.r_[np.log(y[:, j].astype(float).mean() + 0.1), 0.0, 0.0, 0.0]
    best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-6})
    assert -best.fun <= ref.loglik.iloc[j] + 1e-8
    assert -best.fun == pytest.approx(ref.loglik.iloc[j], abs=0.05)


@pytest.mark.parametrize("store", ["cells.h5ad", "cells.zarr"])
@pytest.mark.parametrize("layer", [None, "csc", "dense"])
@pytest.mark.parametrize("budget", [None, 0])
def test_on_disk_fit_equals_in_memory_fit(files, store, layer, budget):
    root, _, _, ref = files
    d = read_backed(root / store, layer, memory_budget=budget)
    assert d.kind == ("disk" if budget == 0 else ("dense" if layer == "dense" else "sparse"))
    res = bg.fit(d, "~ group", size_factors="poscounts", n_jobs=2)
    _same(res, ref)
    assert list(res.feature_names) == [f"gene{j}" for j in range(37)]


def test_backed_anndata_and_path_input(files):
    root, _, _, ref = files
    adata = ad.read_h5ad(root / "cells.h5ad", backed="r")
    _same(bg.fit(adata, "~ group", size_factors="poscounts"), ref)
    _same(bg.fit(str(root / "cells.zarr"), "~ group", size_factors="poscounts"), ref)
    # An AnnData whose .X is an on-disk sparse dataset (here from zarr).
    import zarr

    group = zarr.open_group(str(root / "cells.zarr"), mode="r")
    lazy = ad.AnnData(
        X=ad.io.sparse_dataset(group["X"]), obs=adata.obs.copy(), var=adata.var.copy()
    )
    _same(bg.fit(lazy, "~ group", size_factors="poscounts"), ref)


def test_disk_store_reorders_like_memory(files):
    root, y, _, _ = files
    d = read_backed(root / "cells.h5ad", memory_budget=0)
    rows = np.random.default_rng(0).permutation(y.shape[0])
    cols = np.array([30, 2, 17, 2, 36])
    moved = d.reorder(rows, cols)
    assert moved.shape == (len(rows), len(cols))
    np.testing.assert_array_equal(moved.block(slice(0, 5)), y[np.ix_(rows, cols)])
    np.testing.assert_array_equal(moved.obs_names, d.obs_names[rows])


def test_dask_cluster_on_the_same_file_matches(files):
    distributed = pytest.importorskip("distributed")
    from anndata.experimental import read_elem_lazy

    root, _, _, ref = files
    with h5py.File(root / "cells.h5ad", "r") as fh:
        arr = read_elem_lazy(fh["X"], chunks=(100, -1))  # CSR row blocks from the file
        obs = ad.io.read_elem(fh["obs"])
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=False,
                dashboard_address=None,
                silence_logs=40,
            ) as lc,
            distributed.Client(lc),
        ):
            sf = bg.size_factors(arr, "poscounts")
            res = bg.fit(arr, "~ group", obs=obs, size_factors=sf)
    np.testing.assert_allclose(sf, ref.size_factors, rtol=1e-12)
    _same(res, ref)


def test_whole_matrix_is_never_read(files, monkeypatch):
    # Spy on the on-disk dataset: every read is a row block (or, for CSC, a feature block)
    # well below the whole matrix.
    root, _, _, ref = files
    # Small blocks, so this small file has many: 256 entries per row block, 8 features per
    # feature block.
    monkeypatch.setattr(backed, "MIN_ROW_BLOCK_ENTRIES", 256)
    monkeypatch.setattr(bg.blocks, "BLOCK_BYTES", 8 * 400 * 8)
    reads = []
    with h5py.File(root / "cells.h5ad", "r") as fh:
        classes = {type(ad.io.sparse_dataset(fh[k])) for k in ("X", "layers/csc")}
    for cls in classes:
        original = cls.__getitem__

        def spy(self, key, original=original):
            out = original(self, key)
            reads.append(out.shape)
            return out

        monkeypatch.setattr(cls, "__getitem__", spy)
    for layer in (None, "csc"):
        reads.clear()
        d = read_backed(root / "cells.h5ad", layer, memory_budget=0)
        _same(bg.fit(d, "~ group", size_factors="poscounts"), ref)
        assert len(reads) > 2
        assert max(r[0] * r[1] for r in reads) <= 400 * 37 // 2


def test_peak_memory_stays_below_the_csr_matrix(tmp_path):
    y, obs, var = _counts(16_000, 200, seed=2, density=0.1)
    csr = sp.csr_matrix(y)
    csr_bytes = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    ad.AnnData(X=csr, obs=obs, var=var).write_h5ad(tmp_path / "big.h5ad")
    del csr
    with h5py.File(tmp_path / "big.h5ad", "r") as fh:
        matrix = ad.io.sparse_dataset(fh["X"])
        tracemalloc.start()
        try:
            store = backed.feature_blocked(matrix, memory_budget=0, tmp_dir=tmp_path)
            d = bg.data.Data(store, var.index, obs.index)
            totals = np.zeros(d.shape[0])
            for sl in bg.blocks.feature_blocks(d.shape[1], bg.blocks.block_size(d.shape[0])):
                totals += d.stored_block(sl).sum(axis=1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    np.testing.assert_allclose(totals, y.sum(axis=1, dtype=np.float64))
    # Relayout plus one pass over all feature blocks: below the CSR matrix (measured about
    # half of it here; the share falls as the number of feature blocks grows).
    assert peak < csr_bytes, (peak, csr_bytes)
    assert store.nbytes_on_disk > 0


def test_errors_name_what_must_hold(tmp_path, files):
    root, *_ = files
    with pytest.raises(ValueError, match=r"must be an existing \.h5ad file or \.zarr store"):
        read_backed(tmp_path / "missing.h5ad")
    with pytest.raises(ValueError, match=r"`layer` 'nope' is not in .*its layers are \["):
        read_backed(root / "cells.h5ad", "nope")
    with h5py.File(root / "cells.h5ad", "r") as fh:
        with pytest.raises(ValueError, match=r"`memory_budget` must be at least 0 bytes"):
            backed.feature_blocked(ad.io.sparse_dataset(fh["X"]), memory_budget=-1)
    d = read_backed(root / "cells.h5ad", memory_budget=0)
    with pytest.raises(IndexError, match=r"indexed as store\[:, features\]"):
        d.values[3]
    assert as_data(d) is d


def test_views_keep_the_files_and_the_store_refuses_to_densify(files):
    root, y, _, _ = files
    d = read_backed(root / "cells.h5ad", memory_budget=0)
    view = d.reorder(None, np.arange(36, -1, -1)).values
    directory = d.values.directory
    del d
    import gc

    gc.collect()
    assert directory.exists()
    np.testing.assert_array_equal(view[:, [0]].toarray()[:, 0], y[:, 36])
    with pytest.raises(TypeError, match=r"keeps a 400 x 37 matrix on disk"):
        np.asarray(view)
    del view
    gc.collect()
    assert not directory.exists()


def test_pseudobulk_and_size_factors_of_a_backed_file(files):
    root, y, obs, ref = files
    adata = ad.read_h5ad(root / "cells.h5ad", backed="r")
    adata.obs["donor"] = [f"d{i % 5}" for i in range(adata.n_obs)]
    pb = bg.pseudobulk(adata, "donor", "group", n_jobs=2)
    expect = (
        pd.DataFrame(y.astype(np.float64))
        .groupby([adata.obs["donor"].to_numpy(), obs["group"].to_numpy()])
        .sum()
    )
    expect.index = ["_".join(t) for t in expect.index]
    np.testing.assert_array_equal(pb.X, expect.loc[pb.obs_names].to_numpy())
    d = read_backed(root / "cells.zarr", memory_budget=0)
    np.testing.assert_allclose(bg.size_factors(d, "poscounts"), ref.size_factors, rtol=1e-12)


def test_relayout_progress_bar_and_shape_error(files, capsys, tmp_path):
    root, *_ = files
    read_backed(root / "cells.h5ad", memory_budget=0, progress=True)
    assert "batchglm.read" in capsys.readouterr().err
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh["v"] = np.arange(5.0)
        with pytest.raises(ValueError, match=r"must be 2-D \(n_obs, n_features\), but it has 1"):
            backed.feature_blocked(fh["v"])
