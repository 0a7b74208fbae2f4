"""Writing folders atomically: readers see the old folder or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from simcse.io import process_umask


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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
