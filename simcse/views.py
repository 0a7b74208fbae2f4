"""Positive views for unsupervised SimCSE: what the anchor is paired with when a corpus has no labeled pairs.

SimCSE's positive is the same sentence under a second dropout mask (`dropout`, the default: nothing to do
here). On a model already trained for similarity that task is saturated (training accuracy 1.0, loss about
1e-4 on tweets for all-MiniLM-L6-v2), so `word_deletion` makes it harder: the positive is a copy of the
sentence with each word deleted with probability `p` (at least one word kept), as in the augmentation studies
that followed SimCSE. Deterministic: a hash of (salt, position, sentence) decides each deletion, so a run is
reproducible and a resumed run draws the same views.
"""

from __future__ import annotations

import hashlib


def word_deletion(text: str, p: float, salt: str = "") -> str:
    """`text` with each word deleted with probability `p`; the middle word stays when all would go."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"word deletion probability must be in [0, 1), got {p}")
    words = text.split()
    kept = []
    for i, word in enumerate(words):
        h = hashlib.blake2b(f"{salt}\0{i}\0{text}".encode(), digest_size=8).digest()
        if int.from_bytes(h, "little") / 2**64 >= p:
            kept.append(word)
    if not kept:
        kept = [words[len(words) // 2]] if words else [text]
    return " ".join(kept)
