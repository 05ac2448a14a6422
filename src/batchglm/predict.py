"""Predicted means for new observations, with standard errors by the delta method.

A formula fit re-applies formulaic's model specification of the training annotations to
the new annotations (the same factor levels, reference levels and column order; stateful
transforms keep their training state), so new rows are coded exactly as the training rows
were. A factor level not seen in training cannot be predicted and is an error; formulaic
itself would only warn and code it as the reference level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from formulaic import model_matrix
from formulaic.errors import DataMismatchWarning, FormulaicError
from numpy.typing import ArrayLike, NDArray

from batchglm.fitted import FeatureSelection, feature_positions
from batchglm.formula import one_line

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Prediction:
    """Predicted means with standard errors, each ``(n_new, n_selected)``.

    Attributes
    ----------
    mean : pandas.DataFrame
        Predicted mean on the response scale.
    se_link : pandas.DataFrame
        Standard error of the linear predictor (natural-log scale for NB and Poisson,
        logit scale for beta, the response scale for normal).
    se_mean : pandas.DataFrame
        Standard error of ``mean`` by the delta method: ``|d mu / d eta| * se_link``.
    """

    mean: pd.DataFrame
    se_link: pd.DataFrame
    se_mean: pd.DataFrame


def new_design(res: FitResult, obs_new: pd.DataFrame | ArrayLike) -> pd.DataFrame:
    """Location design rows for new observations, columns as the fit's coefficients.

    Parameters
    ----------
    res : FitResult
        The fit.
    obs_new : pandas.DataFrame or array_like
        For a formula fit: annotations with the formula's variables. For any fit: a design
        matrix with the fit's location columns (a DataFrame whose columns are exactly the
        coefficient names, or an array with that many columns).

    Returns
    -------
    pandas.DataFrame
        ``(n_new, p_loc)`` design.

    Raises
    ------
    ValueError
        For unseen factor levels, missing variables or values, designs built from
        nested-factor constraints (pass a design matrix), or a matrix of the wrong width.
    """
    names = list(res.loc.names)
    if isinstance(obs_new, pd.DataFrame) and [str(c) for c in obs_new.columns] == names:
        return obs_new.astype(np.float64)
    formula = res.loc.formula
    if isinstance(obs_new, pd.DataFrame) and formula is not None:
        if isinstance(res.loc.constraint_spec, dict):
            raise ValueError(
                "predictions from annotations need a formula design without nested-factor "
                f"constraints; pass a design matrix with the columns {names} instead."
            )
        return _from_formula(res, formula, obs_new, names)
    if isinstance(obs_new, pd.DataFrame) and formula is None:
        raise ValueError(
            f"the fit has a matrix design, so `obs_new` must be a design matrix with the "
            f"columns {names}, but it has columns {[str(c) for c in obs_new.columns]}."
        )
    matrix = np.asarray(obs_new, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ValueError(
            f"`obs_new` as a design matrix must have shape (n_new, {len(names)}), but its "
            f"shape is {matrix.shape}."
        )
    return pd.DataFrame(matrix, columns=names)


def _from_formula(
    res: FitResult, formula: str, obs_new: pd.DataFrame, names: list[str]
) -> pd.DataFrame:
    train = res.loc.obs
    spec = model_matrix(formula, train, na_action="raise").model_spec
    for var, (kind, state) in spec.encoder_state.items():
        if str(getattr(kind, "value", kind)) != "categorical" or var not in obs_new.columns:
            continue
        seen = list(state.get("categories", []))
        unseen = sorted({str(v) for v in pd.unique(obs_new[var].dropna())} - {str(v) for v in seen})
        if unseen:
            raise ValueError(
                f"`obs_new` column {var!r} has levels {unseen} not seen in training; only "
                f"the training levels {[str(v) for v in seen]} can be predicted."
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            mm = spec.get_model_matrix(obs_new, na_action="raise")
    except DataMismatchWarning as err:
        raise ValueError(
            f"`obs_new` does not match the training annotations ({one_line(str(err))}); only "
            "levels seen in training can be predicted."
        ) from None
    except (FormulaicError, ValueError, TypeError, NameError, KeyError) as err:
        raise ValueError(
            f"the formula {formula!r} could not be evaluated on `obs_new`: {one_line(str(err))}"
        ) from None
    cols = [str(c) for c in mm.columns]
    if cols != names:
        raise ValueError(
            f"`obs_new` gives design columns {cols}, but the fit has {names}; they must match."
        )
    return pd.DataFrame(np.asarray(mm, dtype=np.float64), index=obs_new.index, columns=names)


def predict(
    res: FitResult,
    obs_new: pd.DataFrame | ArrayLike,
    *,
    features: FeatureSelection = None,
    se: bool = False,
    size_factors: ArrayLike | None = None,
) -> pd.DataFrame | Prediction:
    """Predicted mean for new observations.

    Parameters
    ----------
    res : FitResult
        The fit.
    obs_new : pandas.DataFrame or array_like
        New annotations (formula fits) or a new location design matrix (see
        :func:`new_design`).
    features : str, slice, sequence of str or int, or None
        Features to predict; ``None`` for all.
    se : bool
        Also return standard errors.
    size_factors : array_like, optional
        Size factors of the new observations, ``(n_new,)``; without them the mean is for a
        size factor of 1 (normalised scale). ``predict(res.obs, size_factors=
        res.size_factors)`` equals ``res.fitted()``.

    Returns
    -------
    pandas.DataFrame or Prediction
        ``(n_new, n_selected)`` means on the response scale; with ``se=True`` a
        :class:`Prediction`.

    Raises
    ------
    ValueError
        For a design that does not match the fit (see :func:`new_design`), size factors
        of the wrong shape, or size factors for a family without a log link.

    Notes
    -----
    With ``eta = x . a`` and ``Cov(a)`` the location block of ``res.covariance()`` (inverse
    observed information, constraints applied), ``se_link = sqrt(x Cov(a) x^T)``; the
    response scale uses the delta method, ``se_mean = |g^{-1}'(eta)| se_link`` (for the
    log link ``mu * se_link``), times the size factor. Features without a covariance
    (all-zero counts) get ``NaN`` standard errors.
    """
    from batchglm.data import as_size_factors

    design = new_design(res, obs_new)
    x = design.to_numpy()
    pos = feature_positions(res, features)
    fam = res.family
    if size_factors is not None and fam.loc_link != "log":
        raise ValueError(
            f"family {fam.name!r} has a {fam.loc_link} link for the mean, so `size_factors` "
            "(an offset for log-link means) must be None."
        )
    sf = as_size_factors(size_factors, x.shape[0])
    k = res.loc.n_free
    c = res.loc.constraints
    coef = res.theta_free[pos, :k] @ c.T
    eta = x @ coef.T + np.log(sf)[:, None]
    with np.errstate(over="ignore"):
        mean = pd.DataFrame(
            fam.inverse_link(eta), index=design.index, columns=res.feature_names[pos]
        )
    if not se:
        return mean
    # Location block of the free covariance, mapped through C: only the selected features.
    xc = x @ c
    var = np.einsum("ij,fjk,ik->if", xc, res.cov_free[pos, :k, :k], xc, optimize=True)
    with np.errstate(invalid="ignore"):
        se_link = np.sqrt(np.where(var >= 0, var, np.nan))
        se_mean = np.abs(fam.d_inverse_link(eta)) * se_link
    cols = res.feature_names[pos]
    return Prediction(
        mean,
        pd.DataFrame(se_link, index=design.index, columns=cols),
        pd.DataFrame(se_mean, index=design.index, columns=cols),
    )
