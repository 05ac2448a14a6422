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

from batchglm.mixed.few_groups import warn_few_groups_lrt
from batchglm.mixed.moderation import with_moderation
from batchglm.mixed.random_effects import check_mixed_dispersion, check_same_random_effects
from batchglm.result import FitResult


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
