"""Moved to ``eventador.aggregates``; importing from here still works and warns."""

from eventador._moved import forward

__getattr__ = forward(__name__, "eventador.aggregates")
