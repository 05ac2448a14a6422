"""Per-gene NB fits with statsmodels or glum on a data set written by ``benchmarks/peers.py``.

Runs inside the benchmark virtual environment (``.bench-venv``), never imports batchglm.

Input directory (``--data-dir``):

* ``counts.npy``        -- (n_obs, n_features) integer counts
* ``design.npy``        -- (n_obs, p) location design (intercept + condition + 3 batch)
* ``size_factors.npy``  -- (n_obs,) size factors, used as ``offset = log(sf)``

Methods (``--method``):

* ``statsmodels``: ``statsmodels.discrete.discrete_model.NegativeBinomial`` (NB2) with
  ``offset=log(sf)``, ``fit(method="newton")``: a joint maximum-likelihood fit of the
  location coefficients and the dispersion ``alpha`` (var = mu + alpha mu^2) per gene.
  Features where Newton does not converge (or returns a non-finite / non-positive alpha)
  are refitted with ``method="bfgs"`` (counted in the JSON output).
* ``glum``: ``glum.GeneralizedLinearRegressor`` cannot estimate the NB dispersion, its
  family is fixed.  Per gene: a Poisson fit (unpenalised) gives ``mu``, the moment
  estimate ``alpha = max(sum(((y - mu)^2 - mu) / mu^2) / (n - p), 1e-8)`` (DESeq2's
  rough estimator), then an unpenalised NB fit with ``theta = alpha`` started from the
  Poisson coefficients.  Both fits are timed.

The loop over genes runs in this one process (neither package parallelises over
genes).  If the loop takes longer than ``--budget-s`` seconds, it stops after the
current gene; the output then covers the first ``n_fitted`` genes and the caller
extrapolates the time linearly.

Output, written to the data directory: ``<method>_coef.npy`` (n_fitted, p, natural log
scale, our design columns), ``<method>_alpha.npy`` (n_fitted,), and one JSON line on
stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def fit_statsmodels(
    y: np.ndarray, x: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, float, bool]:
    """Joint NB2 MLE of one gene with statsmodels; returns (coef, alpha, used_fallback)."""
    from statsmodels.discrete.discrete_model import NegativeBinomial

    model = NegativeBinomial(y, x, loglike_method="nb2", offset=offset)
    res = model.fit(method="newton", maxiter=100, disp=False)
    params = np.asarray(res.params, dtype=float)
    ok = bool(res.mle_retvals.get("converged", False)) and np.all(np.isfinite(params))
    if ok and params[-1] > 0:
        return params[:-1], float(params[-1]), False
    res = model.fit(method="bfgs", maxiter=1000, disp=False)
    params = np.asarray(res.params, dtype=float)
    return params[:-1], float(params[-1]), True


def fit_glum(y: np.ndarray, x: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Poisson fit, moment dispersion, NB fit at that dispersion (glum)."""
    from glum import GeneralizedLinearRegressor, NegativeBinomialDistribution

    n, p = x.shape
    pois = GeneralizedLinearRegressor(family="poisson", alpha=0.0, fit_intercept=False)
    pois.fit(x, y, offset=offset)
    mu = np.exp(x @ pois.coef_ + offset)
    alpha = max(float(np.sum(((y - mu) ** 2 - mu) / mu**2) / (n - p)), 1e-8)
    nb = GeneralizedLinearRegressor(
        family=NegativeBinomialDistribution(theta=alpha),
        alpha=0.0,
        fit_intercept=False,
        start_params=pois.coef_,
    )
    nb.fit(x, y, offset=offset)
    return np.asarray(nb.coef_, dtype=float), alpha, False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--method", required=True, choices=["statsmodels", "glum"])
    parser.add_argument("--budget-s", type=float, default=60.0)
    args = parser.parse_args(argv)

    d: Path = args.data_dir
    counts = np.load(d / "counts.npy").astype(np.float64)
    x = np.load(d / "design.npy")
    offset = np.log(np.load(d / "size_factors.npy"))
    n_features = counts.shape[1]
    counts = np.asfortranarray(counts)  # contiguous columns

    if args.method == "statsmodels":
        import statsmodels

        fit, version = fit_statsmodels, statsmodels.__version__
    else:
        import glum

        fit, version = fit_glum, glum.__version__

    warnings.filterwarnings("ignore")
    coefs, alphas = [], []
    n_fallback = 0
    t0 = time.perf_counter()
    for j in range(n_features):
        c, a, fb = fit(counts[:, j], x, offset)
        coefs.append(c)
        alphas.append(a)
        n_fallback += fb
        if time.perf_counter() - t0 > args.budget_s:
            break
    seconds = time.perf_counter() - t0
    n_fitted = len(coefs)
    np.save(d / f"{args.method}_coef.npy", np.asarray(coefs))
    np.save(d / f"{args.method}_alpha.npy", np.asarray(alphas))
    out = {
        "seconds": seconds,
        "n_fitted": n_fitted,
        "n_features": n_features,
        "seconds_extrapolated": seconds * n_features / n_fitted,
        "version": version,
        "n_fallback": n_fallback,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
