"""Seed-era utilities: ``glm.utils.stats``."""

from __future__ import annotations

from batchglm.api.utils import stats

__all__ = ["stats"]
