"""Run PyDESeq2 on a data set written by ``benchmarks/run.py`` (peer benchmark).

This script runs inside the separate benchmark virtual environment
(``.bench-venv``) that holds PyDESeq2; it never imports batchglm, and batchglm never
imports PyDESeq2.

Input directory (``--data-dir``):

* ``counts.npy``        -- (n_obs, n_features) integer counts
* ``metadata.csv``      -- columns ``condition`` and ``batch`` (categorical strings)
* ``size_factors.npy``  -- (n_obs,) size factors (used unless ``--own-size-factors``)

Output, written to the same directory:

* ``pydeseq2_lfc.npy``          -- (n_features, p) coefficients, natural log scale
* ``pydeseq2_dispersions.npy``  -- (n_features,) final (MAP) dispersions, alpha = 1 / r
  (PyDESeq2 keeps them in ``var['dispersions']``; older releases in ``varm``)
* ``pydeseq2_genewise_dispersions.npy`` -- (n_features,) gene-wise MLE dispersions
* ``pydeseq2_design.npy``       -- (n_obs, p) design matrix used by PyDESeq2
* ``pydeseq2_size_factors.npy`` -- (n_obs,) size factors used

and one JSON line on stdout with the fit time in seconds and some metadata.

The timed section is the whole ``DeseqDataSet.deseq2()`` pipeline (size factors --
or installing the given ones --, gene-wise dispersions, trend, prior, MAP
dispersions, LFCs, Cook's distances).  When the given size factors are used the
steps of ``deseq2()`` are called one by one, exactly in the order of
``deseq2()``, with the size-factor step replaced by installing the given factors.
Cook's refitting is off by default so that the returned LFCs are fitted on the
original counts (``--refit-cooks`` turns it on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def _install_size_factors(dds, size_factors: np.ndarray) -> None:
    """Install given size factors the way ``fit_size_factors`` stores its result."""
    dds.obs["size_factors"] = size_factors
    dds.layers["normed_counts"] = dds.X / size_factors[:, None]
    dds.var["_normed_means"] = dds.layers["normed_counts"].mean(axis=0)


def _per_feature(dds, key: str) -> np.ndarray:
    """Return a per-feature quantity from ``var`` (pydeseq2 >= 0.4) or ``varm`` (older)."""
    if key in dds.var:
        return np.asarray(dds.var[key], dtype=float)
    return np.asarray(dds.varm[key], dtype=float).reshape(-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument(
        "--own-size-factors",
        action="store_true",
        help="let PyDESeq2 estimate size factors instead of using size_factors.npy",
    )
    parser.add_argument("--refit-cooks", action="store_true")
    args = parser.parse_args(argv)

    import pydeseq2
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference

    d: Path = args.data_dir
    counts = np.load(d / "counts.npy")
    meta = pd.read_csv(d / "metadata.csv", dtype=str)
    sf = np.load(d / "size_factors.npy")
    n_obs, n_features = counts.shape
    obs_names = [f"obs{i}" for i in range(n_obs)]
    counts_df = pd.DataFrame(
        counts.astype(np.int64),
        index=obs_names,
        columns=[f"feature{j}" for j in range(n_features)],
    )
    meta.index = obs_names

    warnings.filterwarnings("ignore")
    inference = DefaultInference(n_cpus=args.n_cpus)
    dds = DeseqDataSet(
        counts=counts_df,
        metadata=meta,
        design="~condition + batch",
        refit_cooks=args.refit_cooks,
        inference=inference,
        quiet=True,
    )

    t0 = time.perf_counter()
    if args.own_size_factors:
        dds.deseq2()
    else:
        # Same steps as DeseqDataSet.deseq2() (pydeseq2 0.5), size factors given.
        _install_size_factors(dds, sf)
        dds.fit_genewise_dispersions()
        dds.fit_dispersion_trend()
        dds.fit_dispersion_prior()
        dds.fit_MAP_dispersions()
        dds.fit_LFC()
        dds.calculate_cooks()
        if dds.refit_cooks:
            dds.refit()
        dds.cooks_outlier()
    seconds = time.perf_counter() - t0

    design = dds.obsm["design_matrix"]
    lfc = dds.varm["LFC"]
    np.save(d / "pydeseq2_lfc.npy", np.asarray(lfc, dtype=float))
    np.save(d / "pydeseq2_dispersions.npy", _per_feature(dds, "dispersions"))
    np.save(d / "pydeseq2_genewise_dispersions.npy", _per_feature(dds, "genewise_dispersions"))
    np.save(d / "pydeseq2_design.npy", np.asarray(design, dtype=float))
    np.save(d / "pydeseq2_size_factors.npy", np.asarray(dds.obs["size_factors"], dtype=float))
    out = {
        "seconds": seconds,
        "version": pydeseq2.__version__,
        "n_cpus": args.n_cpus,
        "given_size_factors": not args.own_size_factors,
        "refit_cooks": bool(args.refit_cooks),
        "design_columns": [str(c) for c in getattr(design, "columns", [])],
        "lfc_columns": [str(c) for c in getattr(lfc, "columns", [])],
        "n_nonzero_features": int(np.asarray(dds.var["non_zero"]).sum()),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
