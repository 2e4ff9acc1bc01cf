"""The projection errors beyond ``ProjectionError``; both live in eventador/errors.py (live
views, kept by the store, raise ``ProjectionNameError`` too)."""

from __future__ import annotations

from eventador.errors import ProjectionNameError

__all__ = ["ProjectionNameError"]
