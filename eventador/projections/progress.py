"""Progress bars live in ``eventador.progress`` (the store shows them too); the old names stay here."""

from eventador.progress import LONG, Bar, NotebookBar, bar, query_progress, wanted

_NotebookBar = NotebookBar  # its name before it moved

__all__ = ["LONG", "Bar", "bar", "query_progress", "wanted"]
