from __future__ import annotations

import numpy as np
import pytest


def seed_example_1(ncells: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Design and constraint rows of the seed tutorial's example 1."""
    dmat = np.zeros([ncells, 6])
    q = ncells // 4
    dmat[:, 0] = 1
    for k in range(4):
        dmat[k * q : (k + 1) * q, 1 + k] = 1
    dmat[2 * q :, 5] = 1
    cons = np.zeros([2, 6])
    cons[0, 3] = -1
    cons[0, 4:5] = 1
    cons[1, 1] = -1
    cons[1, 2:5] = 1
    return dmat, cons


def seed_example_2(ncells: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Design and constraint rows of the seed tutorial's example 2."""
    e = ncells // 8
    dmat = np.zeros([ncells, 10])
    dmat[:, 0] = 1
    for k in range(4):
        dmat[2 * k * e : 2 * (k + 1) * e, 1 + k] = 1
    for k, blocks in enumerate([(0, 4), (1, 5), (2, 6), (3, 7)]):
        for b in blocks:
            dmat[b * e : (b + 1) * e, 5 + k] = 1
    dmat[4 * e :, 9] = 1
    cons = np.zeros([4, 10])
    cons[0, 3] = -1
    cons[0, 4:5] = 1
    cons[1, 1] = -1
    cons[1, 2:5] = 1
    cons[2, 7] = -1
    cons[2, 8:9] = 1
    cons[3, 5] = -1
    cons[3, 6:9] = 1
    return dmat, cons


@pytest.fixture
def example_1() -> tuple[np.ndarray, np.ndarray]:
    return seed_example_1()


@pytest.fixture
def example_2() -> tuple[np.ndarray, np.ndarray]:
    return seed_example_2()


@pytest.fixture(autouse=True, scope="session")
def _anndata_writes_pandas3_strings():
    """Let test fixtures write pandas >= 3 text columns with anndata 0.11-0.12.

    With pandas 3 the observation names of a test AnnData are ``str`` arrays, which
    anndata 0.11-0.12 writes only when ``allow_write_nullable_strings`` is on (the library's
    own writer, ``anndata_write.write_h5ad``, switches it on for its writes). Nothing
    changes with pandas 2.
    """
    import anndata

    settings = getattr(anndata, "settings", None)
    if settings is None or not hasattr(settings, "allow_write_nullable_strings"):
        yield
        return
    with settings.override(allow_write_nullable_strings=True):
        yield
