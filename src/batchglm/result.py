"""Fit results as labelled pandas objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.linalg import block_diag

from batchglm.align import name_position
from batchglm.design import Design
from batchglm.families import Family, get_family
from batchglm.fit_settings import FitSettings
from batchglm.solvers.status import CONVERGED_CODES, Status

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.data import Data
    from batchglm.fitted import FeatureSelection
    from batchglm.mixed.random_effects import RandomEffects
    from batchglm.mixed.small_sample import SmallSample
    from batchglm.predict import Prediction

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
    family : Family
        The noise model object: its location link (``family.link``, with ``inverse`` and
        ``d_inverse``), :meth:`~batchglm.families.Family.fitted_mean` and
        :meth:`~batchglm.families.Family.deviance`. It compares equal to its name, so
        ``res.family == "nb"`` holds for NB fits; a name given here is turned into the
        object.
    feature_names : pandas.Index
        Feature names, as given (duplicates are kept; look-ups by a duplicated name are
        refused, see :mod:`batchglm.align`).
    obs_names : pandas.Index
        Observation names, as given.
    loc, scale : Design
        Designs with coefficient names and constraint matrices.
    size_factors : ndarray
        Size factor per observation.
    theta_free : ndarray
        Free parameters ``(F, k_loc + k_scale)``.
    cov_free : ndarray
        Covariance of the free parameters ``(F, k, k)``.
    loglik_values : ndarray
        Log-likelihood per feature, as stored; read it as :attr:`loglik` (the one public
        name of the quantity, a Series labelled by feature).
    n_iter_values : ndarray
        Newton iterations per feature, as stored; read them as :attr:`n_iter`.
    status_codes : ndarray
        :class:`~batchglm.solvers.status.Status` code per feature, as stored; read the
        labels as :attr:`status`.
    settings : FitSettings
        Solver and input options used (``max_iter``, ``tol``, ``layer``, ...; see
        :class:`~batchglm.fit_settings.FitSettings`); a dict given here is turned into it.
    data : Data or None
        The data the fit was made on, in the fit's order (a reference, not a copy: dense
        arrays, sparse matrices, dask arrays and backed files stay where they are). Tests
        that need the counts again (``dispersion="map"``/``"ql"``, the likelihood-ratio
        statistic of separated features, Cox-Reid scale tests) use it when no ``data=`` is
        given. ``None`` for results built by hand.
    random : RandomEffects or None
        Mixed models (``bg.fit(..., random_effects=...)``): variances and modes of the
        random intercepts; ``None`` for plain GLMs.
    small_sample : SmallSample or None
        Mixed models: denominator degrees of freedom per location coefficient for
        small-sample Wald tests (t / F references, see :mod:`batchglm.mixed.small_sample`);
        ``None`` uses the chi-squared reference.
    """

    family: Family
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
    settings: FitSettings = field(default_factory=FitSettings)
    data: Data | None = field(default=None, repr=False)
    random: RandomEffects | None = None
    small_sample: SmallSample | None = None
    #: Estimates derived from the fit and its own data (shrunken dispersions, QL refits),
    #: computed once and reused by later tests; empty in every copy.
    derived: dict[tuple[str, ...], Any] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Results built with a family name or a settings dict (by hand, or by code written
        # before both were objects) get the objects.
        family = get_family(self.family)
        object.__setattr__(self, "family", family)
        if not isinstance(self.settings, FitSettings):
            settings = FitSettings.from_mapping(self.settings, family=family.name)
            object.__setattr__(self, "settings", settings)

    @property
    def _k_loc(self) -> int:
        return self.loc.n_free

    @property
    def has_scale(self) -> bool:
        """Whether the fit has scale parameters (the family has a scale model).

        Returns
        -------
        bool
            ``False`` for Poisson fits, whose parameters are the location coefficients only.
        """
        return self.theta_free.shape[1] > self.loc.n_free

    def _frame(self, values: Array, names: list[str]) -> pd.DataFrame:
        return pd.DataFrame(values, index=self.feature_names, columns=names)

    @property
    def coef_loc(self) -> pd.DataFrame:
        """Location coefficients, features x coefficient names."""
        return self._frame(
            self.theta_free[:, : self._k_loc] @ self.loc.constraints.T, self.loc.names
        )

    @property
    def coef_scale(self) -> pd.DataFrame:
        """Scale coefficients, features x coefficient names (empty without a scale model)."""
        return self._frame(
            self.theta_free[:, self._k_loc :] @ self.scale.constraints.T
            if self.has_scale
            else np.zeros((self.theta_free.shape[0], 0)),
            self.scale.names if self.has_scale else [],
        )

    @cached_property
    def _cov_full(self) -> Array:
        blocks = [self.loc.constraints]
        if self.has_scale:
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

        Raises
        ------
        KeyError
            When the name is not a feature of the fit.
        ValueError
            When the name is shared by several features (duplicated names are kept as
            given); look such features up by position.
        """
        if feature is None:
            return self._cov_full
        pos = (
            name_position(self.feature_names, feature, "feature")
            if isinstance(feature, str)
            else int(feature)
        )
        index = pd.MultiIndex.from_tuples(
            [("loc", n) for n in self.loc.names]
            + ([("scale", n) for n in self.scale.names] if self.has_scale else []),
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
        names = self.scale.names if self.has_scale else []
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

        See :func:`batchglm.anndata_write.to_anndata` for every key written:
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
        from batchglm.anndata_write import to_anndata

        return to_anndata(self, adata, key_added)

    def __repr__(self) -> str:
        counts = self.status.value_counts()
        state = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        return (
            f"FitResult(family={self.family.name!r}, n_features={len(self.feature_names)}, "
            f"loc={self.loc.names}, scale={list(self.coef_scale.columns)}, {state})"
        )

    # -- Fitted values, residuals, predictions and transformed counts ---------------------
    # Thin wrappers; the computations live in batchglm.fitted, .residuals, .predict, .vst.

    def fitted(self, features: FeatureSelection = None) -> pd.DataFrame:
        """Fitted mean per observation and feature, size factors included.

        Parameters
        ----------
        features : str, slice, sequence of str or int, optional
            Features to compute (names, positions or a slice); ``None`` for all. Only an
            ``(n_obs, n_selected)`` block is allocated.

        Returns
        -------
        pandas.DataFrame
            ``(n_obs, n_selected)`` means on the response scale, obs_names x feature names.
            For mixed fits (``random_effects=``) these are population-level means, with the
            random intercepts at 0 (not the conditional means given the predicted modes).
        """
        from batchglm.fitted import fitted

        return fitted(self, features)

    def residuals(
        self,
        data: Any,
        kind: str = "pearson",
        *,
        seed: int | None = 0,
        features: FeatureSelection = None,
        layer: str | None = None,
    ) -> pd.DataFrame:
        """Pearson, deviance or randomized quantile residuals.

        See :func:`batchglm.residuals.residuals` for the definitions (Pearson and deviance
        residuals equal statsmodels' for NB and Poisson; quantile residuals follow Dunn and
        Smyth 1996).

        Parameters
        ----------
        data : array_like, scipy.sparse, pandas.DataFrame or AnnData
            The data of the fit.
        kind : {"pearson", "deviance", "quantile"}
            Residual type.
        seed : int or None
            Seed of ``numpy.random.default_rng`` for randomized quantile residuals.
        features : str, slice, sequence of str or int, optional
            Features to compute; ``None`` for all.
        layer : str, optional
            AnnData layer of ``data``.

        Returns
        -------
        pandas.DataFrame
            ``(n_obs, n_selected)`` unitless residuals. For mixed fits they are taken from
            the population-level means (random intercepts at 0), so group structure that
            the random effects absorb still shows in them.

        Raises
        ------
        ValueError
            For an unknown ``kind`` or ``data`` whose shape or names differ from the fit's.
        """
        from batchglm.residuals import residuals

        return residuals(self, data, kind, seed=seed, features=features, layer=layer)

    def predict(
        self,
        obs_new: Any,
        *,
        features: FeatureSelection = None,
        se: bool = False,
        size_factors: Any = None,
    ) -> pd.DataFrame | Prediction:
        """Predicted means for new observations (see :func:`batchglm.predict.predict`).

        Parameters
        ----------
        obs_new : pandas.DataFrame or array_like
            New annotations (formula fits) or a new location design matrix.
        features : str, slice, sequence of str or int, optional
            Features to predict; ``None`` for all.
        se : bool
            Also return standard errors (linear predictor, and the mean by the delta
            method) as a :class:`batchglm.predict.Prediction`.
        size_factors : array_like, optional
            Size factors of the new observations; without them, a size factor of 1.

        Returns
        -------
        pandas.DataFrame or batchglm.predict.Prediction
            ``(n_new, n_selected)`` predicted means on the response scale.

        Raises
        ------
        ValueError
            For unseen factor levels or a design that does not match the fit.
        """
        from batchglm.predict import predict

        return predict(self, obs_new, features=features, se=se, size_factors=size_factors)

    def normalized_counts(self, data: Any, *, layer: str | None = None) -> Any:
        """Divide counts by the fit's size factors (see :mod:`batchglm.vst`).

        Parameters
        ----------
        data : array_like, scipy.sparse, pandas.DataFrame or AnnData
            The counts of the fit.
        layer : str, optional
            AnnData layer with the counts.

        Returns
        -------
        pandas.DataFrame or scipy.sparse.csr_array
            Normalised counts; sparse input stays sparse.
        """
        from batchglm.vst import normalized_counts

        return normalized_counts(data, self.size_factors, layer=layer)

    def vst(self, data: Any, *, layer: str | None = None) -> pd.DataFrame:
        """DESeq2's variance-stabilising transformation with this fit's design (log2 scale).

        See :func:`batchglm.vst.vst_fit` (``blind=FALSE`` in DESeq2's terms).

        Parameters
        ----------
        data : array_like, scipy.sparse, pandas.DataFrame or AnnData
            The counts of the fit.
        layer : str, optional
            AnnData layer with the counts.

        Returns
        -------
        pandas.DataFrame
            ``(n_obs, n_features)`` transformed counts.

        Raises
        ------
        ValueError
            For a fit that is not NB with one dispersion per feature, or when the parametric
            dispersion trend cannot be fitted.
        """
        from batchglm.vst import vst_fit

        return vst_fit(self, data, layer=layer)

    # -- Mixed models -----------------------------------------------------------------

    @property
    def random_var(self) -> pd.DataFrame:
        """Random-intercept variances, features x grouping factors (natural-log scale).

        Raises
        ------
        ValueError
            For a fit without random effects.
        """
        return self._random().variance_frame(self.feature_names)

    @property
    def random_var_at_bound(self) -> pd.DataFrame:
        """Which random-intercept variance is estimated at 0, features x grouping factors.

        A feature with status ``random_var_at_bound`` has at least one variance at 0 (lme4:
        a singular fit); with several factors this says which (``random_var < 1e-6``;
        all-zero features are ``False``).

        Raises
        ------
        ValueError
            For a fit without random effects.
        """
        fitted = self.status_codes != int(Status.ALL_ZERO)
        return self._random().at_bound_frame(self.feature_names, fitted)

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
