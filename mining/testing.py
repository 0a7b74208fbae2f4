"""Test doubles and toy inputs (no model, no torch): tiny deterministic encoders, where sentences sharing words get
similar vectors, and seeded toy corpora and NLI files built from a small vocabulary."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
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



class CountingEncoder(TableEncoder):
    """A TableEncoder that counts the texts it encoded (what a test of "encoded once" or "only a sample" reads)."""

    def __init__(self, vectors: dict[str, Sequence[float]], dim: int | None = None) -> None:
        super().__init__(vectors, dim)
        self.encoded = 0

    def encode(self, texts: Sequence[str], batch_size: int = 32, **st_keywords: Any) -> np.ndarray:
        self.encoded += len(texts)
        return super().encode(texts, batch_size, **st_keywords)

# ------------------------------------------------------------------------------------------ toy inputs
TOY_WORDS = ("cat", "dog", "bird", "fish", "sat", "ran", "flew", "swam", "red", "blue", "green", "big", "small", "old",
             "young", "the", "a", "on", "in")


def toy_sentences(n: int, seed: int = 0, *, lengths: tuple[int, int] = (3, 8), words: Sequence[str] = TOY_WORDS,
                  unique: bool = True) -> list[str]:
    """`n` seeded random sentences of `lengths` words (upper bound exclusive) from `words`; `unique` drops
    repeats (so a few fewer than `n` may come back). Shared words make `HashEncoder` neighbours meaningful."""
    rng = np.random.default_rng(seed)
    out = [" ".join(rng.choice(list(words), size=rng.integers(*lengths))) for _ in range(n)]
    return list(dict.fromkeys(out)) if unique else out


def write_toy_nli(path: Path, sentences: Sequence[str], rows: int = 20, negative_suffix: str = " not") -> Path:
    """An NLI triplet CSV (sent0, sent1, hard_neg): row i is sentence i, it with " indeed", sentence i+1 (with
    `negative_suffix`)."""
    lines = [f"{sentences[i]},{sentences[i]} indeed,{sentences[i + 1]}{negative_suffix}\n" for i in range(rows)]
    path.write_text("sent0,sent1,hard_neg\n" + "".join(lines), encoding="utf-8")
    return path


def write_toy_corpus_and_nli(folder: Path, n: int = 80, seed: int = 0, nli_rows: int = 20) -> tuple[Path, Path]:
    """`folder/corpus.txt` with `toy_sentences(n, seed)` and `folder/nli.csv` with `nli_rows` triplets over them."""
    sents = toy_sentences(n, seed)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sents) + "\n", encoding="utf-8")
    return corpus, write_toy_nli(folder / "nli.csv", sents, nli_rows)
