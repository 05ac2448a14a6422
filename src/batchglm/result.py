"""Fit results as labelled pandas objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.linalg import block_diag

from batchglm.design import Design
from batchglm.solvers.status import CONVERGED_CODES, Status

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.mixed.random_effects import RandomEffects
    from batchglm.mixed.small_sample import SmallSample

Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FitResult:
    """Per-feature maximum-likelihood fits of a location/scale GLM.

    Coefficients are the *full* parameters (``C @ theta_free``), so they satisfy the
    constraints exactly. Standard errors are the square roots of the diagonal of the inverse
    observed information (negative Hessian of the log-likelihood over the joint free
    location and scale parameters), mapped back as ``C Cov C^T``.

    Attributes
    ----------
    family : str
        Family name.
    feature_names : pandas.Index
        Feature names.
    obs_names : pandas.Index
        Observation names.
    loc, scale : Design
        Designs with coefficient names and constraint matrices.
    size_factors : ndarray
        Size factor per observation.
    theta_free : ndarray
        Free parameters ``(F, k_loc + k_scale)``.
    cov_free : ndarray
        Covariance of the free parameters ``(F, k, k)``.
    loglik_values : ndarray
        Log-likelihood per feature.
    n_iter_values : ndarray
        Newton iterations per feature.
    status_codes : ndarray
        :class:`~batchglm.solvers.status.Status` code per feature.
    settings : dict
        Solver settings used.
    random : RandomEffects or None
        Mixed models (``bg.fit(..., random_effects=...)``): variances and modes of the
        random intercepts; ``None`` for plain GLMs.
    small_sample : SmallSample or None
        Mixed models: denominator degrees of freedom per location coefficient for
        small-sample Wald tests (t / F references, see :mod:`batchglm.mixed.small_sample`);
        ``None`` uses the chi-squared reference.
    """

    family: str
    feature_names: pd.Index
    obs_names: pd.Index
    loc: Design
    scale: Design
    size_factors: Array
    theta_free: Array
    cov_free: Array
    loglik_values: Array
    n_iter_values: NDArray[np.int32]
    status_codes: NDArray[np.int8]
    settings: dict[str, object] = field(default_factory=dict)
    random: RandomEffects | None = None
    small_sample: SmallSample | None = None

    @property
    def _k_loc(self) -> int:
        return self.loc.n_free

    def _frame(self, values: Array, names: list[str]) -> pd.DataFrame:
        return pd.DataFrame(values, index=self.feature_names, columns=names)

    @property
    def coef_loc(self) -> pd.DataFrame:
        """Location coefficients, features x coefficient names."""
        return self._frame(self.theta_free[:, : self._k_loc] @ self.loc.constraints.T,
                           self.loc.names)

    @property
    def coef_scale(self) -> pd.DataFrame:
        """Scale coefficients, features x coefficient names (empty without a scale model)."""
        return self._frame(self.theta_free[:, self._k_loc :] @ self.scale.constraints.T
                           if self.theta_free.shape[1] > self._k_loc
                           else np.zeros((self.theta_free.shape[0], 0)),
                           self.scale.names if self.theta_free.shape[1] > self._k_loc else [])

    @cached_property
    def _cov_full(self) -> Array:
        blocks = [self.loc.constraints]
        if self.theta_free.shape[1] > self._k_loc:
            blocks.append(self.scale.constraints)
        c = block_diag(*blocks)
        return np.einsum("ij,fjk,lk->fil", c, self.cov_free, c, optimize=True)

    def covariance(self, feature: int | str | None = None) -> Array | pd.DataFrame:
        """Covariance of the full parameters (location first, then scale).

        Parameters
        ----------
        feature : int or str, optional
            A feature position or name. Without it, all features.

        Returns
        -------
        ndarray or pandas.DataFrame
            ``(F, p, p)`` array for all features, or a labelled ``(p, p)`` DataFrame with a
            ``(model, coefficient)`` MultiIndex for one feature.
        """
        if feature is None:
            return self._cov_full
        pos = self.feature_names.get_loc(feature) if isinstance(feature, str) else feature
        index = pd.MultiIndex.from_tuples(
            [("loc", n) for n in self.loc.names]
            + ([("scale", n) for n in self.scale.names] if self._cov_full.shape[1]
               > len(self.loc.names) else []),
            names=["model", "coefficient"],
        )
        return pd.DataFrame(self._cov_full[pos], index=index, columns=index)

    def _se(self, start: int, stop: int) -> Array:
        diag = np.diagonal(self._cov_full, axis1=1, axis2=2)[:, start:stop]
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.where(diag >= 0, diag, np.nan))

    @property
    def se_loc(self) -> pd.DataFrame:
        """Standard errors of the location coefficients."""
        p = len(self.loc.names)
        return self._frame(self._se(0, p), self.loc.names)

    @property
    def se_scale(self) -> pd.DataFrame:
        """Standard errors of the scale coefficients."""
        p = len(self.loc.names)
        names = self.scale.names if self._cov_full.shape[1] > p else []
        return self._frame(self._se(p, p + len(names)), names)

    @property
    def loglik(self) -> pd.Series:
        """Log-likelihood per feature, including all constant terms."""
        return pd.Series(self.loglik_values, index=self.feature_names, name="loglik")

    @property
    def converged(self) -> pd.Series:
        """Whether each feature reached an optimum (possibly on a documented bound)."""
        ok = np.isin(self.status_codes, [int(s) for s in CONVERGED_CODES])
        return pd.Series(ok, index=self.feature_names, name="converged")

    @property
    def n_iter(self) -> pd.Series:
        """Newton iterations per feature."""
        return pd.Series(self.n_iter_values, index=self.feature_names, name="n_iter")

    @property
    def status(self) -> pd.Series:
        """Status label per feature; see :class:`batchglm.Status`."""
        labels = [Status(int(s)).label for s in self.status_codes]
        return pd.Series(labels, index=self.feature_names, name="status", dtype="category")

    @property
    def design_loc(self) -> pd.DataFrame:
        """Location design with coefficient-name columns."""
        return self.loc.frame(self.obs_names)

    @property
    def design_scale(self) -> pd.DataFrame:
        """Scale design with coefficient-name columns."""
        return self.scale.frame(self.obs_names)

    @property
    def obs(self) -> pd.DataFrame | None:
        """Observation annotations that formula designs were evaluated on (else None)."""
        return self.loc.obs if self.loc.obs is not None else self.scale.obs

    @property
    def constraints_loc(self) -> Array:
        """Location constraint matrix ``C`` (identity when unconstrained)."""
        return self.loc.constraints

    @property
    def constraints_scale(self) -> Array:
        """Scale constraint matrix ``C`` (identity when unconstrained)."""
        return self.scale.constraints

    def summary(self) -> pd.DataFrame:
        """One row per feature: log-likelihood, convergence, iterations and status.

        Returns
        -------
        pandas.DataFrame
            The per-feature diagnostics.
        """
        return pd.concat([self.loglik, self.converged, self.n_iter, self.status], axis=1)

    def to_anndata(self, adata: AnnData, key_added: str = "batchglm") -> AnnData:
        """Write the fit into an AnnData's ``varm``, ``var`` and ``uns``, in place.

        See :func:`batchglm.anndata_io.to_anndata` for every key written:
        ``varm[f"{key}_coef_loc"]``, ``_coef_scale``, ``_se_loc``, ``_se_scale``;
        ``var[f"{key}_loglik"]``, ``_converged``, ``_status``, ``_n_iter``; ``uns[key]``.

        Parameters
        ----------
        adata : anndata.AnnData
            The data the fit came from (features matched by ``var_names``).
        key_added : str
            Prefix of the keys.

        Returns
        -------
        anndata.AnnData
            ``adata``, modified in place.
        """
        from batchglm.anndata_io import to_anndata

        return to_anndata(self, adata, key_added)

    def __repr__(self) -> str:
        counts = self.status.value_counts()
        state = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        return (
            f"FitResult(family={self.family!r}, n_features={len(self.feature_names)}, "
            f"loc={self.loc.names}, scale={list(self.coef_scale.columns)}, {state})"
        )

    @property
    def random_var(self) -> pd.DataFrame:
        """Random-intercept variances, features x grouping factors (natural-log scale).

        Raises
        ------
        ValueError
            For a fit without random effects.
        """
        return self._random().variance_frame(self.feature_names)

    def random_effects(self, factor: str | None = None) -> pd.DataFrame:
        """Predicted random intercepts (conditional modes), groups x features.

        Parameters
        ----------
        factor : str, optional
            The grouping factor; by default the only one.

        Returns
        -------
        pandas.DataFrame
            ``u_g`` on the natural-log scale of the mean, one row per group.

        Raises
        ------
        ValueError
            For a fit without random effects or an unknown factor.
        """
        return self._random().modes_frame(factor, self.feature_names)

    def _random(self) -> RandomEffects:
        if self.random is None:
            raise ValueError(
                "this fit has no random effects; fit with `bg.fit(..., random_effects=...)`."
            )
        return self.random
