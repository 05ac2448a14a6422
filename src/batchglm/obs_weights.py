"""Observation weights and location offsets of :func:`batchglm.fit`.

Both come per observation ``(n_obs,)`` or per observation and feature
``(n_obs, n_features)``. A vector is part of the problem every feature shares
(:class:`~batchglm.solvers.objective.Problem`); a matrix is cut into the same feature blocks
as the data and handed to each block's objective.

Weights multiply each observation's log-likelihood term, so an integer weight ``k`` is the
same as ``k`` copies of the observation (``freq_weights`` in statsmodels, ``weights`` in
edgeR's ``glmFit`` and DESeq2's ``weights`` assay); a weight of 0 drops it. Offsets are
added to the location's linear predictor, on the link scale (natural log for ``"nb"`` and
``"poisson"``), as ``offset=`` of statsmodels or edgeR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from batchglm.align import align_rows, positions
from batchglm.data import Data
from batchglm.design import Design, check_identifiable

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]


def obs_array(value: Any, d: Data, obs: pd.DataFrame | None, what: str) -> Array | None:
    """Turn weights or offsets into a float64 ``(n_obs,)`` or ``(n_obs, n_features)`` array.

    Parameters
    ----------
    value : array_like, pandas.Series, pandas.DataFrame, str or None
        The input. A Series is matched to the data's observation names; a DataFrame by its
        index (observations) and its columns (features); a string names a column of
        ``obs``.
    d : Data
        The data, for shapes and names.
    obs : pandas.DataFrame or None
        Observation annotations, already in the data's order.
    what : str
        ``"weights"`` or ``"offset"``, for messages.

    Returns
    -------
    ndarray or None
        ``None`` when ``value`` is None; otherwise the values in the data's order, finite.

    Raises
    ------
    ValueError
        When the shape matches neither ``(n_obs,)`` nor ``(n_obs, n_features)``, the values
        are not finite, a named ``obs`` column is missing, or the input is sparse.
    """
    if value is None:
        return None
    n_obs, n_feat = d.shape
    column = value if isinstance(value, str) else None
    if isinstance(value, str):
        if obs is None or value not in obs.columns:
            have = [] if obs is None else list(obs.columns)[:5]
            raise ValueError(
                f"`{what}` names the obs column {value!r}, but `obs` has no such column "
                f"(columns are e.g. {have})."
            )
        value = obs[value]
    if sparse.issparse(value):
        raise ValueError(
            f"`{what}` must be a dense array, but a scipy.sparse matrix was given; pass "
            f"`{what}.toarray()` (weights and offsets are dense per feature block)."
        )
    if isinstance(value, pd.Series | pd.DataFrame):
        value = align_rows(
            value, d.obs_names, what=f"`{what}`", target_what="`data`", axis="observation"
        )
    if isinstance(value, pd.DataFrame) and value.shape[1] > 1:
        pos = positions(
            d.feature_names,
            value.columns,
            what=f"`{what}`",
            target_what="`data`",
            axis="feature",
        )
        if pos is not None:
            value = value.iloc[:, pos]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        source = "it" if column is None else f"the obs column {column!r}"
        raise ValueError(
            f"`{what}` must be numeric, but {source} could not be read as numbers "
            f"(e.g. {_first_non_number(value)!r})."
        ) from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape not in ((n_obs,), (n_obs, n_feat)):
        raise ValueError(
            f"`{what}` must have shape ({n_obs},) or ({n_obs}, {n_feat}) (observations, or "
            f"observations x features), but its shape is {arr.shape}."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"`{what}` must be finite, but {int(bad.sum())} value(s) are NaN or infinite."
        )
    return np.ascontiguousarray(arr)


def _first_non_number(value: Any) -> Any:
    """Return the first entry of ``value`` that ``float`` refuses (for error messages)."""
    for item in np.asarray(value, dtype=object).ravel():
        try:
            float(item)
        except (TypeError, ValueError):
            return item
    return None


def as_weights(value: Any, d: Data, obs: pd.DataFrame | None) -> Array | None:
    """Validate observation weights.

    Parameters
    ----------
    value : array_like, pandas.Series, pandas.DataFrame, str or None
        Non-negative finite weights ``(n_obs,)`` or ``(n_obs, n_features)``, or the name of
        an ``obs`` column (see :func:`obs_array`).
    d : Data
        The data.
    obs : pandas.DataFrame or None
        Observation annotations in the data's order.

    Returns
    -------
    ndarray or None
        Weights as float64; ``None`` when not given.

    Raises
    ------
    ValueError
        As :func:`obs_array`; when a weight is negative, or a feature has no observation
        of positive weight.
    """
    w = obs_array(value, d, obs, "weights")
    if w is None:
        return None
    if (w < 0).any():
        i = int(np.argmax((w < 0).ravel()))
        raise ValueError(
            f"`weights` must be non-negative, but {int((w < 0).sum())} are negative; the "
            f"first is {float(w.ravel()[i])!r}."
        )
    empty = ~(w > 0).any(axis=0)
    if np.any(empty):
        where = (
            "every observation"
            if w.ndim == 1
            else f"feature {d.feature_names[int(np.argmax(empty))]!r}"
        )
        raise ValueError(
            f"`weights` must give at least one observation a positive weight, but for "
            f"{where} all weights are 0."
        )
    return w


def feature_block(value: Array | None, features: slice) -> Array | None:
    """Cut the columns of a per-feature matrix for one feature block (vectors give None).

    Parameters
    ----------
    value : ndarray or None
        ``(n_obs,)`` or ``(n_obs, n_features)``.
    features : slice
        Feature positions.

    Returns
    -------
    ndarray or None
        ``(n_obs, n_block)`` C-contiguous block of a matrix; ``None`` for a vector or None
        (vectors live in the shared :class:`~batchglm.solvers.objective.Problem`).
    """
    if value is None or value.ndim == 1:
        return None
    return np.ascontiguousarray(value[:, features])


def is_weighted(res: FitResult) -> bool:
    """Whether a fit was made with observation weights or an offset.

    Parameters
    ----------
    res : FitResult
        A fit from :func:`batchglm.fit`.

    Returns
    -------
    bool
        True when ``res.settings`` holds ``weights`` or ``offset``.
    """
    return any(isinstance(res.settings.get(k), np.ndarray) for k in ("weights", "offset"))


def require_unweighted(res: FitResult, what: str) -> None:
    """Refuse a method that does not take a fit's weights and offset into account.

    Parameters
    ----------
    res : FitResult
        The fit.
    what : str
        The method, for the message (e.g. ``"dispersion='map'"``).

    Raises
    ------
    NotImplementedError
        When the fit has observation weights or an offset.
    """
    if is_weighted(res):
        raise NotImplementedError(
            f"{what} does not support fits with `weights` or `offset` yet (it would ignore "
            "them); test the weighted fit with dispersion='mle' (the fit's own scale)."
        )


def same_weights(full: FitResult, reduced: FitResult) -> bool:
    """Whether two fits used the same weights and offset (both absent counts as equal).

    Parameters
    ----------
    full, reduced : FitResult
        The fits.

    Returns
    -------
    bool
        True when ``weights`` and ``offset`` in both fits' settings are equal.
    """
    for key in ("weights", "offset"):
        a, b = full.settings.get(key), reduced.settings.get(key)
        if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                return False
            continue
        if a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True


def counted_observations(res: FitResult) -> tuple[int, Array]:
    """Observations that enter a fit's likelihood, and their reduced location design.

    Parameters
    ----------
    res : FitResult
        A fit from :func:`batchglm.fit`.

    Returns
    -------
    n_obs : int
        Observations of positive weight (all observations for an unweighted fit); with
        weights per observation and feature, the fewest of any feature.
    design : ndarray
        ``(m, k_loc)`` rows of the constrained location design of observations of positive
        weight (for any feature, with weights per observation and feature).

    Notes
    -----
    Every observation of positive weight counts once, whatever its weight: residual degrees
    of freedom count distinct observations, so they do not grow with integer weights the
    way they grow with duplicated rows.
    """
    xc = res.loc.reduced
    w = res.settings.get("weights")
    if not isinstance(w, np.ndarray):
        return len(res.obs_names), xc
    used = w > 0
    if w.ndim == 1:
        return int(used.sum()), xc[used]
    return int(used.sum(axis=0).min()), xc[used.any(axis=1)]


def counted_offsets(res: FitResult, features: NDArray[np.intp]) -> Array:
    """Location offsets of a fit at its observations, ``-inf`` where they do not count.

    Parameters
    ----------
    res : FitResult
        A fit from :func:`batchglm.fit`.
    features : ndarray of int
        Feature positions.

    Returns
    -------
    ndarray
        ``(n_obs, 1)`` when the fit has neither weights nor offsets per feature, else
        ``(n_obs, len(features))``: ``log(size_factors) + offset``, and ``-inf`` at
        observations of weight 0 (they inform no fitted mean).
    """
    total = np.log(res.size_factors)[:, None]
    off = res.settings.get("offset")
    if isinstance(off, np.ndarray):
        total = total + (off[:, None] if off.ndim == 1 else off[:, features])
    w = res.settings.get("weights")
    if isinstance(w, np.ndarray):
        used = w[:, None] > 0 if w.ndim == 1 else w[:, features] > 0
        total = np.where(used, total, -np.inf)
    return total


def weight_scale(w: Array | None) -> Array | None:
    """Each feature's mean positive weight: the factor the solver divides weights by.

    The weighted log-likelihood, its gradient and its information are linear in the
    weights, so dividing a feature's weights by a constant ``c`` leaves the estimates
    unchanged and scales ``loglik`` by ``1 / c`` and the covariance by ``c``. Solving at
    weights of mean 1 makes the convergence rule (an absolute tolerance on the Newton
    decrement, a log-likelihood difference) mean the same for weights ``1e-12`` and
    ``1e12``; :func:`batchglm.fit` multiplies ``loglik`` back by ``c`` and divides the
    covariance by it.

    Parameters
    ----------
    w : ndarray or None
        Validated weights ``(n_obs,)`` or ``(n_obs, n_features)`` (see :func:`as_weights`:
        every feature has a positive weight).

    Returns
    -------
    ndarray or None
        ``()`` for a vector, ``(n_features,)`` for a matrix: the mean of the positive
        weights; ``None`` without weights.
    """
    if w is None:
        return None
    pos = w > 0
    return np.asarray(w.sum(axis=0) / pos.sum(axis=0), dtype=np.float64)


def check_weighted_designs(loc: Design, scale: Design, w: Array | None) -> None:
    """Check that the designs stay identifiable on the observations of positive weight.

    A weight of 0 drops an observation, so the design restricted to the others must pass
    the same check as a design whose rows were dropped
    (:func:`batchglm.design.check_identifiable`); when it fails because some columns are
    non-zero only on observations of weight 0 (e.g. a level all of whose observations have
    weight 0), the message names those columns and says that their weights are 0. Only
    weights per observation ``(n_obs,)`` are checked here; per-feature weights are checked
    per feature by :func:`identifiable_features`.

    Parameters
    ----------
    loc, scale : Design
        The location and scale designs of the fit.
    w : ndarray or None
        Validated weights.

    Raises
    ------
    ValueError
        When a design restricted to the observations of positive weight is rank-deficient;
        the message names the columns whose observations all have weight 0, or else the
        all-zero and the confounded columns.
    """
    if w is None or w.ndim != 1 or bool((w > 0).all()):
        return
    used = w > 0
    for design, which in ((loc, "loc"), (scale, "scale")):
        nonzero = np.any(design.matrix != 0.0, axis=0)
        kept_nonzero = np.any(design.matrix[used] != 0.0, axis=0)
        weighted_out = [design.names[j] for j in np.flatnonzero(nonzero & ~kept_nonzero)]
        kept = Design(
            design.matrix[used],
            design.names,
            design.constraints,
            formula=design.formula,
            constraint_spec=design.constraint_spec,
            obs=None if design.obs is None else design.obs.iloc[np.flatnonzero(used)],
        )
        try:
            check_identifiable(kept, which)
        except ValueError:
            if not weighted_out:
                raise
            raise ValueError(
                f"`design_{which}` is not identifiable on the observations of positive "
                f"weight: every observation with a non-zero value in {weighted_out} (e.g. "
                "of a condition level) has weight 0; give some of them a positive weight "
                "or drop them."
            ) from None


def identifiable_features(loc: Array, scale: Array, w: Array) -> NDArray[np.bool_]:
    """Which features keep identifiable designs on their observations of positive weight.

    For each feature ``f`` the Gram matrix ``X^T diag(w_f > 0) X`` ``(k, k)`` of the
    constrained location design and of the constrained scale design, all features at once
    (``O(n_obs k^2)`` per feature, no loop over features). Columns are equilibrated (unit
    diagonal) before the decision, so units do not matter; an eigenvalue below
    ``max(n_obs, k) * eps`` times the largest counts as zero (``numpy.linalg.matrix_rank``'s
    rule, applied to the Gram matrix; a column with no observation of positive weight has
    a zero diagonal and fails at once).

    Parameters
    ----------
    loc, scale : ndarray
        Constrained designs ``X C`` ``(n_obs, k_loc)`` and ``(n_obs, k_scale)``
        (``k_scale`` may be 0).
    w : ndarray
        Weights ``(n_obs, n_features)`` of a feature block.

    Returns
    -------
    ndarray of bool
        ``(n_features,)``: True where both designs have full column rank on the feature's
        observations of positive weight.
    """
    used = (w > 0).astype(np.float64)
    ok = np.ones(w.shape[1], dtype=bool)
    eps = np.finfo(np.float64).eps
    for x in (loc, scale):
        k = x.shape[1]
        if k == 0:
            continue
        gram = np.einsum("ik,if,il->fkl", x, used, x, optimize=True)
        diag = np.einsum("fkk->fk", gram)
        full = np.all(diag > 0, axis=1)
        d = np.sqrt(np.where(diag > 0, diag, 1.0))
        eig = np.linalg.eigvalsh(gram / d[:, :, None] / d[:, None, :])
        tol = max(x.shape[0], k) * eps * eig[:, -1]
        ok &= full & (eig[:, 0] > tol)
    return ok
