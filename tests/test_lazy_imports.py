"""``import eventador`` stays light: pandas, matplotlib and ipywidgets load when a function needs them.

Each check runs in a fresh child process: this one has long imported them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# tqdm too: in a Jupyter kernel ``tqdm.auto`` loads ipywidgets.
HEAVY = ("pandas", "matplotlib", "ipywidgets", "tqdm")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after `code` ran in a new interpreter (from the repo)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", probe],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_import_eventador_loads_no_pandas_matplotlib_or_ipywidgets() -> None:
    assert _loaded_after("import eventador") == []


def test_no_module_of_the_package_loads_them_on_import() -> None:
    """The command line, the notebook helpers and eventador.testing included."""
    code = (
        "import importlib, pkgutil, eventador\n"
        "for m in pkgutil.walk_packages(eventador.__path__, 'eventador.'):\n"
        "    importlib.import_module(m.name)"
    )
    assert _loaded_after(code) == []
