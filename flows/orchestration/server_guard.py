"""No orphaned Prefect server: the ephemeral API server dies with the process that started it, SIGKILL included.

Prefect 3 starts its ephemeral API as a `python -m uvicorn ... prefect.server.api.server:create_app`
subprocess (`SubprocessASGIServer._run_uvicorn_command`, from whichever thread first needs the API) and stops
it from an `atexit` handler. A process killed with SIGKILL runs no handler, so the server (~220 MB, listening
on a loopback port) outlived every killed `run`.

The mechanism here is a supervising pipe. The first time Prefect starts a server, a small guard process
(this file run as a script: no project imports, ~20 MB) is started with a pipe on its stdin, and each server
process Prefect spawns is reported to it as "<pid> <start time>". The guard blocks reading the pipe; when the
parent dies, however it dies, the kernel closes the pipe's write end and the read returns EOF: the guard then
terminates (SIGTERM, then SIGKILL after 5 s) every reported server still running as the same process (its
start time is checked, so a recycled pid is never hit), and exits. On a normal exit Prefect has stopped the
server already and the guard finds nothing to do.

Why not the alternatives: PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, and Prefect
may start the server from a short-lived worker thread, which would kill the API under a live run; reaping at
the next start helps only when the same folder is run again. The write end of the pipe is not inherited by
exec'd children (Python opens pipes close-on-exec), so only the death of this process closes it.

The server also starts in a session of its own (`setsid`, through the `subprocess` Prefect's server module is
given). A terminal's Ctrl-C is sent to every process of its foreground process group, and in the run's group
the server died with the first ^C: the run, stopping, then spent ~150 s retrying its report of how it stopped
and exited 1 with a page of httpx traceback. Out of the group the server outlives the run's last call, and is
stopped by Prefect's exit handler (or by the guard, when the run is killed); flows.run.interrupts does the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

log = logging.getLogger("flows")

_guard: subprocess.Popen[bytes] | None = None
_installed = False


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone already, or no psutil: the guard then checks the pid only
        return None


def _report(pid: int) -> None:
    """Tell the guard (started on first use) to stop `pid` if this process dies."""
    global _guard
    try:
        if _guard is None or _guard.poll() is not None:
            _guard = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, close_fds=True)
        assert _guard.stdin is not None
        _guard.stdin.write(f"{pid} {_start_time(pid) or 0}\n".encode())
        _guard.stdin.flush()
    except Exception as exc:  # noqa: BLE001 - a missing guard must not stop the run
        log.debug("could not start the ephemeral server's guard: %s", exc)


class _ServerPopen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen for Prefect's one spawn, the ephemeral server: in a session of its own (`setsid`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)


class _ServerSubprocess:
    """`subprocess` as Prefect's server module sees it once guarded: `Popen` is `_ServerPopen`, the rest is
    the standard module's."""

    Popen = _ServerPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def guard_ephemeral_server() -> bool:
    """Make every ephemeral Prefect API server this process starts die with it, and start it out of reach of the
    terminal's Ctrl-C (a session of its own); call before the first flow.

    Returns False (changing nothing) when the run uses a Prefect server of its own (PREFECT_API_URL), or when
    this Prefect has no `SubprocessASGIServer._run_uvicorn_command` to watch (tests/test_fault_injection.py
    notices that on an upgrade).
    """
    global _installed
    if _installed:
        return True
    if os.environ.get("PREFECT_API_URL"):
        return False
    from prefect.settings import get_current_settings  # Prefect: only where a flow runs

    if get_current_settings().api.url:  # set in the user's Prefect profile: no ephemeral server
        return False
    import prefect.server.api.server as server_module  # Prefect: only where a flow runs
    from prefect.server.api.server import SubprocessASGIServer  # Prefect: only where a flow runs

    spawn = getattr(SubprocessASGIServer, "_run_uvicorn_command", None)
    if spawn is None:
        return False

    def run_uvicorn_command(self: Any) -> subprocess.Popen[Any]:
        process = spawn(self)
        _report(process.pid)
        return process

    if getattr(server_module, "subprocess", None) is subprocess:  # the server's spawn, in a session of its own
        server_module.subprocess = _ServerSubprocess()  # type: ignore[attr-defined]
    SubprocessASGIServer._run_uvicorn_command = run_uvicorn_command  # type: ignore[method-assign]
    _installed = True
    return True


# ------------------------------------------------------------------------------------------ the guard
def _same_process(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return not started or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _stop(servers: list[tuple[int, float]]) -> None:
    alive = [(pid, t) for pid, t in servers if _same_process(pid, t)]
    for pid, _ in alive:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [(pid, t) for pid, t in alive if _same_process(pid, t)]
    for pid, _ in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _guard_main() -> int:
    # Ctrl-C and a SIGTERM to the group are for the run, which stops its server itself; the guard only
    # stops when the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    servers: list[tuple[int, float]] = []
    for line in sys.stdin.buffer:
        parts = line.split()
        if len(parts) == 2:
            try:
                servers.append((int(parts[0]), float(parts[1])))
            except ValueError:
                continue
    _stop(servers)
    return 0


if __name__ == "__main__":
    sys.exit(_guard_main())
