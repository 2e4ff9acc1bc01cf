"""Live SQL views are kept by the store: ``eventador.store.live_views``; the old names stay here."""

from eventador.store.live_views import VIEWS_FILE, LiveView, LiveViews, check_identifier, taken_names

__all__ = ["VIEWS_FILE", "LiveView", "LiveViews", "check_identifier", "taken_names"]
