"""Where Prefect keeps its state when the user has not said: under the run directory, ephemeral API.

Prefect reads its settings when it is first imported, so `configure_prefect_home` must run before
anything imports `prefect` (the CLI loads the config, calls this, then imports the flows). A run then
needs no server: Prefect starts its ephemeral API on a SQLite file in `<run_dir>/.prefect`, and every
file the run writes stays inside the output directory the user named.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Prefect's ephemeral server starts in a subprocess; on a busy 2-core machine the first start (database
# creation and migrations) measured ~22 s, close to the default limit, so the default here is generous.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


def configure_prefect_home(run_dir: str | os.PathLike) -> Path | None:
    """Point PREFECT_HOME at `<run_dir>/.prefect` unless the user set it or uses a real server.

    Returns the folder chosen, or None when the user's own setting stands. Telemetry is turned off
    either way. Must be called before `prefect` is imported to take effect.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    if os.environ.get("PREFECT_HOME") or os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect" in sys.modules:  # too late to move it; the caller keeps Prefect's own default
        return None
    home = Path(run_dir).resolve() / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    return home


@contextlib.contextmanager
def exit_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so exit handlers run and Prefect's ephemeral server stops with us.

    During a flow Prefect handles SIGTERM itself (the run is marked crashed), then restores the previous
    handler and re-sends the signal; with Python's default handler the process would die at once and
    leave the ephemeral API's server process behind.
    """
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
