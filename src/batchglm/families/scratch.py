"""Reusable scratch arrays for element-wise kernels.

The per-observation arrays of a feature block are megabytes each; allocating them afresh on
every evaluation costs more (page faults on first touch) than the arithmetic done in them.
A :class:`Scratch` hands out the same buffers again on the next call. Results written to
scratch buffers are valid until the next call that uses the same scratch, so each feature
block (and thread) owns its own.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


class Scratch:
    """Named float64 buffers, re-created only when the requested shape changes."""

    def __init__(self) -> None:
        self._arrays: dict[str, Array] = {}

    def __call__(self, name: str, shape: tuple[int, ...]) -> Array:
        """Return the buffer ``name`` with ``shape`` (contents undefined).

        Parameters
        ----------
        name : str
            Buffer name; one per live intermediate.
        shape : tuple of int
            Required shape.

        Returns
        -------
        ndarray
            A float64 array of that shape.
        """
        buf = self._arrays.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape)
            self._arrays[name] = buf
        return buf


def fresh(name: str, shape: tuple[int, ...]) -> Array:
    """Allocate a new array each time: the scratch used when the caller gives none.

    Parameters
    ----------
    name : str
        Ignored.
    shape : tuple of int
        Required shape.

    Returns
    -------
    ndarray
        A new float64 array.
    """
    return np.empty(shape)
