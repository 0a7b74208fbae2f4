"""`<run>/run.log`: every log line of each `run` / `demo` of a run folder, Prefect's own and tracebacks included.

The terminal shows the run's own progress and, when something fails, one line (flows.cli.app); Prefect's
account of the failure (its traceback, the failed task's final state) goes only here, appended per
invocation under a header line with the command, the process id and the time. A log that cannot be written
(a full disk, a read-only folder) switches itself off silently: the command's one-line error says why.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

LOG_NAME = "run.log"
FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"

_handler: RunLogHandler | None = None


class RunLogHandler(logging.FileHandler):
    """A file handler that stops writing, instead of printing "--- Logging error ---", when writes fail."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.broken = True


def attach_run_log(run_dir: str | os.PathLike) -> Path | None:
    """Send every record that reaches the root logger (the run's lines, Prefect's) to `<run_dir>/run.log`."""
    global _handler
    path = Path(run_dir) / LOG_NAME
    if _handler is not None:
        if Path(_handler.baseFilename) == path.resolve():
            return path
        detach_run_log()
    try:
        handler = RunLogHandler(path, mode="a", encoding="utf-8", delay=False)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.NOTSET)
    logging.getLogger().addHandler(handler)
    _handler = handler
    _write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: "
           f"{' '.join([os.path.basename(sys.argv[0] or 'python'), *sys.argv[1:]])}\n")
    return path


def detach_run_log() -> None:
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
        _handler = None


def _write(text: str) -> None:
    if _handler is None or _handler.broken:
        return
    try:
        _handler.acquire()
        try:
            stream = _handler.stream
            stream.write(text)
            stream.flush()
        finally:
            _handler.release()
    except (OSError, ValueError):
        _handler.broken = True


def record_failure(exc: BaseException, line: str) -> None:
    """The one line the command printed, and the traceback behind it, into the run log (if one is open)."""
    _write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} | ERROR   | {line}\n"
           + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def record_line(line: str) -> None:
    """A line the command printed that is not a failure (a run stopped by Ctrl-C or SIGTERM), into the run log."""
    _write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} | WARNING | {line}\n")
