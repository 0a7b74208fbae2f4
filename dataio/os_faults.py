"""One line for faults of the machine rather than of the input: a full disk, a read-only or forbidden folder,
a symbolic link loop.

They surface in many shapes: an `OSError` with `errno` ENOSPC from a plain write, a `RuntimeError` from
torch's zip writer ("file write failed"), a `SafetensorError` wrapping "No space left on device", SQLite's
"database or disk is full". `describe_os_fault` looks through the exception and its chain for any of them and
returns the one line the command line prints (exit code 2: the user can fix it, and rerunning the same command
resumes), or None for anything else. Torch-free (stdlib only), so every package's command can use it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS,)
FORBIDDEN = (errno.EACCES, errno.EPERM)
TOO_LARGE = (errno.EFBIG,)
LOOP = (errno.ELOOP,)

# Messages of writers that lose the errno on the way (torch's zip writer, safetensors' Rust IoError, SQLite).
FULL_TEXTS = ("no space left on device", "storagefull", "disk quota exceeded", "database or disk is full")
WRITE_FAILED_TEXTS = ("file write failed", "unexpected pos", "failed writing")
# Below this much free space a writer's failure with no errno counts as a full disk.
NEARLY_FULL_BYTES = 1 << 20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)


def _first_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _nearly_full(folders: Iterable[Path]) -> Path | None:
    for folder in folders:
        existing = _first_existing(Path(folder))
        if existing is None:
            continue
        try:
            if shutil.disk_usage(existing).free < NEARLY_FULL_BYTES:
                return Path(folder)
        except OSError:
            continue
    return None


def _name(exc: OSError, folders: list[Path]) -> str:
    if exc.filename:
        return os.fsdecode(exc.filename)
    return str(folders[-1]) if folders else "the output folder"


def describe_os_fault(exc: BaseException, folders: Iterable[str | os.PathLike] = ()) -> str | None:
    """The one-line message for a full disk or an unwritable path somewhere in `exc`'s chain, else None.

    `folders`: where the command writes (innermost last); named when the error carries no file name, and
    checked for free space when a writer failed without an errno.
    """
    places = [Path(f) for f in folders]
    for current in _chain(exc):
        code = getattr(current, "errno", None)
        if isinstance(current, OSError) and code is not None:
            where = _name(current, places)
            if code in FULL:
                return (f"{where}: no space left on the device; free some space (or choose an output folder on "
                        f"another disk), then rerun the same command")
            if code in READ_ONLY:
                return f"{where}: read-only file system; choose a writable output folder"
            if code in FORBIDDEN:
                return f"{where}: permission denied; make it writable for this user or choose another output folder"
            if code in LOOP:  # else the path with the kernel's 40 links, or a traceback
                return (f"{where}: a symbolic link loop (its links lead back to themselves); point the link at the "
                        f"file or folder meant")
            if code in TOO_LARGE:
                return (f"{where}: file too large for this file system or this process's file size limit "
                        f"(ulimit -f); raise the limit or choose another output folder")
    texts = " | ".join(str(c).lower() for c in _chain(exc))
    full = _nearly_full(places)
    if any(t in texts for t in FULL_TEXTS) or (full is not None and any(t in texts for t in WRITE_FAILED_TEXTS)):
        where = full or (places[-1] if places else "the output folder")
        return (f"{where}: no space left on the device; free some space (or choose an output folder on another "
                f"disk), then rerun the same command")
    return None


def disk_full(exc: BaseException, where: str | os.PathLike, target: str | os.PathLike) -> OSError | None:
    """An `OSError(ENOSPC)` naming `target` when `exc` is a write that failed on a full disk at `where`, asked
    before the failed write's partial files are removed; None otherwise (and for an OSError that carries its
    errno already, which needs nothing).

    A writer that loses the errno (torch's zip writer: "unexpected pos", "file write failed") is recognised only
    while the disk is still nearly full, and a caller that cleans up its temporary files first frees the space:
    a checkpoint that filled the disk then surfaced as a torch traceback. Asked here, before the clean-up, the
    fault keeps its one line (`describe_os_fault`)."""
    if any(isinstance(c, OSError) and getattr(c, "errno", None) is not None for c in _chain(exc)):
        return None
    texts = " | ".join(str(c).lower() for c in _chain(exc))
    if any(t in texts for t in FULL_TEXTS) or (_nearly_full([Path(where)]) is not None
                                                and any(t in texts for t in WRITE_FAILED_TEXTS)):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(target))
    return None
