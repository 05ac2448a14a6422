"""Warn when a test treats observations as independent replicates of a group-level effect.

A coefficient whose design column is constant within the levels of a factor that the fit
codes as *fixed* effects (typically donors nested in the condition through
``constraints_loc={"donor": "condition"}``) is estimated from donor-to-donor contrasts,
but its standard error counts every cell as a replicate: donor-to-donor variation is not
in it, and with hundreds of cells per donor the test rejects far too often
(pseudoreplication; Hurlbert 1984, *Ecological Monographs* 54:187; Squair et al. 2021,
*Nature Communications* 12:5692 for single-cell data). Random intercepts
(``bg.fit(..., random_effects="donor")``) or pseudobulk (``bg.pseudobulk``) put that
variation back.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.nested_designs import outside_columns
from batchglm.result import FitResult
from batchglm.warning_site import user_stacklevel

Array = NDArray[np.float64]


def fixed_grouping_factors(res: FitResult) -> list[tuple[str, NDArray[np.intp]]]:
    """Factors of ``res.obs`` coded as fixed location effects, with fewer levels than obs.

    Parameters
    ----------
    res : FitResult
        A fit from a formula (others have no factor names and give an empty list).

    Returns
    -------
    list of (str, ndarray)
        Factor name and the level code of every observation.
    """
    obs = res.loc.obs
    if obs is None:
        return []
    random = set(res.random.factors) if res.random is not None else set()
    out = []
    n_obs = len(obs)
    for col in obs.columns:
        if col in random or not any(name.startswith(f"{col}[") for name in res.loc.names):
            continue
        codes, levels = pd.factorize(obs[col])
        if 2 <= len(levels) < n_obs and (codes >= 0).all():
            out.append((str(col), codes.astype(np.intp)))
    return out


def warn_pseudoreplication(
    res: FitResult,
    tested: Array,
    labels: list[str],
    involved: list[list[str]],
) -> None:
    """Warn for every tested column that is constant within a fixed-effect factor's levels.

    A factor among the tested coefficients' own (e.g. ``condition`` when testing
    ``condition[T.stim]``) does not count.

    Parameters
    ----------
    res : FitResult
        The fit under test.
    tested : ndarray
        ``(n_obs, m)`` design columns of the tested effects (``X @ l`` per contrast).
    labels : list of str
        One name per tested column, for the message.
    involved : list of list of str
        Per tested column, the coefficient names it combines.

    Warns
    -----
    UserWarning
        Naming the factor and the coefficient, pointing to ``random_effects=`` and
        ``bg.pseudobulk``.
    """
    for factor, codes in fixed_grouping_factors(res):
        n_groups = int(codes.max()) + 1
        sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
        means = np.zeros((n_groups, tested.shape[1]))
        np.add.at(means, codes, tested)
        means /= sizes[:, None]
        constant = np.all(np.isclose(means[codes], tested, rtol=1e-10, atol=1e-12), axis=0)
        varies = np.ptp(tested, axis=0) > 0
        own = np.array([any(n.startswith(f"{factor}[") for n in names) for names in involved])
        for j in np.flatnonzero(constant & varies & ~own):
            warnings.warn(
                f"`{labels[j]}` is constant within the levels of {factor!r}, which the fit "
                f"codes as fixed effects: its test treats the {len(codes)} observations as "
                f"independent replicates of {n_groups} groups (pseudoreplication), so "
                f"p-values are too small. Fit with `random_effects={factor!r}` or test "
                f"`bg.pseudobulk(..., sample={factor!r})` instead.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )


def warn_wald(res: FitResult, lmat: Array, labels: list[str], model: str) -> None:
    """Pseudoreplication check of a Wald test of location combinations ``lmat``.

    Parameters
    ----------
    res : FitResult
        The fit.
    lmat : ndarray
        ``(n_tests, p_loc)`` tested combinations.
    labels : list of str
        Their descriptions.
    model : str
        Only ``"loc"`` tests are checked.
    """
    if model == "loc":
        names = res.loc.names
        involved = [[names[i] for i in np.flatnonzero(row)] for row in lmat]
        warn_pseudoreplication(res, res.loc.matrix @ lmat.T, labels, involved)


def warn_lrt(full: FitResult, reduced: FitResult) -> None:
    """Pseudoreplication check of the location columns a likelihood-ratio test drops.

    Parameters
    ----------
    full, reduced : FitResult
        The nested fits.
    """
    extra = outside_columns(reduced.loc.reduced, full.loc.matrix)
    if extra:
        labels = [full.loc.names[j] for j in extra]
        warn_pseudoreplication(full, full.loc.matrix[:, extra], labels, [[name] for name in labels])
