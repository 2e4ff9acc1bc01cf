"""The ``eventador`` command line: ``main`` parses and dispatches.

``main`` builds the parser and runs the command asked for; each command group adds its
commands: ``store`` (info, sql, check, import, repair), ``schema``, ``demo``, ``projections`` and
``queue`` (queues and sagas). The groups share ``common`` (output format, printing a
frame, finding a store) and import nothing else of the command line.
"""

from eventador.cli.main import DEMO_DIR, main

__all__ = ["DEMO_DIR", "main"]
