"""The mixed-model branch of ``bg.de.lrt``: checks and reference set-up of mixed fits.

For fits with ``random_effects``: two fits with random intercepts are compared at the
same random effects (a test of a variance component is refused); dispersion shrinkage is
refused (its refits are plain GLMs); the full fit's small-sample reference is moderated
across features or not (``moderate=``, :mod:`batchglm.mixed.moderation`), and tests that
drop group-level columns with 2 or fewer groups in a level warn
(:mod:`batchglm.mixed.few_groups`). The statistic and its Bartlett-type F reference are
computed by :func:`batchglm.de.statistics.likelihood_ratio` through
:func:`batchglm.mixed.small_sample.lrt_reference_sf`. For fits without random effects
every function here is a no-op (or validates ``moderate``). See ``docs/mixed_model.md``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from batchglm.de.result import DEResult
from batchglm.inputs import data_of_fit
from batchglm.mixed.count_outliers import find_count_outliers
from batchglm.mixed.few_groups import warn_few_groups_lrt
from batchglm.mixed.moderation import with_moderation
from batchglm.mixed.random_effects import check_mixed_dispersion, check_same_random_effects
from batchglm.result import FitResult
from batchglm.warning_site import user_stacklevel


def mixed_ready_fits(full: FitResult, reduced: FitResult, moderate: bool | str | None) -> FitResult:
    """Check two ready fits' random effects and set the full fit's reference.

    Parameters
    ----------
    full, reduced : FitResult
        The ready fits passed to ``bg.de.lrt``.
    moderate : bool, str or None
        ``bg.de.lrt``'s ``moderate`` argument.

    Returns
    -------
    FitResult
        ``full`` with its small-sample reference moderated as asked (see
        :func:`mixed_reference`).

    Raises
    ------
    ValueError
        When the fits' random-effects factors differ or either is a REML fit
        (:func:`batchglm.mixed.random_effects.check_same_random_effects`), or ``moderate``
        is invalid for ``full`` (:func:`batchglm.mixed.moderation.with_moderation`).
    """
    check_same_random_effects(full, reduced)
    return mixed_reference(full, reduced, moderate)


def mixed_reference(full: FitResult, reduced: FitResult, moderate: bool | str | None) -> FitResult:
    """Moderate the full fit's group-level reference (or not) and warn on few groups.

    Parameters
    ----------
    full, reduced : FitResult
        The two fits of the test.
    moderate : bool, str or None
        ``None`` keeps the default (moderated, nonparametric prior, for mixed fits);
        ``True``, ``"npmle"``, ``"limma"`` or ``False``.

    Returns
    -------
    FitResult
        ``full``, or a copy whose ``small_sample`` is moderated as asked.

    Raises
    ------
    ValueError
        When moderation is asked of fits without random effects, or ``moderate`` is not
        one of the accepted values.

    Warns
    -----
    batchglm.mixed.few_groups.FewGroupsWarning
        When a dropped group-level column has 2 or fewer groups in a level.
    """
    full = with_moderation(full, moderate)
    warn_few_groups_lrt(full, reduced)
    return full


def check_lrt_dispersion(
    dispersion: str, fits: tuple[FitResult | None, ...] = (), random_effects: object = None
) -> None:
    """Refuse dispersion shrinkage for the LRT of mixed fits.

    Parameters
    ----------
    dispersion : str
        ``bg.de.lrt``'s ``dispersion`` argument.
    fits : tuple of FitResult
        Ready fits about to be tested.
    random_effects : object
        ``random_effects`` passed on to :func:`batchglm.fit`, if any.

    Raises
    ------
    ValueError
        When ``dispersion`` is not ``"mle"`` for fits with random effects
        (:func:`batchglm.mixed.random_effects.check_mixed_dispersion`).
    """
    check_mixed_dispersion(dispersion, fits, random_effects)


def flag_count_outliers(
    de: DEResult, data: Any, layer: str | None, alpha: float | None
) -> DEResult:
    """Give features of a mixed fit with an outlier count status ``outlier`` and NaN p.

    Mixed fits have no Cook's distance check (the bulk pipeline's); every positive count
    is referred to the fitted model at its conditional mean instead
    (:func:`batchglm.mixed.count_outliers.find_count_outliers`, Bonferroni over all
    counts). Flagged features get ``pvalue``/``padj`` ``NaN`` (DESeq2's treatment of
    outliers it cannot replace).

    Parameters
    ----------
    de : DEResult
        A test of ``de.fit``; returned unchanged for fits without random effects, families
        other than NB and Poisson, or when no counts are available.
    data : array_like, scipy.sparse, pandas.DataFrame, AnnData, Data or None
        The fit's counts, ``(n_obs, n_features)``; ``None`` uses ``de.fit.data``.
    layer : str, optional
        AnnData layer of ``data``.
    alpha : float or None
        Family-wise level of the check; ``None`` turns it off.

    Returns
    -------
    DEResult
        With ``count_outlier`` set and ``pval`` ``NaN`` where it is true.

    Raises
    ------
    ValueError
        When ``alpha`` is not ``None`` and not in ``(0, 1)``.

    Warns
    -----
    UserWarning
        Once, naming how many features were flagged, the first few, the worst count and its
        conditional mean, and what to do.
    """
    res = de.fit
    if alpha is not None and not 0 < alpha < 1:
        raise ValueError(
            f"`count_outlier_alpha` must lie in (0, 1) or be None, but {alpha} was given."
        )
    if alpha is None or res.random is None or res.random.index is None:
        return de
    if res.family.name not in ("nb", "poisson"):
        return de
    if data is None:
        data, layer = res.data, None
    if data is None:
        return de
    found = find_count_outliers(res, data_of_fit(data, res, layer=layer), alpha)
    flagged = found.outlier
    if not flagged.any():
        return replace(de, count_outlier=flagged)
    names = [str(n) for n in res.feature_names[flagged][:3]]
    more = ", ..." if flagged.sum() > 3 else ""
    worst = ""
    if found.worst is not None:
        f, o, y, mu = found.worst
        worst = (
            f"; worst: count {y:g} of '{res.feature_names[f]}' in observation "
            f"'{res.obs_names[o]}', conditional mean {mu:.3g}"
        )
    warnings.warn(
        f"{int(flagged.sum())} feature(s) ({', '.join(names)}{more}) of this mixed fit have a "
        f"count whose upper-tail probability at its conditional mean is below "
        f"{found.threshold:.2g} (alpha {alpha:g} over all counts){worst}. They get status "
        "'outlier' and NaN p-values: look at these genes' counts, or test them at the donor "
        "level (bg.pseudobulk + bg.de.test); count_outlier_alpha=None turns the check off.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return replace(de, pval=np.where(flagged, np.nan, de.pval), count_outlier=flagged)
