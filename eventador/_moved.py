"""Old import paths that keep working after a module moved (with a DeprecationWarning)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forward(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `old` that finds each name in `new`, with a DeprecationWarning
    (which Python shows once per place that uses it)."""

    def __getattr__(name: str) -> Any:
        target = importlib.import_module(new)
        try:
            value = getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None
        if not name.startswith("__"):
            warnings.warn(f"{old} moved to {new}: import {name} from there", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
