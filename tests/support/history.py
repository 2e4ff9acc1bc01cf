"""A store recorded by a bank's first release, read by today's code (``history_today``).

``record_first_release`` writes it in a child process (``history_v1``: its classes claim
the event types today's classes claim); ``forget_upcasters`` undoes what the upcaster
modules registered, so that each test starts from the classes alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eventador.upcasting import upcasters

REPO = Path(__file__).resolve().parents[2]
TODAY = "tests.support.history_today"
UPCASTERS = "tests.support.history_upcasters"
FIX = "tests.support.history_fix"


def record_first_release(path: Path) -> Path:
    """Returns `path`, where the first release's code has written its events (see ``history_v1``)."""
    subprocess.run(
        [sys.executable, "-m", "tests.support.history_v1", str(path)], cwd=REPO, check=True, timeout=120
    )
    return path


def forget_upcasters() -> None:
    """Remove the upcasters of the ``hist.*`` types, and the modules that registered them
    (importing one again registers its upcasters again)."""
    for event_type in ("hist.Opened", "hist.Deposited", "hist.Withdrawn", "hist.Closed"):
        upcasters.remove(event_type)
    for module in (UPCASTERS, FIX):
        sys.modules.pop(module, None)
