"""Ctrl-C and SIGTERM stop a `run` or `demo` within seconds: one line on stderr, exit 130 (SIGINT) or 143 (SIGTERM).

The first signal stops the run where it is (SIGINT raises KeyboardInterrupt in the main thread, SIGTERM
SystemExit; inside a flow Prefect's own SIGTERM handler raises first and passes the signal on to ours). The
run folder needs nothing more: every write is atomic and training resumes from its last checkpoint, exactly
as after a SIGKILL. On the way out Prefect records the flow run as crashed on its ephemeral server (which is
in a session of its own, see flows.orchestration.server_guard, so the terminal's Ctrl-C does not stop it under the run),
and stops that server at exit. `flows.cli.app.main` then prints the one line, with the command that resumes.

Two limits keep it within seconds: a second signal exits at once, and so does the run when its clean exit
takes more than FORCE_EXIT_AFTER_S. Either way the line is printed once, the lock of a dead process is
taken over by the next command, and the guard process stops the server (flows.orchestration.server_guard).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORCE_EXIT_AFTER_S = 8.0

_received: int | None = None  # the first stop signal, once one came
_resume: str | None = None  # the command that continues the run, while the handlers are installed
_command: str | None = None  # the command line as typed (flows.cli.app.main), for the resume hint
_announced = threading.Lock()  # held once the line is printed: it is printed once


def record_command(command: str) -> None:
    """The command line as the user typed it: the one to rerun (flows.cli.app.main records it)."""
    global _command
    _command = command


def received() -> int | None:
    """The stop signal this process received (SIGINT or SIGTERM), or None."""
    return _received


def handling() -> bool:
    """True while `stop_on_signals` is active, and after it stopped the command: the command reports a stop
    itself (flows.orchestration.prefect_env's filter then keeps Prefect's "Crash detected!" restatement off the
    terminal)."""
    return _resume is not None


def exit_code(signum: int) -> int:
    return 128 + signum


def stop_line(signum: int) -> str:
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if _resume is None:
        return what
    return f"{what}; the run folder is resumable: {_resume}"


def announce(signum: int, *, into_run_log: bool = True) -> int:
    """Print the one line on stderr, once per process (and, with `into_run_log`, into the run's log); return the
    exit code.

    Written straight to the file descriptor: a forced exit may come while the main thread is inside a write
    to sys.stderr, which a second buffered write would interrupt."""
    if _announced.acquire(blocking=False):
        line = stop_line(signum)
        # On a terminal the tty has echoed "^C" where the cursor was: the line replaces it instead of following it.
        prefix = "\r\x1b[K" if _isatty(sys.stderr) else ""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            os.write(sys.stderr.fileno(), f"{prefix}{line}\n".encode(errors="replace"))
        except (AttributeError, OSError, ValueError):  # no file descriptor (a captured stream)
            with contextlib.suppress(Exception):
                sys.stderr.write(f"{line}\n")
                sys.stderr.flush()
        run_log = sys.modules.get("flows.run.run_log")
        if into_run_log and run_log is not None:
            run_log.record_line(line)
    return exit_code(signum)


def stopped_by(exc: BaseException | None) -> int | None:
    """The signal that stopped the command, when `exc` (or a clean exit code) is how it stopped; else None."""
    if _received is not None:
        return _received
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if type(exc).__name__ == "TerminationSignal":  # Prefect's, raised by its handler inside a flow
        signum = getattr(exc, "signal", None)
        return signum if isinstance(signum, int) else signal.SIGTERM
    return None


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def _exit_now(signum: int) -> None:
    announce(signum, into_run_log=False)  # the run log's lock may be held by the thread this exit cuts short
    os._exit(exit_code(signum))


def _force_exit_later(signum: int) -> None:
    timer = threading.Timer(FORCE_EXIT_AFTER_S, _exit_now, args=(signum,))
    timer.daemon = True
    timer.start()


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # a second signal: no more waiting
        _exit_now(_received)
    _received = signum
    _force_exit_later(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(exit_code(signum))


@contextlib.contextmanager
def stop_on_signals(resume: str) -> Iterator[None]:
    """Within: SIGINT and SIGTERM stop the command as described above; `resume` is the command that continues
    it (the command line as typed, when flows.cli.app.main recorded it)."""
    global _resume
    previous: dict[int, object] = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, _handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    _resume = _command or resume
    try:
        yield
    finally:
        if _received is None:  # once stopping, the handlers stay: a second signal at exit still exits at once
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            _resume = None
