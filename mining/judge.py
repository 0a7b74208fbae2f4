"""The judge of mined pairs: which corpus neighbours are positives, and the teacher's score of every mined pair.

In a domain corpus the nearest neighbours of a text are often paraphrases of it (many tweets share one
headline): used as negatives they hurt, used as positives they are the in-domain supervision an unlabeled
corpus lacks (AugSBERT, GPL). The *judge* decides: the student's own embeddings by default, a stronger
teacher's when a run names one (`mining.teacher`), or both (`positive_judge: both`: the mean of the two cosines,
an ensemble whose members err on different pairs). Its embeddings are a cached `Embeddings` like the student's.

**Mined positives** (`MiningParams.mined_positives`): an unsupervised anchor (a corpus text with no labeled
pair) gets its judge-nearest neighbour as its positive when the judge is confident they say the same thing:
the neighbour's cosine is at least `positive_min_score`, beats the next neighbour by `positive_min_margin`,
and (with `positive_mutual`) the anchor is the neighbour's own nearest neighbour too. Candidates with the
anchor's text, and pairs a team marked in its excluded-pairs file (rejected in the HTML view), never qualify.
The anchor row then trains as a pair (anchor, mined positive) instead of on its dropout or word-deletion view;
both directions of every mined pair are kept out of each other's negative bands (`never_negatives`).

Hand-written because the rule reads the judge's kNN lists together with the corpus' labeled rows and the
team's exclusions; the kNN itself is `mining.index.knn`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mining.corpus import MINED, UNSUPERVISED, MiningCorpus, normalized_keys
from mining.embeddings import Embeddings
from mining.index import knn
from mining.params import MiningParams

log = logging.getLogger(__name__)

# Neighbours fetched per query: the text itself and exact repeats of it come first and are skipped, then the
# first and second real neighbour are read (the margin needs both).
_DEPTH = 8


@dataclass(frozen=True)
class MinedPositives:
    """Anchor rows that got a mined positive: the row, the positive's pool index and the judge's score."""

    rows: np.ndarray
    positive: np.ndarray
    score: np.ndarray
    candidates: int  # unsupervised anchor rows considered
    rejected: dict[str, int]  # why the others did not get one

    @property
    def share(self) -> float:
        return len(self.rows) / self.candidates if self.candidates else 0.0

    def describe(self) -> dict[str, Any]:
        """What the manifest records: the rows considered, the share that got a positive, why the rest did not."""
        return {"candidates": self.candidates, "mined": int(len(self.rows)), "share": round(self.share, 4),
                "mean_score": float(np.mean(self.score, dtype=np.float64)) if len(self.score) else None,
                "rejected": {k: int(v) for k, v in sorted(self.rejected.items()) if v}}


def _first_two(judge: Embeddings, queries: np.ndarray, text_key: np.ndarray, excluded_keys: np.ndarray,
               backend: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query: its first real neighbour, that neighbour's score, and the second real neighbour's score
    (-inf when there is none). The query's own text, repeats of it and excluded pairs are not neighbours."""
    n = judge.matrix.shape[0]
    if not len(queries):
        empty = np.empty(0, dtype=np.int64)
        return empty, np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32)
    depth = min(n, _DEPTH)
    res = knn(judge.matrix, queries, depth, backend, seed=seed, recall_target=None)
    cand, scores = res.indices, res.scores.astype(np.float32)
    ok = (cand >= 0) & (text_key[np.where(cand >= 0, cand, 0)] != text_key[queries][:, None])
    if len(excluded_keys):
        keys = queries[:, None] * n + cand
        at = np.minimum(np.searchsorted(excluded_keys, keys), len(excluded_keys) - 1)
        ok &= excluded_keys[at] != keys
    place = np.cumsum(ok, axis=1)
    first_col = np.argmax(ok & (place == 1), axis=1)
    has_first = ok.any(axis=1)
    second = ok & (place == 2)
    has_second = second.any(axis=1)
    second_col = np.argmax(second, axis=1)
    r = np.arange(len(queries))
    first = np.where(has_first, cand[r, first_col], -1)
    s1 = np.where(has_first, scores[r, first_col], -np.inf).astype(np.float32)
    s2 = np.where(has_second, scores[r, second_col], -np.inf).astype(np.float32)
    return first.astype(np.int64), s1, s2


# How the manifest, the report, `inspect` and the HTML view name each judge (`MiningParams.positive_judge`).
JUDGE_LABELS = {"teacher": "teacher", "student": "student", "both": "teacher+student"}


