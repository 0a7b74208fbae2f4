"""Content fingerprints of files and folders: the keys of Prefect's task caches.

A cache keyed by content (not by path, time or flow-run id) is reused exactly when the inputs are the
same bytes, so a resumed or repeated run skips finished work and a changed corpus or model never hits a
stale entry. Hashes are memoised per (path, size, mtime) within a process.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataio.hashing import sha256_file

_MEMO: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex, first 32 characters)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MEMO:
        _MEMO[key] = sha256_file(path)[:32]
    return _MEMO[key]


def path_fingerprint(path: str | os.PathLike, skip: Iterable[str] = ()) -> str:
    """A file's fingerprint, or a folder's: names and bytes of every file in it (hidden files and the
    top-level names in `skip` left out)."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    if not path.is_dir():
        return f"missing:{path}"
    skip = set(skip)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() in skip:
            continue
        digest.update(rel.as_posix().encode())
        digest.update(file_fingerprint(child).encode())
    return digest.hexdigest()[:32]


def model_fingerprint(name_or_path: str | os.PathLike) -> str:
    """A model folder's content fingerprint; a hub name stands for itself (it cannot be read offline).

    The model card (README.md and its data, simcse.model_card.CARD_FILES) is left out: it describes the
    model and is rewritten when a round's metrics are known, after the folder was first hashed as the
    evaluation's cache key, which must not make the next round's caches miss.
    """
    from simcse.model_card import CARD_FILES

    path = Path(name_or_path)
    return path_fingerprint(path, skip=CARD_FILES) if path.exists() else f"name:{name_or_path}"


def combine(*parts: Any) -> str:
    """One hash of several JSON-able parts (dicts are key-sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
