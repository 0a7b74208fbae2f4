"""Benchmarks and the experiment harness: scripts run from the repository root as `python -m bench.<name>`.

They import the product (`dataio`, `simcse`, `mining`, `curriculum`, `flows`) and each other (`from bench.x import
y`); the product never imports them. Run from a checkout's root, `-m` puts that checkout first on the path, so a
snapshot worktree runs its own bench and its own product code; the scripts that start Python children (the
experiment's workers, the growth benchmarks' one process per size) start them the same way, through
`module_command` and `child_options`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent  # the checkout this bench belongs to


def module_command(module: str, *args: str) -> list[str]:
    """`python -m <module> args...` with this interpreter; run it with `child_options()`."""
    return [sys.executable, "-m", module, *args]


def child_options() -> dict[str, Any]:
    """subprocess keyword arguments that make a child import this checkout's bench and product: the repository
    root as its working directory (what `-m` puts first on the path) and first on PYTHONPATH. Paths handed to the
    child must therefore be absolute."""
    path = os.environ.get("PYTHONPATH")
    return {"cwd": str(REPO), "env": {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}}
