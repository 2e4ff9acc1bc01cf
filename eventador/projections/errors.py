"""The projection errors beyond ``ProjectionError`` (eventador/errors.py holds the root)."""

from __future__ import annotations

from eventador.errors import InvalidInputError, ProjectionError

__all__ = ["ProjectionNameError"]


class ProjectionNameError(ProjectionError, InvalidInputError):
    """A projection or live view name is not an identifier, or is taken: choose another.

    `projection` is the name, `reason` says what it collides with; `kind` is
    ``"projection"`` or ``"view"``. Also a ``ValueError``.
    """

    def __init__(self, name: str, reason: str, *, kind: str = "projection") -> None:
        super().__init__(name, reason)
        self.args = (f"{kind} {name!r}: {reason}",)
        self.kind = kind
