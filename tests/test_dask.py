"""Dask arrays: same result as in memory, on a real multi-process cluster, surviving a
worker that dies mid-fit."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

import batchglm as bg

from conftest import seed_example_1

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def data():
    dmat, cons = seed_example_1(400)
    sim = bg.simulate(
        dmat, dmat, n_features=60, constraints_loc=cons, constraints_scale=cons, seed=21
    )
    y = sim.data.copy()
    y[:, 7] = 0  # an all-zero feature travels too
    ref = bg.fit(y, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    return dmat, cons, y, ref


def _same(res, ref):
    np.testing.assert_array_equal(res.status.astype(str), ref.status.astype(str))
    np.testing.assert_allclose(res.loglik.to_numpy(), ref.loglik.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        res.coef_loc.to_numpy(), ref.coef_loc.to_numpy(), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(res.se_scale.to_numpy(), ref.se_scale.to_numpy(), rtol=1e-7)


def test_threaded_scheduler_matches_in_memory(data):
    dmat, cons, y, ref = data
    arr = da.from_array(y, chunks=(100, 16))  # chunked along observations too
    res = bg.fit(arr, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    _same(res, ref)


def test_sparse_chunks_match_in_memory(data):
    dmat, cons, y, ref = data
    arr = da.from_array(y, chunks=(400, 16)).map_blocks(sp.csr_matrix, dtype=y.dtype)
    res = bg.fit(arr, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    _same(res, ref)


def test_invalid_values_name_global_positions(data):
    dmat, cons, y, _ = data
    bad = y.copy()
    bad[5, 37] = -3
    arr = da.from_array(bad, chunks=(400, 16))
    with pytest.raises(ValueError, match=r"observation 5, feature 37"):
        bg.fit(arr, dmat, dmat, constraints_loc=cons, constraints_scale=cons)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        ) as lc,
        distributed.Client(lc) as client,
    ):
        yield lc, client


def test_local_cluster_matches_in_memory(data, cluster):
    dmat, cons, y, ref = data
    res = bg.fit(
        da.from_array(y, chunks=(400, 8)), dmat, dmat, constraints_loc=cons, constraints_scale=cons
    )
    _same(res, ref)


def test_worker_killed_mid_fit_does_not_change_the_result(cluster):
    _, client = cluster
    dmat, cons = seed_example_1(4000)
    sim = bg.simulate(
        dmat, dmat, n_features=240, constraints_loc=cons, constraints_scale=cons, seed=5
    )
    ref = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    arr = da.from_array(sim.data, chunks=(4000, 8))
    out: dict[str, object] = {}

    def run() -> None:
        out["res"] = bg.fit(arr, dmat, dmat, constraints_loc=cons, constraints_scale=cons)

    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    deadline = time.time() + 60
    while victim is None and time.time() < deadline:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            victim = busy[0]
        else:
            time.sleep(0.01)
    assert victim is not None, "no task started"
    # The worker process dies abruptly (SIGKILL); its nanny starts a new one and the
    # scheduler reassigns the lost tasks.
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert pid not in client.run(os.getpid).values()  # the worker really died
    _same(out["res"], ref)
