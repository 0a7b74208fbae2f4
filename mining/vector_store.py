"""One model's vectors of texts, kept by the text's content and shared by every run that names the folder.

The embeddings cache (mining.embeddings) is keyed by the whole pool: a run folder's second round reuses its
first round's encoding, but a scheduled deployment writes each night into a new folder, and a night whose corpus
gained a few lines has another pool fingerprint anyway, so every night would encode the whole corpus again with
the teacher (the slowest encoder a run has). This store keeps each text's vector under the SHA-256 of the text,
for one model fingerprint, so a later pool encodes only the texts no earlier run encoded.

Layout of `<folder>/<first 16 hex of sha256(model fingerprint)>/`:

- `model.json`: the model fingerprint in full (a store is never read for another model);
- `seg-*.safetensors`: append-only segments, each `keys` (uint8, n x 32: the texts' SHA-256 digests) and
  `vectors` (float16, n x dim, as the embeddings cache stores them), with the model fingerprint and a SHA-256
  of both tensors' bytes in its metadata. A segment is written whole and renamed into place
  (dataio.atomic), so a killed writer leaves no part of one; every read checks the digest, and a segment that
  fails it is dropped with a warning (its texts are encoded again). safetensors, never pickle.

Segments accumulate: one per chunk encoded; `add` merges them into one when there are more than
`MAX_SEGMENTS`. Nothing is ever removed from a store but by deleting its folder, which is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataio.atomic import atomic_path, atomic_write_json
from dataio.errors import InputError

log = logging.getLogger(__name__)

FORMAT = "simcse-text-vectors/1"
MAX_SEGMENTS = 32


def text_key(text: str) -> bytes:
    """The store's key of a text: the SHA-256 digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _digest(keys: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256(FORMAT.encode())
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


