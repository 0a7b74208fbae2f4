"""Tiny deterministic encoders for tests (no model, no torch): sentences sharing words get similar vectors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np


class HashEncoder:
    """Bag-of-words encoder: each lower-cased word maps to a fixed pseudo-random vector; a sentence is their sum.

    Deterministic across processes and machines, so tests can assert exact triplets.
    """

    def __init__(self, dim: int = 32, salt: str = "") -> None:
        self.dim = dim
        self.salt = salt
        self.calls = 0
        self.encoded = 0

    def fingerprint(self) -> str:
        return f"hash-encoder-{self.dim}-{self.salt}"

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha1((self.salt + word).encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 32, **st_keywords: Any) -> np.ndarray:
        """Raw (unnormalised) vectors; sentence-transformers' other keywords are accepted and ignored."""
        self.calls += 1
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += self._word(word)
        return out


class TableEncoder:
    """Returns the vector given for each text (others: a fixed pseudo-random vector): hand-built geometry."""

    def __init__(self, vectors: dict[str, Sequence[float]], dim: int | None = None) -> None:
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}
        self.dim = dim or len(next(iter(self.vectors.values())))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.vectors):
            h.update(k.encode())
            h.update(self.vectors[k].tobytes())
        return "table-" + h.hexdigest()[:16]

    def encode(self, texts: Sequence[str], batch_size: int = 32, **st_keywords: Any) -> np.ndarray:
        """Raw (unnormalised) vectors; sentence-transformers' other keywords are accepted and ignored."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if t in self.vectors:
                out[i] = self.vectors[t]
            else:
                seed = int.from_bytes(hashlib.sha1(t.encode()).digest()[:8], "little")
                out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out
