"""What a run shows while it works: one log line as each long step starts, and progress bars only on a terminal.

A step's line goes through the run's logger (Prefect's run logger inside a task: the UI, `run.log` and the
terminal), so a scheduled night's log reads the same as a terminal's: the checks, Prefect's start, each
evaluation, mining, the encoding inside it, training. Before Prefect has started, the command line has no run
logger yet: `say` writes its lines (Prefect's start; the checks, once they take more than a few seconds, so that a
mistake they find stays one line) to stderr in the same shape. Without them `run` was silent for its first
minute at INFO.

Bars (tqdm) draw only where someone watches them: stderr a terminal, and INFO lines shown (`--quiet` hides
them). In a log file, a worker's output or a CI capture they are carriage-return noise, and the step lines
already say what is going on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

PROGRAM = "simcse-curriculum"


def _level() -> int:
    """The level of the lines shown: `--log-level` / `--quiet` as the CLI set them (PREFECT_LOGGING_LEVEL), else
    the user's setting, else INFO."""
    name = os.environ.get("PREFECT_LOGGING_LEVEL", "INFO").strip().upper()
    number = int(name) if name.isdigit() else logging.getLevelName(name)
    return number if isinstance(number, int) else logging.INFO


def info_shown() -> bool:
    return _level() <= logging.INFO


def bars_on() -> bool:
    """Progress bars: only on a terminal, and only where INFO lines show."""
    try:
        return sys.stderr.isatty() and info_shown()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def say(message: str) -> None:
    """One INFO line on stderr in the shape of the run's log lines, before Prefect (and its logging) has started."""
    if not info_shown():
        return
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    print(f"{stamp} | INFO    | {PROGRAM} - {message}", file=sys.stderr, flush=True)


# A step that ends within this many seconds is not announced (`said_if_slow`): a config or data mistake found by
# the checks stays one line on stderr, as every user error is (flows.cli.app).
ANNOUNCE_AFTER_S = 3.0


@contextlib.contextmanager
def said_if_slow(message: str, after: float = ANNOUNCE_AFTER_S) -> Iterator[None]:
    """`say(message)` once the block has run `after` seconds: a long step is announced while it runs, and one that
    ends (or fails) at once prints nothing."""
    timer = threading.Timer(after, say, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # a line being printed is finished before anything the command prints next


class _Forward(logging.Handler):
    def __init__(self, to: Any) -> None:
        super().__init__()
        self.to = to

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.to.log(record.levelno, "%s", record.getMessage())
        except Exception:  # noqa: BLE001 - a log line never stops the step
            self.handleError(record)


@contextlib.contextmanager
def forwarded(names: tuple[str, ...], to: Any, level: int = logging.INFO) -> Iterator[None]:
    """For the block, what the loggers `names` log at `level` and above goes to `to` instead of their own way (the
    root logger, which shows warnings only): the step functions' lines (`flows`) become the Prefect flow or task
    run's (flows.orchestration.tasks.run_logging), the mining package's lines on encoding its pool
    (`mining.embeddings`) the run's. Each line goes one way, not both. Nested blocks on the same logger send to
    the innermost `to` (a task inside a flow: the task run's logger), and give the outer one back after."""
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        current = next((h for h in logger.handlers if isinstance(h, _Forward)), None)
        if current is not None:  # nested: redirect the one handler, so a line is never sent twice
            saved.append((logger, current, current.to, None, None))
            current.to = to
            continue
        handler = _Forward(to)
        saved.append((logger, handler, None, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handler, outer, old_level, old_propagate in reversed(saved):
            if outer is not None:
                handler.to = outer
                continue
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
