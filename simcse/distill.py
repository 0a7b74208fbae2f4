"""A teacher's cosines for a training batch: what the distillation losses (simcse.losses) pull the student toward.

The teacher is never run while training: its embeddings of the corpus are computed once (mining's embeddings
cache) and looked up by text. `TeacherTable(texts, vectors)` maps each text to its unit vector; a batch's
cosines are one matrix product on the prepare thread (simcse.batch_prep), in the contrastive loss's candidate
order: each anchor against every positive, then every hard negative (row j's m-th at B + j*k + m), or against
every anchor for unsupervised batches (the teacher's view of a sentence is the sentence). A positive the teacher
never embedded is a view of its anchor (word deletion), so it takes the anchor's vector; any other unknown text
is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class TeacherTable:
    """The teacher's unit vectors of a corpus, looked up by text."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} teacher vectors")
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.row)

    def lookup(self, texts: Sequence[str], fallback: Sequence[str] | None = None) -> np.ndarray:
        """float32 [n, d] vectors of `texts`; a text not in the table takes `fallback[i]`'s (when given)."""
        rows = []
        for i, text in enumerate(texts):
            r = self.row.get(text)
            if r is None and fallback is not None:
                r = self.row.get(fallback[i])
            if r is None:
                raise KeyError(f"the teacher has no embedding of {text[:80]!r}; distillation needs the teacher's "
                               f"embeddings of every training text (mine the round with the run's teacher)")
            rows.append(r)
        out = np.asarray(self.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def batch_teacher_sims(table: TeacherTable, anchors: list[str], positives: list[str] | None,
                       negatives: list[list[str]] | None) -> torch.Tensor:
    """The teacher's cosines [B, candidates] in the loss's candidate order (see the module docstring)."""
    a = table.lookup(anchors)
    if positives is None:
        return torch.from_numpy(a @ a.T)
    cands = [table.lookup(positives, fallback=anchors)]
    if negatives:
        cands.append(table.lookup([t for row in negatives for t in row]))
    return torch.from_numpy(a @ np.concatenate(cands).T)
