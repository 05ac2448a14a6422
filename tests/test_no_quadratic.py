"""Design checks cost O(n_obs k^2), not O(n_obs^2), and decide rank independently of units.

The large fit runs in a subprocess whose address space is capped: an ``n_obs x n_obs``
float64 array for 300,000 observations needs 670 GiB, so any such allocation fails there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchglm.design import build_design

SRC = str(Path(__file__).resolve().parents[1] / "src")

_LARGE_FIT = textwrap.dedent(
    """
    import json, resource, sys
    limit = 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np, pandas as pd
    import batchglm as bg

    rng = np.random.default_rng(11)
    n, slope, size = 300_000, 0.25, 4.0
    # A continuous covariate on a raw scale: every design row is distinct.
    depth = rng.normal(size=n) * 1e4
    mu = np.exp(1.5 + slope * depth[:, None] / 1e4)
    y = rng.negative_binomial(size, size / (size + mu), size=(n, 2))
    res = bg.fit(y, "~ 1 + depth", obs=pd.DataFrame({"depth": depth}), n_jobs=1)
    print(json.dumps({
        "slope": (res.coef_loc["depth"].to_numpy() * 1e4).tolist(),
        "se": (res.se_loc["depth"].to_numpy() * 1e4).tolist(),
        "log_size": res.coef_scale["Intercept"].to_numpy().tolist(),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    """
)


def test_large_continuous_design_fits_in_bounded_memory():
    env = {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _LARGE_FIT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    slope, se = np.array(out["slope"]), np.array(out["se"])
    # The data-generating slope (0.25 per 1e4) and size (log 4), within sampling error.
    assert np.all(se > 0) and np.all(se < 0.01)
    assert np.all(np.abs(slope - 0.25) < 5 * se)
    np.testing.assert_allclose(out["log_size"], np.log(4.0), atol=0.1)


@pytest.mark.parametrize("scale", [1e-12, 1e-8, 1.0, 1e8, 1e14])
def test_rank_decision_does_not_depend_on_units(scale):
    rng = np.random.default_rng(3)
    n = 40
    x = pd.DataFrame(
        {
            "Intercept": 1.0,
            "treated": np.repeat([0.0, 1.0], n // 2),
            "depth": rng.normal(size=n) * scale,
        }
    )
    d = build_design(x, None, n, "loc")
    assert d.n_free == 3


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_collinear_column_is_found_and_named_at_any_scale(scale):
    rng = np.random.default_rng(4)
    n = 30
    a, b = rng.normal(size=n), rng.normal(size=n)
    x = pd.DataFrame(
        {
            "Intercept": 1.0,
            "a": a * scale,
            "other": rng.normal(size=n),
            "b": b / scale,
            "a_plus_b": 2.0 * a + 3.0 * b,  # in units of its own
        }
    )
    with pytest.raises(
        ValueError,
        match=r"rank 4 for 5 free parameters \(1 too many\)\. These "
        r"columns are confounded: \['a', 'b', 'a_plus_b'\]\.",
    ):
        build_design(x, None, n, "loc")


def test_all_zero_column_is_named_as_such():
    rng = np.random.default_rng(6)
    n = 20
    x = np.column_stack([np.ones(n), rng.normal(size=n), np.zeros(n)])
    with pytest.raises(ValueError, match=r"These columns are all zero .*: \['p2'\]; drop them\.$"):
        build_design(x, None, n, "loc")


def test_rank_check_through_constraints_names_the_full_columns():
    # Two batches nested in one condition level each, without constraints: confounded; a
    # sum-to-zero row per condition identifies them (the matrix form of {"batch": "cond"}).
    n = 16
    cond = np.repeat([0.0, 1.0], n // 2)
    b = np.repeat(np.eye(4), n // 4, axis=0)
    x = pd.DataFrame(
        np.column_stack([np.ones(n), cond * 1e6, b]),
        columns=["Intercept", "cond", "b1", "b2", "b3", "b4"],
    )
    with pytest.raises(
        ValueError,
        match=r"\(2 too many\).*\['Intercept', 'cond', 'b1', 'b2', "
        r"'b3', 'b4'\]",
    ):
        build_design(x, None, n, "loc")
    rows = np.array([[0, 0, -1, 1, 0, 0], [0, 0, 0, 0, -1, 1]], dtype=float)  # seed rows
    assert build_design(x, rows, n, "loc").n_free == 4


def test_tall_design_over_many_row_blocks():
    # Longer than one block of the tall-skinny QR: the rank and the named columns must be
    # those of the whole matrix (reference: numpy's SVD-based matrix_rank on unit columns).
    rng = np.random.default_rng(9)
    n = 200_000
    depth = rng.normal(size=n) * 1e6
    batch = (np.arange(n) >= n - 10).astype(float)  # only the last rows, in the last block
    x = pd.DataFrame(
        {"Intercept": 1.0, "depth": depth, "batch": batch, "depth_batch": depth * batch}
    )
    unit = x.to_numpy() / np.linalg.norm(x.to_numpy(), axis=0)
    assert np.linalg.matrix_rank(unit) == 4
    assert build_design(x, None, n, "loc").n_free == 4
    x["late"] = 2.0 * batch - 1e-6 * depth * batch  # a combination of the last two columns
    assert np.linalg.matrix_rank(x.to_numpy() / np.linalg.norm(x.to_numpy(), axis=0)) == 4
    with pytest.raises(
        ValueError,
        match=r"rank 4 for 5 free parameters.*confounded: "
        r"\['batch', 'depth_batch', 'late'\]",
    ):
        build_design(x, None, n, "loc")
