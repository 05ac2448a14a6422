"""Mean-dispersion trend across features.

The parametric trend ``alpha(mean) = a0 + a1 / mean`` is DESeq2's: it is fitted by a gamma
GLM with identity link (iteratively re-weighted least squares with weights
``1 / fitted^2``; a step leaving ``fitted > 0`` is halved as R's ``glm.fit`` does),
repeated while features whose estimate lies far from the current trend
(ratio outside ``[1e-4, 15]``) are left out. When that fit fails (a coefficient not
positive, or no convergence) a local regression of ``log alpha`` on ``log mean`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Features with a ratio to the trend outside this range are left out of the next fit.
_RATIO_RANGE = (1e-4, 15.0)
_MAX_OUTER = 10
_MAX_IRLS = 50
#: Step halvings of an IRLS step that leaves the valid region, and the relative deviance
#: change that ends the IRLS (R's ``glm.control`` default ``epsilon``).
_MAX_HALVING = 30
_IRLS_TOL = 1e-8
#: Neighbours in each local fit, as a fraction of the features.
_SPAN = 0.3
_LOCAL_GRID = 64


@dataclass(frozen=True)
class Trend:
    """A fitted mean-dispersion trend.

    Attributes
    ----------
    kind : str
        ``"parametric"``, ``"local"`` or ``"mean"``.
    coef : tuple of float
        ``(a0, a1)`` for the parametric trend; empty otherwise.
    knots : ndarray
        ``log mean`` grid of the local trend (empty otherwise).
    log_values : ndarray
        ``log alpha`` of the local trend on ``knots``, or the one log mean dispersion.
    """

    kind: str
    coef: tuple[float, ...]
    knots: Array
    log_values: Array

    def __call__(self, mean: Array) -> Array:
        """Trend dispersion at the given means.

        Parameters
        ----------
        mean : ndarray
            Mean normalised counts, positive.

        Returns
        -------
        ndarray
            ``alpha`` of the trend.
        """
        mean = np.asarray(mean, dtype=np.float64)
        if self.kind == "parametric":
            a0, a1 = self.coef
            return a0 + a1 / mean
        if self.kind == "local":
            return np.exp(np.interp(np.log(mean), self.knots, self.log_values))
        return np.full(mean.shape, float(np.exp(self.log_values[0])))


def _gamma_deviance(y: Array, fitted: Array) -> float:
    return float(2.0 * np.sum((y - fitted) / fitted - np.log(y / fitted)))


def _gamma_identity_fit(x: Array, y: Array, start: Array) -> Array | None:
    """IRLS for a gamma GLM with identity link, ``E[y] = a0 + a1 x``.

    As R's ``glm.fit`` (used by DESeq2): a step that makes a fitted value non-positive is
    halved towards the previous coefficients until it is valid, and the iteration stops
    when the deviance changes by less than ``1e-8`` relative. Returns ``None`` when no
    valid step is found or the start is invalid.
    """
    design = np.column_stack([np.ones_like(x), x])
    coef = start.copy()
    fitted = design @ coef
    if np.any(fitted <= 0):
        return None
    dev = _gamma_deviance(y, fitted)
    for _ in range(_MAX_IRLS):
        w = 1.0 / fitted**2
        new = np.asarray(
            np.linalg.solve(design.T @ (design * w[:, None]), design.T @ (w * y)),
            dtype=np.float64,
        )
        new_fitted = design @ new
        for _ in range(_MAX_HALVING):
            if np.all(new_fitted > 0):
                break
            new = 0.5 * (new + coef)
            new_fitted = design @ new
        else:
            return None
        new_dev = _gamma_deviance(y, new_fitted)
        coef, fitted = new, new_fitted
        if abs(new_dev - dev) / (abs(new_dev) + 0.1) < _IRLS_TOL:
            return coef
        dev = new_dev
    return coef


def parametric_trend(mean: Array, alpha: Array) -> Trend | None:
    """Fit ``alpha = a0 + a1 / mean`` as DESeq2 does.

    Parameters
    ----------
    mean : ndarray
        Mean normalised count per feature (positive).
    alpha : ndarray
        Per-feature dispersion estimates used for the fit (positive).

    Returns
    -------
    Trend or None
        The trend, or ``None`` when a coefficient is not positive or the outlier loop
        does not settle (then use :func:`local_trend`).
    """
    coef = np.array([0.1, 1.0])
    inv_mean = 1.0 / mean
    for _ in range(_MAX_OUTER):
        ratio = alpha / (coef[0] + coef[1] * inv_mean)
        keep = (ratio > _RATIO_RANGE[0]) & (ratio < _RATIO_RANGE[1])
        if keep.sum() < 3:
            return None
        new = _gamma_identity_fit(inv_mean[keep], alpha[keep], coef)
        if new is None or np.any(new <= 0):
            return None
        done = np.sum(np.log(new / coef) ** 2) < 1e-6
        coef = new
        if done:
            return Trend("parametric", (float(coef[0]), float(coef[1])), np.empty(0), np.empty(0))
    return None


def local_trend(mean: Array, alpha: Array) -> Trend:
    """Local linear regression of ``log alpha`` on ``log mean`` (tricube weights).

    Parameters
    ----------
    mean : ndarray
        Mean normalised count per feature (positive).
    alpha : ndarray
        Per-feature dispersion estimates (positive).

    Returns
    -------
    Trend
        Evaluated on a grid of 64 log means and interpolated linearly between them
        (constant beyond the ends).
    """
    lx, ly = np.log(mean), np.log(alpha)
    n = lx.size
    knots = np.linspace(lx.min(), lx.max(), _LOCAL_GRID) if n > 1 else lx.copy()
    k = max(min(n, 10), int(np.ceil(_SPAN * n)))
    dist = np.abs(knots[:, None] - lx[None, :])
    # Bandwidth per knot: distance to its k-th nearest feature.
    h = np.partition(dist, k - 1, axis=1)[:, k - 1] * (1.0 + 1e-9) + 1e-12
    w = np.clip(1.0 - (dist / h[:, None]) ** 3, 0.0, None) ** 3
    sw = w.sum(axis=1)
    mx = (w @ lx) / sw
    my = (w @ ly) / sw
    dx = lx[None, :] - mx[:, None]
    sxx = (w * dx**2).sum(axis=1)
    sxy = (w * dx * (ly[None, :] - my[:, None])).sum(axis=1)
    slope = np.where(sxx > 1e-12, sxy / np.where(sxx > 1e-12, sxx, 1.0), 0.0)
    values = my + slope * (knots - mx)
    return Trend("local", (), knots, values)


def mean_trend(alpha: Array) -> Trend:
    """Fit a flat trend at the geometric mean of the dispersions (DESeq2's ``"mean"``).

    Parameters
    ----------
    alpha : ndarray
        Per-feature dispersion estimates (positive).

    Returns
    -------
    Trend
        Constant trend at ``exp(mean(log alpha))``.
    """
    return Trend("mean", (), np.empty(0), np.array([float(np.mean(np.log(alpha)))]))


def fit_trend(mean: Array, alpha: Array, kind: str = "parametric") -> Trend:
    """Fit a mean-dispersion trend.

    Parameters
    ----------
    mean : ndarray
        Mean normalised count per feature (positive).
    alpha : ndarray
        Per-feature dispersion estimates used for the fit (positive).
    kind : {"parametric", "local", "mean"}
        ``"parametric"`` falls back to ``"local"`` when its fit fails.

    Returns
    -------
    Trend
        The fitted trend; ``Trend.kind`` says which one was used.

    Raises
    ------
    ValueError
        For an unknown ``trend``, or when no feature has a dispersion above 1e-6.
    """
    if kind not in ("parametric", "local", "mean"):
        raise ValueError(
            f"`trend` must be 'parametric', 'local' or 'mean', but {kind!r} was given."
        )
    if alpha.size == 0:
        raise ValueError(
            "no feature has a dispersion estimate above 1e-6 to fit a trend through; "
            "the data look Poisson or have too few counts."
        )
    if kind == "parametric":
        fitted = parametric_trend(mean, alpha)
        if fitted is not None:
            return fitted
        kind = "local"
    if kind == "local" and alpha.size >= 3:
        return local_trend(mean, alpha)
    return mean_trend(alpha)
