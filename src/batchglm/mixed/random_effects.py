"""Fitted random intercepts: variances per feature and predicted modes per group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

Array = NDArray[np.float64]


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
    """

    factors: list[str]
    levels: list[pd.Index]
    variance: Array
    modes: list[Array]

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
