"""Content fingerprints of files and folders: the keys of Prefect's task caches.

A cache keyed by content (not by path, time or flow-run id) is reused exactly when the inputs are the
same bytes, so a resumed or repeated run skips finished work and a changed corpus or model never hits a
stale entry. Hashes are memoised per (path, size, mtime) within a process.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dataio.hashing import MODEL_CARD_FILES, model_folder_sha256, sha256_file

_MEMO: dict[tuple[str, int, int], str] = {}
_FOLDER_MEMO: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex, first 32 characters)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MEMO:
        _MEMO[key] = sha256_file(path)[:32]
    return _MEMO[key]


def path_fingerprint(path: str | os.PathLike) -> str:
    """A data file's fingerprint, or a data folder's: names and bytes of every file in it (hidden files, such as
    an editor's or the OS's, left out). Model folders use `model_fingerprint`."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    if not path.is_dir():
        return f"missing:{path}"
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode())
        digest.update(file_fingerprint(child).encode())
    return digest.hexdigest()[:32]


def model_fingerprint(name_or_path: str | os.PathLike) -> str:
    """A model folder's content fingerprint (`dataio.hashing.model_folder_sha256`, the one model-folder hash:
    every file counts, the model card does not); a hub name stands for itself (it cannot be read offline).

    The card is left out because it describes the model and is rewritten when a round's metrics are known, after
    the folder was first hashed as the evaluation's cache key, which must not make the next round's caches miss.
    Memoised per folder listing (every file's name, size and mtime), as files are: a cache key is asked for
    several times per round.
    """
    path = Path(name_or_path)
    if path.is_file():
        return file_fingerprint(path)
    if not path.is_dir():
        return f"name:{name_or_path}"
    key = (str(path.resolve()), folder_listing(path))
    if key not in _FOLDER_MEMO:
        _FOLDER_MEMO[key] = model_folder_sha256(path)[:32]
    return _FOLDER_MEMO[key]


def folder_listing(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime) of every file of a model folder, the model card left out: what a change to the model's
    content changes, in a stat per file."""
    return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                        for p in path.rglob("*") if p.is_file() and p.name not in MODEL_CARD_FILES
                        for st in (p.stat(),)))


def combine(*parts: Any) -> str:
    """One hash of several JSON-able parts (dicts are key-sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
