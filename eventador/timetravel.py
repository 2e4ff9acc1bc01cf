"""Moved to ``eventador.store.diff``; importing from here still works and warns."""

from eventador._moved import forward

__getattr__ = forward(__name__, "eventador.store.diff")