class TextVectorStore:
    """Vectors of texts by one model (`model_fp`), in `folder`, shared across runs (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, model_fp: str) -> None:
        self.root = Path(folder)
        self.model_fp = model_fp
        self.folder = self.root / hashlib.sha256(model_fp.encode()).hexdigest()[:16]
        self._index: dict[bytes, tuple[int, int]] | None = None  # key -> (segment number, row)
        self._segments: list[tuple[Path, np.ndarray]] = []  # (file, vectors)

    # ------------------------------------------------------------------------------------------ reading
    def _load(self) -> None:
        from safetensors import safe_open

        self._index, self._segments = {}, []
        if not self.folder.is_dir():
            return
        self._check_model()
        for path in sorted(self.folder.glob("seg-*.safetensors")):
            try:
                with safe_open(str(path), framework="numpy") as handle:
                    meta = handle.metadata() or {}
                    keys, vectors = handle.get_tensor("keys"), handle.get_tensor("vectors")
            except Exception as exc:  # noqa: BLE001 - any unreadable segment is treated alike: dropped, re-encoded
                self._drop(path, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
                continue
            problem = self._problem(meta, keys, vectors)
            if problem:
                self._drop(path, problem)
                continue
            number = len(self._segments)
            self._segments.append((path, vectors))
            for row, key in enumerate(keys):
                self._index.setdefault(key.tobytes(), (number, row))

    def _check_model(self) -> None:
        model_file = self.folder / "model.json"
        if model_file.is_file():
            try:
                recorded = json.loads(model_file.read_text(encoding="utf-8")).get("model_fingerprint")
            except (ValueError, AttributeError):
                recorded = None
            if recorded != self.model_fp:
                raise InputError("this vector store's model.json names another model (or is unreadable); delete "
                                 "the folder to start the store again", path=self.folder)

    def _problem(self, meta: dict[str, str], keys: np.ndarray, vectors: np.ndarray) -> str | None:
        if meta.get("format") != FORMAT or meta.get("model_fingerprint") != self.model_fp:
            return "written for another model or format"
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32 or vectors.ndim != 2 \
                or vectors.shape[0] != keys.shape[0] or vectors.dtype != np.float16:
            return f"malformed (keys {keys.dtype} {keys.shape}, vectors {vectors.dtype} {vectors.shape})"
        if self._segments and vectors.shape[1] != self._segments[0][1].shape[1]:
            return f"vectors of dimension {vectors.shape[1]}, not {self._segments[0][1].shape[1]}"
        if _digest(keys, vectors) != meta.get("sha256"):
            return "changed on disk since it was written (sha256 differs)"
        return None

    def _drop(self, path: Path, why: str) -> None:
        log.warning("vector store: %s is %s; dropping it (its texts are encoded again)", path, why)
        path.unlink(missing_ok=True)

    def __len__(self) -> int:
        if self._index is None:
            self._load()
        return len(self._index or {})

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(vectors, found): `vectors[i]` is text i's vector where `found[i]`; None when no text was found."""
        if self._index is None:
            self._load()
        index = self._index or {}
        found = np.zeros(len(texts), dtype=bool)
        where = [index.get(text_key(t)) for t in texts]
        hits = np.array([i for i, w in enumerate(where) if w is not None], dtype=np.int64)
        if not len(hits):
            return None, found
        numbers = np.array([where[i][0] for i in hits])
        rows = np.array([where[i][1] for i in hits])
        vectors = np.zeros((len(texts), self._segments[0][1].shape[1]), dtype=np.float16)
        for number in np.unique(numbers):
            mine = numbers == number
            vectors[hits[mine]] = self._segments[number][1][rows[mine]]
        found[hits] = True
        return vectors, found

    # ------------------------------------------------------------------------------------------ writing
    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Keep `vectors[i]` (float16 or castable) as text i's vector; texts already kept are left as they are."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        if self._index is None:
            self._load()
        index = self._index if self._index is not None else {}
        fresh: dict[bytes, int] = {}
        for i, text in enumerate(texts):
            key = text_key(text)
            if key not in index and key not in fresh:
                fresh[key] = i
        if not fresh:
            return
        keys = np.frombuffer(b"".join(fresh), dtype=np.uint8).reshape(len(fresh), 32)
        chosen = np.asarray(vectors, dtype=np.float16)[list(fresh.values())]
        if self._segments and chosen.shape[1] != self._segments[0][1].shape[1]:
            raise ValueError(f"vectors of dimension {chosen.shape[1]} for a store of dimension "
                             f"{self._segments[0][1].shape[1]}")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "model.json").is_file():
            atomic_write_json(self.folder / "model.json", {"format": FORMAT, "model_fingerprint": self.model_fp})
        path = self._write_segment(keys, chosen)
        number = len(self._segments)
        self._segments.append((path, chosen))
        for row, key in enumerate(fresh):
            index[key] = (number, row)
        self._index = index
        if len(self._segments) > MAX_SEGMENTS:
            self._merge()

    def _write_segment(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        from safetensors.numpy import save_file

        path = self.folder / f"seg-{time.time_ns():020d}-{os.getpid()}.safetensors"
        meta = {"format": FORMAT, "model_fingerprint": self.model_fp, "sha256": _digest(keys, vectors)}
        with atomic_path(path) as tmp:
            save_file({"keys": np.ascontiguousarray(keys), "vectors": np.ascontiguousarray(vectors)}, str(tmp),
                      metadata=meta)
        return path

    def _merge(self) -> None:
        """Every segment into one: written first, the old ones removed after, so a crash between leaves
        duplicates (harmless: the first copy of a key wins), never a loss."""
        keys = np.frombuffer(b"".join(self._index or {}), dtype=np.uint8).reshape(-1, 32)
        vectors = np.stack([self._segments[n][1][r] for n, r in (self._index or {}).values()])
        old = [path for path, _ in self._segments]
        merged = self._write_segment(keys, vectors)
        for path in old:
            path.unlink(missing_ok=True)
        self._segments = [(merged, vectors)]
        self._index = {key.tobytes(): (0, row) for row, key in enumerate(keys)}
