"""Hashes shared by every package: sha256 of files and of model folders, and the counter-based hashes random
choices come from.

Counter-based: a random number is a hash of (seed, round, what is being chosen, the row's key), not the next
draw of a stateful generator, so mining and sampling give the same result however the work is chunked,
sharded or resumed. The keys are 64-bit hashes of texts or ids (`hash_strings`), mixed by SplitMix64's
finaliser; salts are 64-bit hashes of a tuple of plain values (`salt_of`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_BLOCK = 1 << 20
_M1, _M2, _G = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_SCALE = 1.0 / (1 << 53)

# A model card describes the model and is rewritten once a round's metrics are known; it changes nothing the
# model computes. The names are the ones simcse.model_card writes (CARD_FILES; tests/test_dataio_hashing.py
# ties the two).
MODEL_CARD_FILES = ("README.md", "simcse_card.json")
# The prefix of every model-folder hash: the value recorded in each finished round's metrics.json (model_sha256),
# in warm_start.json and in the registry's checks, so it never changes (a new prefix would fail every resume).
_MODEL_FOLDER_PREFIX = b"round-model-v1\0"


def update_with_file(digest: hashlib._Hash, path: str | os.PathLike) -> None:
    """Feed a file's bytes into a running hash, a block at a time (flat memory for files of any size)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def model_folder_sha256(folder: str | os.PathLike) -> str:
    """sha256 (hex) of a model folder's content: the relative name and the bytes of every file under it, in path
    order, subfolders and hidden files included, the model card (`MODEL_CARD_FILES`, at any depth) left out.

    One hash for every check that a model is the same bytes: a round's model against its metrics.json, a warm
    start's model against the registry version, and mining's embeddings cache key for an encoder known only by
    its folder. Every file counts (weights, configs, tokenizer files of any kind, custom code), so a changed
    file can never reuse a stale result; only the card, which changes nothing the model computes, is skipped.
    """
    root = Path(folder)
    digest = hashlib.sha256(_MODEL_FOLDER_PREFIX)
    for path in _model_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        update_with_file(digest, path)
    return digest.hexdigest()


def model_folder_hashes(folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """(`model_folder_sha256(folder)`, {file: sha256 of its bytes}) with each file read once: the folder's hash
    and a manifest that names which file changed (the registry records both with a version). Files are named by
    their path relative to `folder`, with `/`; the model card is left out of both, as in `model_folder_sha256`."""
    root = Path(folder)
    digest = hashlib.sha256(_MODEL_FOLDER_PREFIX)
    files: dict[str, str] = {}
    for path in _model_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        one = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
                one.update(block)
        files[path.relative_to(root).as_posix()] = one.hexdigest()
    return digest.hexdigest(), files


def _model_files(root: Path) -> list[Path]:
    """A model folder's files, the card left out, sorted as paths (part by part, not as strings: the order the
    recorded values were made with)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in MODEL_CARD_FILES)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised (uint64 arithmetic wraps): a well-mixed 64-bit hash of each key."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _G
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def salt_of(*parts: object) -> int:
    """A 64-bit salt from plain values (their repr), e.g. `salt_of(seed, round, band)`."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def hash_strings(values: Iterable[str]) -> np.ndarray:
    """64-bit keys (uint64) of strings: blake2b of their UTF-8 bytes."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little")
                        for v in values), dtype=np.uint64)


def uniform(keys: np.ndarray, salt: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per key, for a salt."""
    mixed = splitmix64(np.asarray(keys, dtype=np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
    return (mixed >> np.uint64(11)).astype(np.float64) * _SCALE


def uniform_open(keys: np.ndarray, salt: int) -> np.ndarray:
    """Uniform floats in (0, 1), one per key, for a salt (never 0: safe under a logarithm)."""
    mixed = splitmix64(np.asarray(keys, dtype=np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) * _SCALE
