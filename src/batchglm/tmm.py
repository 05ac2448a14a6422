"""edgeR's TMM normalisation (trimmed mean of M values) as size factors.

Robinson and Oshlack 2010, *Genome Biology* 11:R25; edgeR's ``calcNormFactors(method=
"TMM")`` with its defaults:

* library sizes ``N_i``: total counts per observation; features with no positive count in
  any observation are dropped;
* reference observation: the one whose upper-quartile ratio (0.75 quantile, R's type 7,
  of ``y_i / N_i``) is closest to the mean of those ratios (if their median is below
  ``1e-20``: the one with the largest ``sum sqrt(y_i)``);
* for observation ``i`` against the reference ``r``, over features with positive counts
  in both: ``M = log2((y_i / N_i) / (y_r / N_r))``, ``A = (log2(y_i / N_i) + log2(y_r /
  N_r)) / 2``; features are kept when their rank of ``M`` lies in the central 40 %
  (30 % trimmed each side) and their rank of ``A`` in the central 90 % (5 % each side),
  ranks with ties averaged; the factor is ``2^(weighted mean of M)`` with precision
  weights ``1 / ((N_i - y_i) / (N_i y_i) + (N_r - y_r) / (N_r y_r))``; exactly 1 when all
  ``|M| < 1e-6``;
* normalisation factors are scaled to geometric mean 1.

The size factors are edgeR's effective library sizes ``N_i f_i`` divided by their
geometric mean (so they have geometric mean 1 like DESeq2's). A common scale does not
change any test: it is absorbed by the intercept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.data import Data
from batchglm.inputs import as_data

Array = NDArray[np.float64]

#: edgeR's defaults: trim of M (log ratio) and of A (abundance) on each side.
LOGRATIO_TRIM = 0.3
SUM_TRIM = 0.05


def _rows(d: Data) -> Any:
    values = d.values
    if sparse.issparse(values):
        csr = sparse.csr_array(values)
        for i in range(csr.shape[0]):  # one observation at a time: n_features values
            yield np.asarray(csr[[i], :].toarray()[0], dtype=np.float64)
    else:
        dense = np.asarray(values, dtype=np.float64)
        yield from dense


def _tmm_factor(obs: Array, ref: Array, n_obs_lib: float, n_ref_lib: float) -> float:
    """One observation's TMM factor against the reference (edgeR's ``.calcFactorTMM``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # The ratio is formed before the log, as edgeR does: ties in M (equal count ratios)
        # then break the same way at the trimming bounds.
        m = np.log2((obs / n_obs_lib) / (ref / n_ref_lib))
        a = 0.5 * (np.log2(obs / n_obs_lib) + np.log2(ref / n_ref_lib))
        v = (n_obs_lib - obs) / n_obs_lib / obs + (n_ref_lib - ref) / n_ref_lib / ref
    fin = np.isfinite(m) & np.isfinite(a)
    m, a, v = m[fin], a[fin], v[fin]
    if m.size == 0 or np.max(np.abs(m)) < 1e-6:
        return 1.0
    n = m.size
    lo_l = np.floor(n * LOGRATIO_TRIM) + 1
    hi_l = n + 1 - lo_l
    lo_s = np.floor(n * SUM_TRIM) + 1
    hi_s = n + 1 - lo_s
    from scipy.stats import rankdata  # here only: importing scipy.stats costs about 2 s

    rank_m, rank_a = rankdata(m), rankdata(a)
    keep = (rank_m >= lo_l) & (rank_m <= hi_l) & (rank_a >= lo_s) & (rank_a <= hi_s)
    w = 1.0 / v[keep]
    ok = np.isfinite(w) & np.isfinite(m[keep])
    if not ok.any() or w[ok].sum() == 0:
        return 1.0
    return float(2.0 ** (np.sum(m[keep][ok] * w[ok]) / np.sum(w[ok])))


def tmm_norm_factors(data: Any, *, layer: str | None = None) -> Array:
    """TMM normalisation factors as edgeR's ``calcNormFactors`` (default trims).

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``, observations in rows (edgeR's transpose).
    layer : str, optional
        AnnData layer with the counts.

    Returns
    -------
    ndarray
        Normalisation factors ``(n_obs,)`` with geometric mean 1 (edgeR's ``norm.factors``).

    Raises
    ------
    ValueError
        If counts are negative or not finite, or an observation has no counts.
    """
    d = data if isinstance(data, Data) else as_data(data, layer=layer)
    n_obs = d.shape[0]
    lib = np.zeros(n_obs)
    upper_q = np.zeros(n_obs)
    sqrt_sum = np.zeros(n_obs)
    present = np.zeros(d.shape[1], dtype=bool)
    for i, row in enumerate(_rows(d)):
        if row.size and not (np.all(np.isfinite(row)) and row.min() >= 0):
            raise ValueError(
                "TMM size factors need finite, non-negative counts, but observation "
                f"{i} has negative or non-finite values."
            )
        lib[i] = row.sum()
        present |= row > 0
        sqrt_sum[i] = np.sqrt(row).sum()
    if np.any(lib <= 0):
        raise ValueError(
            f"TMM size factors need a positive total count in every observation, but "
            f"observation {int(np.argmax(lib <= 0))} has none."
        )
    if n_obs == 1 or not present.any():
        return np.ones(n_obs)
    for i, row in enumerate(_rows(d)):
        upper_q[i] = np.quantile(row[present] / lib[i], 0.75)
    if np.median(upper_q) < 1e-20:
        ref = int(np.argmax(sqrt_sum))
    else:
        ref = int(np.argmin(np.abs(upper_q - upper_q.mean())))
    ref_row = next(r for i, r in enumerate(_rows(d)) if i == ref)[present]
    f = np.array(
        [_tmm_factor(row[present], ref_row, lib[i], lib[ref]) for i, row in enumerate(_rows(d))]
    )
    return np.asarray(f / np.exp(np.mean(np.log(f))))


def tmm_size_factors(data: Any, *, layer: str | None = None) -> Array:
    """Size factors from edgeR's TMM effective library sizes.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        Counts ``(n_obs, n_features)``.
    layer : str, optional
        AnnData layer with the counts.

    Returns
    -------
    ndarray
        ``N_i f_i / geometric_mean(N f)``, shape ``(n_obs,)`` (see the module description).

    Raises
    ------
    ValueError
        As :func:`tmm_norm_factors`.
    """
    d = data if isinstance(data, Data) else as_data(data, layer=layer)
    f = tmm_norm_factors(d)
    lib = np.zeros(d.shape[0])
    for i, row in enumerate(_rows(d)):
        lib[i] = row.sum()
    eff = lib * f
    return np.asarray(eff / np.exp(np.mean(np.log(eff))))
