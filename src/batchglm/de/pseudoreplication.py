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

The opposite mistake: a tested coefficient that varies *within* the levels of every
random-effect factor (each donor has cells of both conditions) makes the fit read the
donors as crossed with the condition, as in a paired design. That is right when the same
donors were measured in both conditions, and then the test is within donors; when the
labels were reused for different donors ("d1" in ctrl and "d1" in stim), nothing in the
model holds the donor-to-donor variation of the condition and the test rejects far too
often. :class:`CrossedGroupingWarning` says so at test time.
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

#: A tested column with more distinct values than this many per random-effect level is a
#: cell-level covariate (library size, a QC metric), within-donor by nature: no warning.
DISCRETE_VALUES_PER_LEVEL = 2


class CrossedGroupingWarning(UserWarning):
    """A tested coefficient varies within the levels of the first random-effect factor.

    The fit then reads the factor as crossed with the tested variable (a paired design).
    Silence it for designs that are paired on purpose with
    ``warnings.filterwarnings("ignore", category=bg.de.CrossedGroupingWarning)``.
    """


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
    CrossedGroupingWarning
        For a mixed fit, see :func:`warn_crossed_random`.
    """
    warn_crossed_random(res, tested, labels, involved)
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


def _spanning_levels(column: Array, index: NDArray[np.intp], n_groups: int) -> NDArray[np.bool_]:
    """Per level of a grouping, whether ``column`` takes several values on its observations."""
    low = np.full(n_groups, np.inf)
    high = np.full(n_groups, -np.inf)
    np.minimum.at(low, index, column)
    np.maximum.at(high, index, column)
    tol = 1e-10 * max(float(np.abs(column).max()), 1e-300)
    return np.asarray(high - low > tol)


def _variable_of(res: FitResult, names: list[str]) -> str | None:
    """Find the ``obs`` column behind the tested coefficients (``condition[T.b]``: condition)."""
    obs = res.loc.obs
    if obs is None:
        return None
    for col in obs.columns:
        if any(n == col or n.startswith(f"{col}[") for n in names):
            return str(col)
    return None


def warn_crossed_random(
    res: FitResult, tested: Array, labels: list[str], involved: list[list[str]]
) -> None:
    """Warn when a tested column varies within the levels of the first random-effect factor.

    With random intercepts only, a grouping factor whose levels each hold several values
    of the tested variable is crossed with it: the test is within the groups and leaves out
    group-by-variable variation (no random slopes, as lme4 ``(1 | donor)`` without
    ``(1 | donor:condition)``). Right for paired designs; for donor labels reused across
    conditions it is pseudoreplication. When a later factor holds the tested column
    constant within its levels (``["donor", "donor_condition"]``) the message asks to list
    that factor first, since the small-sample reference takes the first factor as the
    replicates (``docs/mixed_model.md``, Limitations). No warning when the first factor
    holds the tested column constant, or for columns with more than
    ``DISCRETE_VALUES_PER_LEVEL`` distinct values per level of the largest factor
    (cell-level covariates, within-donor by nature).

    Parameters
    ----------
    res : FitResult
        The fit under test; nothing happens without random effects.
    tested : ndarray
        ``(n_obs, m)`` design columns of the tested effects.
    labels : list of str
        One name per tested column, for the message.
    involved : list of list of str
        Per tested column, the coefficient names it combines.

    Warns
    -----
    CrossedGroupingWarning
        Naming the first factor, how many of its levels span several values of the tested
        column, and the fixes: unique labels, or a random effect for the combination
        listed first (``["donor_condition", "donor"]``; in paired simulations of 6
        donors x 2 conditions x 30 cells, 5 seeds of 200 null genes, 0.076 of them
        were rejected at 0.05, against 0.133 with the combination listed second and 0.41
        without it; ``docs/mixed_model.md``).
    """
    rand = res.random
    if rand is None or rand.index is None:
        return
    sizes = [len(levels) for levels in rand.levels]
    for j in range(tested.shape[1]):
        column = tested[:, j]
        if not np.ptp(column) > 0:
            continue
        n_values = len(np.unique(np.round(column, 10)))
        if n_values > DISCRETE_VALUES_PER_LEVEL * max(sizes):
            continue
        spans = [_spanning_levels(column, idx, n) for idx, n in zip(rand.index, sizes, strict=True)]
        if not spans[0].any():
            continue
        factor, span, levels = rand.factors[0], spans[0], rand.levels[0]
        variable = _variable_of(res, involved[j]) or "condition"
        example = ", ".join(repr(str(x)) for x in levels[span][:3])
        head = (
            f"`{labels[j]}` varies within the levels of the random-effect factor {factor!r}: "
            f"{int(span.sum())} of {len(levels)} levels ({example}"
            f"{', ...' if span.sum() > 3 else ''}) span several of its values"
        )
        nested = [f for f, s in zip(rand.factors, spans, strict=True) if not s.any()]
        if nested:
            order = [nested[0], *[f for f in rand.factors if f != nested[0]]]
            message = (
                f"{head}, but the small-sample reference of the test takes the first "
                f"random-effect factor as the replicates; list {nested[0]!r}, within whose "
                f"levels it is constant, first: `random_effects={order!r}`."
            )
        else:
            combo = f"{factor}_{variable}"
            joined = f"obs[{factor!r}].astype(str) + '_' + obs[{variable!r}].astype(str)"
            message = (
                f"{head}, so the fit reads {factor!r} as crossed with {variable!r} (the same "
                f"{factor}s in each {variable}). If the labels were reused for different "
                f"{factor}s, make them unique: `obs[{factor!r}] = {joined}`. If the same "
                f"{factor}s really contribute to each {variable} (paired samples, or cell "
                f"types within {factor}s), the test is within {factor}s and leaves out "
                f"{factor}-by-{variable} variation: add a random effect for the combination, "
                f"listed first, `random_effects=[{combo!r}, {factor!r}]` with "
                f"`obs[{combo!r}] = {joined}` (or filter bg.de.CrossedGroupingWarning)."
            )
        warnings.warn(message, CrossedGroupingWarning, stacklevel=user_stacklevel())


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
