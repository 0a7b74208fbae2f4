"""One writer per output folder: a lock file naming its holder (pid, host, command, start time).

`mine` and `run` write into a folder the user names; two of them on the same folder would interleave
their files (two `mine` into one new folder both failed and deleted it; two `run` both did all the work).
`lock_folder(folder, command)` takes `<folder>/.simcse-curriculum.lock` for the duration of a command; a
second command on the same folder is refused at once with one line naming the holder:

    error: runs/x: in use by 'simcse-curriculum run cfg.yaml' (pid 4242 on host gpu-1, since 2026-11-30 14:02:11 UTC);
    wait for it to finish, or stop it, then rerun

A folder inside a held folder is refused the same way (`mine --out runs/x/triplets` beside a running `run` of
runs/x rewrote the round it trained on): taking a lock first looks at the lock file of every folder above, up to
the root, without creating or taking any. A lock path that is a folder is one line, not IsADirectoryError.
`check_free(folder)` asks all of this without taking the lock (`run --dry-run`, `validate`), with the same line.

The lock is an advisory `flock` on the lock file, so the kernel drops it when its holder dies, however it
dies (SIGKILL included): a lock file left behind by a killed holder is stale by construction and the next
command takes it over. Where the file system cannot `flock` (some network file systems), the file's pid and
host decide: a holder on this host that no longer runs is stale; one on another host is trusted and the
message says how to clear it. The file is removed on release. Locks are re-entrant within a process (the CLI
takes the lock before Prefect starts, the flow takes it again), and torch-free (stdlib only), so `mining`
and `flows` share it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataio.errors import InputError

LOCK_NAME = ".simcse-curriculum.lock"

try:  # POSIX; elsewhere the pid/host fallback decides
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderInUse(InputError):
    """Another command holds the folder's lock; the message names it."""


@dataclass
class _Held:
    path: Path
    fd: int
    depth: int
    flocked: bool


_held: dict[Path, _Held] = {}
_written: list[Path] = []  # every folder this process has locked, for error messages after release


def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK_NAME


def held_folders() -> list[Path]:
    """The folders this process holds a lock on now (the output folders it writes), innermost last."""
    return list(_held)


def locked_folders() -> list[Path]:
    """Every folder this process has locked so far (held or released), most recent last."""
    return list(_written)


def _holder_text(info: dict[str, Any]) -> str:
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"'{info.get('command') or '?'}' (pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
            f"since {when})")


def read_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What the lock file says about its holder (None when there is no readable lock file)."""
    try:
        info = json.loads(lock_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _command_line() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def _refuse(folder: Path, info: dict[str, Any] | None, stale_hint: bool = False) -> FolderInUse:
    holder = _holder_text(info) if info else "another process"
    hint = "wait for it to finish, or stop it, then rerun"
    if stale_hint:
        hint += (f"; if that process is gone (another host's lock cannot be checked from here), "
                 f"delete {lock_path(folder)}")
    return FolderInUse(f"in use by {holder}; {hint}", path=folder)


def _held_elsewhere(folder: Path) -> dict[str, Any] | None:
    """The holder of `folder`'s lock when another live process holds it, else None; asked without taking the
    lock and without creating a lock file (a shared `flock` probe, released at once; without `flock`, the file's
    pid and host, as `_acquire` decides)."""
    path = lock_path(folder)
    if folder in _held or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return read_holder(folder) or {}
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None  # a lock file left by a holder that is gone
        info = read_holder(folder)
        if not info or info.get("pid") == os.getpid():
            return None
        if info.get("host") != socket.gethostname() or _pid_alive(int(info.get("pid", 0))):
            return info
        return None
    finally:
        os.close(fd)


def _check_parents(folder: Path) -> None:
    """Refuse `folder` when a folder above it is held by another command: `mine --out runs/x/triplets` beside a
    running `run` of runs/x rewrote the round that run trained on. (A command that locks a folder does not look
    below it: only commands started inside a held folder are refused.)"""
    for parent in folder.parents:
        info = _held_elsewhere(parent)
        if info is not None:
            holder = _holder_text(info) if info else "another process"
            raise FolderInUse(f"inside {parent}, which is in use by {holder}; wait for it to finish, or stop it, "
                              f"then rerun (or write somewhere outside {parent})", path=folder)


def _check_lock_path(folder: Path) -> None:
    path = lock_path(folder)
    if path.is_dir():
        raise InputError(f"is a folder, but it is where simcse-curriculum keeps {folder}'s lock file; move it away "
                         f"(or delete it, if nothing of yours is in it), then rerun", path=path)


def check_free(folder: str | os.PathLike) -> None:
    """Refuse `folder` as `lock_folder` would, with the same line, without taking the lock or creating anything:
    held by another command (named), inside a folder another command holds, or a lock path that is a folder.

    For the checks that write nothing (`run --dry-run`, `validate`), and for a command that looks at a folder's
    contents before it locks it: a folder in use holds the files of the command starting in it (its `run.log`,
    before its `config.yaml`), and is to be refused as in use, naming that command, not as someone else's."""
    key = Path(folder).resolve()
    if key in _held:
        return
    _check_parents(key)
    _check_lock_path(key)
    info = _held_elsewhere(key)
    if info is not None:
        raise _refuse(key, info or None)


def _acquire(folder: Path, command: str) -> _Held:
    path = lock_path(folder)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    _check_parents(folder)
    _check_lock_path(folder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        flocked = False
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    flocked = True
                except BlockingIOError:
                    raise _refuse(folder, read_holder(folder)) from None
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
            if flocked:
                # The holder before us may have removed the file between our open and our lock: then we
                # hold a lock on a file nobody else can see; start again on the current file.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            else:  # no flock here: the file's pid and host decide
                previous = read_holder(folder)
                if previous and previous.get("pid") != os.getpid():
                    same_host = previous.get("host") == socket.gethostname()
                    if not same_host or _pid_alive(int(previous.get("pid", 0))):
                        raise _refuse(folder, previous, stale_hint=not same_host)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
            return _Held(path=path, fd=fd, depth=1, flocked=flocked)
        except BaseException:
            os.close(fd)
            raise


def _release(held: _Held) -> None:
    try:
        if held.path.is_file():
            try:
                same = os.path.samestat(os.fstat(held.fd), os.stat(held.path))
            except FileNotFoundError:
                same = False
            if same:
                held.path.unlink(missing_ok=True)  # unlink while locked: the next holder never sees a stale file
    except OSError:
        pass  # a read-only or vanished folder: the kernel still drops the lock with the descriptor
    finally:
        os.close(held.fd)


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold `<folder>/.simcse-curriculum.lock` (the folder must exist) for the block; `FolderInUse` if another
    process holds it. Re-entrant within a process. `command` names the holder in the refusal (default: argv)."""
    key = Path(folder).resolve()
    held = _held.get(key)
    if held is not None:
        held.depth += 1
        try:
            yield key
        finally:
            held.depth -= 1
        return
    held = _acquire(key, command or _command_line())
    _held[key] = held
    if key in _written:
        _written.remove(key)
    _written.append(key)
    try:
        yield key
    finally:
        _held.pop(key, None)
        _release(held)
