"""Fitted random intercepts: variances per feature and predicted modes per group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]

#: ``sigma^2`` below this counts as a variance on its boundary (zero): the Newton
#: decrement ``1e-10`` leaves ``|sigma|`` about ``1e-5`` away from an optimum at zero.
VAR_AT_BOUND = 1e-6


@dataclass(frozen=True, eq=False)
class RandomEffects:
    """Random intercepts of a mixed fit.

    Attributes
    ----------
    factors : list of str
        Grouping factors (``obs`` columns).
    levels : list of pandas.Index
        Group labels per factor.
    variance : ndarray
        ``(F, n_factors)`` variances on the natural-log scale of the mean.
    modes : list of ndarray
        Per factor, ``(n_groups, F)`` conditional modes ``u_g`` (natural-log scale).
    index : list of ndarray or None
        Per factor, ``(n_obs,)`` group of each observation (positions in ``levels``), for
        donor-level tests (:mod:`batchglm.de.mixed_separation`).
    """

    factors: list[str]
    levels: list[pd.Index]
    variance: Array
    modes: list[Array]
    index: list[NDArray[np.intp]] | None = None

    def variance_frame(self, features: pd.Index) -> pd.DataFrame:
        """Variances as a features x factors DataFrame.

        Parameters
        ----------
        features : pandas.Index
            Feature names.

        Returns
        -------
        pandas.DataFrame
            One column per grouping factor.
        """
        return pd.DataFrame(self.variance, index=features, columns=self.factors)

    def at_bound_frame(self, features: pd.Index, fitted: NDArray[np.bool_]) -> pd.DataFrame:
        """Which factor's variance is estimated at zero, features x factors.

        lme4 calls such a fit *singular* (``isSingular``); glmmTMB reports the variance as
        0. With several factors the status ``random_var_at_bound`` says only that at least
        one variance is 0; this says which.

        Parameters
        ----------
        features : pandas.Index
            Feature names.
        fitted : ndarray of bool
            ``(F,)`` features that were fitted (not all zero).

        Returns
        -------
        pandas.DataFrame
            Booleans, one column per grouping factor: ``variance < VAR_AT_BOUND``.
        """
        at_bound = (self.variance < VAR_AT_BOUND) & np.asarray(fitted)[:, None]
        return pd.DataFrame(at_bound, index=features, columns=self.factors)

    def modes_frame(self, factor: str | None, features: pd.Index) -> pd.DataFrame:
        """Modes of one factor as a groups x features DataFrame.

        Parameters
        ----------
        factor : str or None
            Factor name; ``None`` for the only one.
        features : pandas.Index
            Feature names.

        Returns
        -------
        pandas.DataFrame
            Modes ``u_g``.

        Raises
        ------
        ValueError
            For an unknown factor, or ``None`` with several factors.
        """
        if factor is None:
            if len(self.factors) != 1:
                raise ValueError(f"name one of the grouping factors {self.factors}.")
            factor = self.factors[0]
        if factor not in self.factors:
            raise ValueError(
                f"{factor!r} is not a random-effects factor of this fit; its factors are "
                f"{self.factors}."
            )
        i = self.factors.index(factor)
        return pd.DataFrame(self.modes[i], index=self.levels[i], columns=features)


def check_same_random_effects(full: FitResult, reduced: FitResult) -> None:
    """Require two fits compared by a likelihood-ratio test to share random effects.

    Parameters
    ----------
    full, reduced : FitResult
        The two fits.

    Raises
    ------
    ValueError
        When their random-effects factors differ (a test of a variance component on its
        boundary needs a mixture reference, which is not implemented), or either was
        fitted with ``reml=True`` (see :func:`batchglm.mixed.small_sample.check_not_reml`).
    """
    from batchglm.mixed.small_sample import check_not_reml

    check_not_reml(full, reduced)
    f = full.random.factors if full.random is not None else []
    r = reduced.random.factors if reduced.random is not None else []
    if f != r:
        raise ValueError(
            f"`full` and `reduced` must have the same random effects, but they have {f} and "
            f"{r}; testing a variance component (on its boundary under the null) needs a "
            "chi-squared mixture reference, which `bg.de.lrt` does not implement."
        )


def check_mixed_dispersion(
    dispersion: str, fits: tuple[FitResult | None, ...] = (), random_effects: object = None
) -> None:
    """Reject dispersion shrinkage for mixed fits.

    Parameters
    ----------
    dispersion : str
        The test's ``dispersion`` argument.
    fits : tuple of FitResult
        Fits about to be tested.
    random_effects : object
        ``random_effects`` passed on to :func:`batchglm.fit`, if any.

    Raises
    ------
    ValueError
        When ``dispersion`` is not ``"mle"`` and a fit has random effects: the shrunken
        refits are plain GLMs and would drop them.
    """
    mixed = random_effects is not None or any(f is not None and f.random is not None for f in fits)
    if mixed and dispersion != "mle":
        raise ValueError(
            f"`dispersion` must be 'mle' for fits with random effects, but {dispersion!r} "
            "was given; the small-sample reference of a mixed fit is its between-within "
            "t / F reference (see docs/mixed_model.md)."
        )
