"""Moved to ``eventador.progress`` (the store shows bars too); importing from here still works and warns."""

from eventador._moved import forward

__getattr__ = forward(__name__, "eventador.progress")
