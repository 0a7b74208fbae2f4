"""Atomic writes of files and folders: readers see the old version or the complete new one, never a part.

A write goes to a hidden temporary name beside its target (`.<name>.<random>.tmp`) and is renamed over the
target when complete; on an error the temporary is removed. The final file or folder gets the mode a plain
`open(path, "w")` or `mkdir` would give (the process umask decides), not the owner-only mode of mkstemp, so
a team's other users can read a run.

A write that fails on a full disk is raised as `OSError(ENOSPC)` naming the target, whatever the writer raised
(`dataio.os_faults.disk_full`, asked before the temporary is removed and the space comes back), so the command
line says so in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataio.os_faults import disk_full


def process_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """0o666 less the process umask: the mode a plain `open(path, "w")` would create."""
    return 0o666 & ~process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    Readers therefore see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_file_mode())  # mkstemp creates 0600; the final file gets what open() would give
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        full = disk_full(exc, path.parent, path) if isinstance(exc, Exception) else None  # before the space is freed
        tmp_path.unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write `text` (UTF-8) atomically; `fsync` also forces the bytes to disk before the rename, for files a
    killed machine must find whole (a run's resume state)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path`, on error it is removed.

    A folder cannot be renamed over a non-empty one, so the old folder is first moved aside to
    `.<name>.old` and deleted after the swap; `recover_dir` puts it back if a crash fell in between.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~process_umask())  # mkdtemp creates 0700; the final folder gets what mkdir would give
    try:
        yield tmp
    except BaseException as exc:
        full = disk_full(exc, path.parent, path) if isinstance(exc, Exception) else None  # before the space is freed
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise
    old = path.parent / f".{path.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path | None:
    """`path` if it exists, else the previous version left aside by an interrupted swap (restored), else None."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write that crashed before its swap
        shutil.rmtree(stale, ignore_errors=True)
    if path.exists():
        return path
    old = path.parent / f".{path.name}.old"
    if old.exists():
        os.replace(old, path)
        return path
    return None
