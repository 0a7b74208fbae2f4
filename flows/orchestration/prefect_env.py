"""Prefect's settings for a command-line run: where it keeps its state, and what it prints.

Prefect reads its settings when it is first imported, so `configure_prefect_home` and
`configure_prefect_logging` must run before anything imports `prefect` (the CLI loads the config, calls
them, then imports the flows). A run then needs no server: Prefect starts its ephemeral API on a SQLite
file in `<run_dir>/.prefect`, and every file the run writes stays inside the output directory the user
named. On the terminal the run's own lines show at INFO; Prefect's own INFO lines (banners, one
"Finished in state Completed()" per task) only at DEBUG, through Prefect's own logging config mechanism.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Prefect's ephemeral server starts in a subprocess; on a busy small machine the first start (database
# creation and migrations) comes close to Prefect's default limit (docs/benchmarks.md), so ours is generous.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"

# Prefect's default logging config plus a console filter for Prefect's own INFO lines (see the file's header).
LOGGING_CONFIG = Path(__file__).with_name("prefect_logging.yml")

# Telemetry off in this process and every process it starts (Prefect's server, a flow's subprocesses, Dask or Ray
# workers): DO_NOT_TRACK is the shared switch, read by Prefect's client (which also shows its first-run notice on a
# terminal unless it is set) and Hugging Face's hub; Prefect's server and MLflow read only their own (MLflow takes
# DO_NOT_TRACK as "true" alone, not "1").
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "MLFLOW_DISABLE_TELEMETRY": "true"}


def turn_off_telemetry() -> None:
    """Set `TELEMETRY_OFF` where the user has not set the variable (an empty value counts as not set: the tools
    read it as telemetry on). Must run before `prefect` is imported: its client decides on import."""
    for key, value in TELEMETRY_OFF.items():
        if not os.environ.get(key):
            os.environ[key] = value


def configure_prefect_home(run_dir: str | os.PathLike) -> Path | None:
    """Point PREFECT_HOME at `<run_dir>/.prefect` unless the user set it or uses a real server.

    Returns the folder chosen, or None when the user's own setting stands. Telemetry is turned off
    either way (`turn_off_telemetry`). Must be called before `prefect` is imported to take effect.
    """
    turn_off_telemetry()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    if os.environ.get("PREFECT_HOME") or os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect" in sys.modules:  # too late to move it; the caller keeps Prefect's own default
        return None
    home = Path(run_dir).resolve() / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    return home


def start_line(home: Path | None) -> str:
    """What `run` says before Prefect starts (flows.run.progress.say): the wait for a temporary server, or the API."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return f"starting the flow on the Prefect API at {url}"
    where = f", its database in {home}" if home is not None else ""
    return f"starting Prefect: a temporary API server for this run{where} (10-20 s; more on a busy machine)"


def configure_prefect_logging(level: str | None = None) -> bool:
    """Set Prefect's console logging for this process and the flow-run processes it starts.

    `level` (a logging level name: DEBUG, INFO, WARNING, ...) becomes PREFECT_LOGGING_LEVEL; None keeps the
    user's (Prefect's default: INFO). Unless the user has a logging config of their own
    (PREFECT_LOGGING_SETTINGS_PATH, or `logging.yml` in their PREFECT_HOME), Prefect loads
    `prefect_logging.yml`, whose console filter hides Prefect's own INFO lines below DEBUG. Returns False,
    changing nothing, once `prefect` is imported (its logging is configured by then).
    """
    if "prefect" in sys.modules:
        return False
    if level is not None:
        os.environ["PREFECT_LOGGING_LEVEL"] = level.upper()
    user_home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    if not os.environ.get("PREFECT_LOGGING_SETTINGS_PATH") and not (user_home / "logging.yml").is_file():
        os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(LOGGING_CONFIG)
    return True


def configure_library_caches(run_dir: str | os.PathLike) -> None:
    """Caches that libraries write go inside the run folder, not the user's home: matplotlib's font list
    (MPLCONFIGDIR, rebuilt in well under a second) in `<run_dir>/cache/matplotlib`. A setting of the user's
    wins. Hugging Face's hub cache is only read (HF_HUB_OFFLINE) and stays where the user keeps models."""
    os.environ.setdefault("MPLCONFIGDIR", str(Path(run_dir).resolve() / "cache" / "matplotlib"))


class PrefectChatterFilter(logging.Filter):
    """Console filter: drops records below WARNING that Prefect's own code logs, and its restatements of a
    failure (tracebacks, "Finished in state Failed", "Crash detected!" of a run stopped by a signal), unless
    `level` is DEBUG.

    Prefect logs its banners ("Beginning flow run", "View at ...") and each task's "Finished in state ..."
    on the same loggers as the run's own `get_run_logger()` lines, so levels alone cannot tell them apart;
    where the record was logged from can. Prints captured by `log_prints` count as the run's own.
    """

    def __init__(self, level: str | int = "INFO") -> None:
        super().__init__()
        name = str(level).strip().upper()
        number = int(name) if name.isdigit() else logging.getLevelName(name)
        self.show_all = isinstance(number, int) and number <= logging.DEBUG
        spec = importlib.util.find_spec("prefect")
        origin = spec.origin if spec is not None and spec.origin else ""
        self.prefect_dir = os.path.dirname(origin) + os.sep if origin else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.show_all or self.prefect_dir is None:
            return True
        ours = not record.pathname.startswith(self.prefect_dir) or record.funcName == "print_as_log"
        if ours:
            return True
        if record.levelno >= logging.ERROR:
            # Prefect restating a failure (a traceback, a task's "Finished in state Failed"): the command
            # prints it itself, one line for an error the user can fix; run.log keeps Prefect's account.
            message = record.getMessage()
            return not (record.exc_info or message.startswith("Finished in state") or _stop_reported(message))
        return record.levelno >= logging.WARNING


def _stop_reported(message: str) -> bool:
    """Prefect's "Crash detected! Execution was aborted by an interrupt signal." (or "a termination signal") of
    a run that says it was stopped in one line of its own (flows.run.interrupts)."""
    if not (message.startswith("Crash detected!") and ("interrupt signal" in message or
                                                         "termination signal" in message)):
        return False
    interrupts = sys.modules.get("flows.run.interrupts")
    return interrupts is not None and interrupts.handling()


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
