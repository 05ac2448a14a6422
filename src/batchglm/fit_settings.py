"""The options a fit was made with, as a typed record (``FitResult.settings``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class FitSettings:
    """Solver and input options of a fit, kept on the result.

    Tests and dispersion estimates that refit a model (separated features, thresholded
    tests, MAP dispersions) read ``max_iter`` and ``tol`` from here, and functions that read
    the data again read ``layer``. Item access (``settings["tol"]``,
    ``settings.get("layer")``) still works as it did when settings were a dict.

    Attributes
    ----------
    family : str
        Registered family name (``"nb"``, ``"poisson"``, ``"normal"``, ``"beta"``).
    max_iter : int
        Newton iteration limit per feature.
    tol : float
        Convergence tolerance of the solver (change in log-likelihood).
    fixed_scale : bool
        Whether the scale coefficients were given (``bg.fit(..., fixed_scale=...)``) and
        held fixed rather than estimated.
    layer : str or None
        AnnData layer the data were read from; ``None`` for ``.X`` or non-AnnData input.
    chunk_size : int or None
        Features per block as requested; ``None`` for the automatic choice.
    n_jobs : int or None
        Worker threads as requested; ``None`` for the automatic choice.
    size_factors : str or None
        How size factors were set: a method name (e.g. ``"median_ratio"``), ``"given"``
        for user values, or ``None`` for none (all 1).
    random_effects : list of str or None
        Grouping factors of random intercepts (mixed models); ``None`` for plain GLMs.
    method : str
        ``"ml"`` (exact maximum likelihood) or ``"laplace"`` (mixed models).
    weights : ndarray or None
        Observation weights ``(n_obs,)`` or ``(n_obs, n_features)`` as fitted
        (``bg.fit(..., weights=...)``); ``None`` for unweighted fits.
    offset : ndarray or None
        Location offsets on the link scale ``(n_obs,)`` or ``(n_obs, n_features)``, besides
        ``log(size_factors)``; ``None`` for none.
    """

    family: str = ""
    max_iter: int = 100
    tol: float = 1e-10
    fixed_scale: bool = False
    layer: str | None = None
    chunk_size: int | None = None
    n_jobs: int | None = None
    size_factors: str | None = None
    random_effects: list[str] | None = None
    method: str = "ml"
    weights: np.ndarray | None = field(default=None, compare=False, repr=False)
    offset: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], family: str = "") -> FitSettings:
        """Build settings from a dict of the same names (the old form of ``settings``).

        Parameters
        ----------
        values : Mapping
            Option names and values; missing ones take their defaults.
        family : str
            Family name, used unless ``values`` names one.

        Returns
        -------
        FitSettings
            The typed settings.

        Raises
        ------
        ValueError
            For a name that is not a field of :class:`FitSettings`.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"fit settings must be among {sorted(names)}, but {unknown} were given; add a "
                "field to `batchglm.fit_settings.FitSettings` for a new option."
            )
        merged = {"family": family, **values}
        return cls(**merged)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """Return the settings as a plain dict (for storage in ``AnnData.uns``).

        Returns
        -------
        dict
            Field names and values.
        """
        return asdict(self)

    def __getitem__(self, key: str) -> object:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: object = None) -> object:
        """Return a setting by name, or ``default`` for a name that is not a field.

        Parameters
        ----------
        key : str
            Field name.
        default : object
            Returned when ``key`` is not a field.

        Returns
        -------
        object
            The value.
        """
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> list[str]:
        """Return the field names, in order.

        Returns
        -------
        list of str
            Names that item access accepts.
        """
        return [f.name for f in fields(self)]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
