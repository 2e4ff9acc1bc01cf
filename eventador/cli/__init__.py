"""The ``eventador`` command line: ``main`` parses and dispatches.

``main`` builds the parser and runs the store commands; ``projections`` and ``queue``
add their command groups; ``common`` holds what every command shares (output format,
printing a frame, opening an existing store).
"""

from eventador.cli.main import DEMO_DIR, main

__all__ = ["DEMO_DIR", "main"]
