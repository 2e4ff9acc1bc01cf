"""Moved to ``eventador.store.live_views`` (the store keeps live views); importing from here still works and warns."""

from eventador._moved import forward

__getattr__ = forward(__name__, "eventador.store.live_views")
