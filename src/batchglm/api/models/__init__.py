"""Seed-era model namespaces: ``glm.models.nb_glm``."""

from __future__ import annotations

from batchglm.api.models import nb_glm

__all__ = ["nb_glm"]
