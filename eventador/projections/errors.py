"""Moved to ``eventador.errors`` (live views, kept by the store, raise ``ProjectionNameError`` too);
importing from here still works and warns."""

from eventador._moved import forward

__getattr__ = forward(__name__, "eventador.errors")