def judge_embeddings(judge: str, student: Embeddings | None, teacher: Embeddings | None) -> Embeddings:
    """The vectors whose cosines judge the mined positives: the teacher's, the student's, or for `both` the two
    unit vectors side by side, each scaled by 1/sqrt(2), so that a dot product is the mean of the two cosines
    (and the kNN search of `mine_positives` ranks by it unchanged)."""
    vectors = {"teacher": teacher, "student": student}
    if judge in vectors:
        if vectors[judge] is None:
            raise ValueError(f"positive_judge {judge!r} needs the {judge}'s embeddings of the pool")
        return vectors[judge]
    if judge != "both":
        raise ValueError(f"unknown judge {judge!r}; known: {', '.join(JUDGE_LABELS)}")
    if teacher is None or student is None:
        raise ValueError("positive_judge 'both' needs the teacher's and the student's embeddings of the pool")
    if student.ids != teacher.ids:
        raise ValueError("the student's and the teacher's embeddings hold different pools")
    scale = np.float32(1 / np.sqrt(2))
    matrix = np.hstack([np.asarray(teacher.matrix, np.float32) * scale,
                        np.asarray(student.matrix, np.float32) * scale]).astype(teacher.matrix.dtype)
    return Embeddings(matrix, list(teacher.ids), f"{teacher.model_fingerprint}+{student.model_fingerprint}",
                      teacher.pool_fingerprint)


def mine_positives(corpus: MiningCorpus, judge: Embeddings, params: MiningParams, seed: int = 0,
                   excluded_keys: np.ndarray | None = None) -> MinedPositives:
    """The unsupervised anchor rows of `corpus` whose judge-nearest neighbour passes the rule (see the module).

    `excluded_keys`: sorted `anchor * len(corpus) + candidate` keys of pairs that may never be paired."""
    if judge.matrix.shape[0] != len(corpus):
        raise ValueError(f"the judge's embeddings have {judge.matrix.shape[0]} rows for a pool of {len(corpus)}")
    excluded_keys = np.empty(0, dtype=np.int64) if excluded_keys is None else np.asarray(excluded_keys, np.int64)
    rows = np.nonzero(corpus.kind == UNSUPERVISED)[0]
    rejected: dict[str, int] = {}
    if not len(rows):
        return MinedPositives(rows, rows.copy(), np.empty(0, np.float32), 0, rejected)
    text_key = normalized_keys(corpus.texts)
    anchors = corpus.anchor[rows]
    first, s1, s2 = _first_two(judge, anchors, text_key, excluded_keys, params.backend, seed)
    keep = first >= 0
    rejected["no_neighbour"] = int((~keep).sum())
    low = keep & (s1 < params.positive_min_score)
    rejected["below_min_score"] = int(low.sum())
    keep &= ~low
    close = keep & (s1 - s2 < params.positive_min_margin)
    rejected["below_min_margin"] = int(close.sum())
    keep &= ~close
    if params.positive_mutual and keep.any():
        # The anchor must be its neighbour's first neighbour too: search the neighbours not already searched.
        back = np.full(len(corpus), -2, dtype=np.int64)
        back[anchors] = first
        missing = np.setdiff1d(first[keep], anchors)
        if len(missing):
            back[missing] = _first_two(judge, missing, text_key, excluded_keys, params.backend, seed)[0]
        one_way = keep & (back[np.where(keep, first, 0)] != anchors)
        rejected["not_mutual"] = int(one_way.sum())
        keep &= ~one_way
    return MinedPositives(rows[keep], first[keep], s1[keep], len(rows), rejected)


def with_mined_positives(corpus: MiningCorpus, mined: MinedPositives) -> MiningCorpus:
    """A copy of `corpus` whose mined rows pair their anchor with the mined positive (kind MINED). The pool,
    ids and the corpus' fingerprint (of the inputs) are unchanged."""
    positive, kind = corpus.positive.copy(), corpus.kind.copy()
    positive[mined.rows] = mined.positive
    kind[mined.rows] = MINED
    return dataclasses.replace(corpus, positive=positive, kind=kind, _fingerprint=corpus.fingerprint())


def never_negatives(corpus: MiningCorpus, mined: MinedPositives) -> np.ndarray:
    """(anchor, negative) pool pairs no band may pick: both directions of every mined pair, as [m, 2]."""
    a = corpus.anchor[mined.rows]
    return np.concatenate([np.stack([a, mined.positive], 1), np.stack([mined.positive, a], 1)]).astype(np.int64)

