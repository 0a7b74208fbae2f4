"""What every band's mining shares: the context of one round (`BandContext`: the pool, the anchors, their kNN,
the judge and the guards every band applies), a band's result (`BandResult`: triplets as pool indices and why
candidates were skipped), and putting results together in anchor order (`collect`, `merge_results`). The bands
themselves are `mining.bands`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataio.hashing import hash_strings, splitmix64
from dataio.triplet_layout import GRADED_BANDS
from mining.clusters import cluster_labels
from mining.corpus import MiningCorpus, domain_labels, normalized_keys
from mining.embeddings import Embeddings
from mining.exclusions import pair_keys
from mining.index import KnnResult
from mining.params import MiningParams

ROW_CHUNK = 65536
MAX_PADDED_POSITIVES = 64
FILTER_SLACK = 16  # extra neighbours retrieved so filtered candidates can be replaced (bounded memory)
# Bands that look at the pool's vectors (kNN lists, k-means groups); the others pick by index alone.
POOL_EMBEDDING_BANDS = frozenset({"in_domain", "nearest_neighbour", *GRADED_BANDS})


@dataclass
class BandResult:
    """Triplets of one band as pool indices, plus why candidates were skipped."""

    band: str
    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    rank: np.ndarray
    skipped: Counter = field(default_factory=Counter)
    anchor_negative_sim: np.ndarray | None = None
    anchor_positive_sim: np.ndarray | None = None
    note: str | None = None
    row: np.ndarray | None = None  # anchor row and negative slot of each triplet: merging shards restores the order
    slot: np.ndarray | None = None
    teacher_score: np.ndarray | None = None  # the teacher's anchor-negative cosine (rounds with a teacher)
    teacher_positive_score: np.ndarray | None = None
    similarity_rows: int | None = None  # rows whose similarities were computed, when only a sample was

    @property
    def rows(self) -> int:
        return len(self.anchor)

    def mean_sim(self) -> float | None:
        if self.anchor_negative_sim is None or not len(self.anchor_negative_sim):
            return None
        if self.similarity_rows is not None:  # the sampled rows' mean; the others have none (NaN)
            return float(np.nanmean(self.anchor_negative_sim, dtype=np.float64)) if self.similarity_rows else None
        return float(np.mean(self.anchor_negative_sim, dtype=np.float64))

    def stats(self) -> dict:
        out = {"rows": self.rows, "mean_anchor_negative_sim": self.mean_sim(),
               "skipped": {k: int(v) for k, v in sorted(self.skipped.items()) if v}}
        if self.similarity_rows is not None:
            out["similarity_rows"] = self.similarity_rows
        if self.teacher_score is not None:  # the band's difficulty as the teacher grades it
            out["mean_teacher_score"] = float(np.mean(self.teacher_score, dtype=np.float64)) if self.rows else None
        if self.note:
            out["note"] = self.note
        return out


class BandContext:
    """What every band needs, computed once per round: row keys, text keys, positives per anchor, kNN."""

    def __init__(self, corpus: MiningCorpus, embeddings: Embeddings, params: MiningParams, seed: int,
                 round_: int, knn: KnnResult | None = None, knn_queries: np.ndarray | None = None,
                 excluded_pairs: np.ndarray | None = None, teacher: Embeddings | None = None) -> None:
        self.corpus, self.emb, self.params, self.seed, self.round = corpus, embeddings, params, seed, round_
        # The judge of the false-negative filter: the teacher's embeddings when the round has one, else the student's.
        self.teacher = teacher
        self.n_pool = len(corpus)
        # (anchor, negative) pool-index pairs a team marked as false negatives, as sorted anchor * n_pool + negative
        # keys: one searchsorted per guard call (mining.exclusions reads them).
        self.excluded_keys = pair_keys(excluded_pairs, self.n_pool)
        self.most_excluded = int(np.unique(self.excluded_keys // max(1, self.n_pool), return_counts=True)[1].max(
            initial=0))
        self.a, self.p, self.neg, self.kind = corpus.anchor, corpus.positive, corpus.negative, corpus.kind
        self.text_key = normalized_keys(corpus.texts)
        self.id_key = hash_strings(corpus.ids)
        # Row key from the ids only: draws do not depend on row order, file order or sharding.
        self.row_key = splitmix64(self.id_key[self.a] ^ splitmix64(self.id_key[self.p]))
        self.uq, self.inv = np.unique(self.a, return_inverse=True)
        self.inv = self.inv.reshape(-1)
        self._positives()
        self.knn: KnnResult | None = None
        self.knn_offset = 0  # the kNN rows held are those of uq[knn_offset:] (a shard holds only its block)
        self._groups: tuple[np.ndarray, str] | None = None
        # The three graded bands of a block of rows, drawn in one pass over its window (`graded_band`).
        self._graded: tuple[bytes | None, list[BandResult]] | None = None
        if knn is not None:
            self.set_knn(knn, knn_queries)

    def set_knn(self, knn: KnnResult, queries: np.ndarray | None, offset: int = 0) -> None:
        """The kNN lists of `uq[offset:offset + len(queries)]` (all of uq unless a shard sets its block)."""
        if queries is None or not np.array_equal(queries, self.uq[offset:offset + len(queries)]):
            raise ValueError("the kNN result must be computed for the unique anchors (BandContext.uq)")
        self.knn, self.knn_offset = knn, offset
        self._graded = None

    def knn_rows(self, rows: np.ndarray) -> np.ndarray:
        """Positions in the held kNN result of the anchors of `rows`."""
        return self.inv[rows] - self.knn_offset

    def groups(self) -> tuple[np.ndarray, str]:
        """in_domain's group of every pool row and how it was formed; computed once (k-means when needed)."""
        if self._groups is None:
            self._groups = domain_groups(self)
        return self._groups

    def rows_of_block(self, start: int, end: int) -> np.ndarray:
        """Anchor rows whose anchor is one of uq[start:end] (a shard's rows), ascending."""
        return np.nonzero((self.inv >= start) & (self.inv < end))[0]

    def __getstate__(self) -> dict[str, Any]:
        """What a shard needs, without the corpus' texts (the keys derived from them travel instead)."""
        state = dict(self.__dict__)
        state["corpus"] = None
        return state

    def knn_depth(self, bands: list[str]) -> int:
        """Neighbours to retrieve: the window plus room for the anchor, its positives, duplicate texts, the
        most pairs any anchor has excluded, and for candidates the false-negative filter removes (the next
        ones move into the window)."""
        k = 0
        if "nearest_neighbour" in bands or set(GRADED_BANDS) & set(bands):
            k = self.params.range_max + min(FILTER_SLACK, self.params.range_max)
        if "in_domain" in bands:
            k = max(k, self.params.exclude_top + 1)
        return min(self.n_pool, k + 1 + self.pos_pad.shape[1] + 4 + self.most_excluded) if k else 0

    def _positives(self) -> None:
        """Padded (unique anchor x P) matrix of every positive an anchor has in any row (-1 pads)."""
        order = np.argsort(self.inv, kind="stable")
        counts = np.bincount(self.inv, minlength=len(self.uq))
        width = int(min(max(1, counts.max(initial=1)), MAX_PADDED_POSITIVES))
        pad = np.full((len(self.uq), width), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(order)) - np.repeat(starts, counts)
        rows_sorted = self.inv[order]
        keep = slot < width
        pad[rows_sorted[keep], slot[keep]] = self.p[order][keep]
        self.pos_pad = pad
        self.many_pos: dict[int, np.ndarray] = {}
        for u in np.nonzero(counts > width)[0]:
            self.many_pos[int(u)] = np.unique(self.p[self.inv == u])

    def is_positive(self, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """cand (rows x c) is a positive of the row's anchor (in any of its rows)."""
        cand2 = cand if cand.ndim == 2 else cand[:, None]
        pos = self.pos_pad[self.inv[rows]]
        hit = np.zeros(cand2.shape, dtype=bool)
        for j in range(pos.shape[1]):
            hit |= (cand2 == pos[:, j:j + 1]) & (pos[:, j:j + 1] >= 0)
        if self.many_pos:
            for r_local, r in enumerate(rows):
                extra = self.many_pos.get(int(self.inv[r]))
                if extra is not None:
                    hit[r_local] |= np.isin(cand2[r_local], extra)
        return hit if cand.ndim == 2 else hit[:, 0]

    def guard(self, rows: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
        """Masks of candidates that must never be negatives: the anchor, a positive, the same text, a pair marked
        as a false negative (`excluded_pair`, only when exclusions were given)."""
        c2 = cand if cand.ndim == 2 else cand[:, None]
        a = self.a[rows][:, None]
        is_anchor = c2 == a
        is_pos = self.is_positive(rows, c2) & ~is_anchor
        ck = self.text_key[np.where(c2 >= 0, c2, 0)]
        same = ((ck == self.text_key[self.a[rows]][:, None]) | (ck == self.text_key[self.p[rows]][:, None]))
        same &= ~is_anchor & ~is_pos & (c2 >= 0)
        out = {"anchor": is_anchor, "positive": is_pos, "same_text": same}
        if len(self.excluded_keys):
            keys = a * self.n_pool + c2
            at = np.minimum(np.searchsorted(self.excluded_keys, keys), len(self.excluded_keys) - 1)
            out["excluded_pair"] = (self.excluded_keys[at] == keys) & (c2 >= 0) & ~is_anchor & ~is_pos & ~same
        if cand.ndim == 1:
            out = {k: v[:, 0] for k, v in out.items()}
        return out


def collect(band: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], skipped: Counter,
             ctx: BandContext) -> BandResult:
    """Concatenate (row, slot, negative, rank) parts, ordered by anchor row then slot."""
    if parts:
        rows, slots, negs, ranks = (np.concatenate(x) for x in zip(*parts))
    else:
        rows = slots = negs = ranks = np.empty(0, dtype=np.int64)
    order = np.lexsort((slots, rows))
    rows, slots, negs, ranks = rows[order], slots[order], negs[order], ranks[order]
    return BandResult(band, ctx.a[rows], ctx.p[rows], negs.astype(np.int64), ranks.astype(np.int32), skipped,
                      row=rows.astype(np.int64), slot=np.asarray(slots, dtype=np.int32))


def merge_results(parts: list[BandResult]) -> BandResult:
    """One band's results from shards of anchor rows, in the order mining all rows at once gives."""
    first = parts[0]
    skipped: Counter = Counter()
    for part in parts:
        skipped.update(part.skipped)
    if len(parts) == 1:
        return first
    rows = np.concatenate([p.row for p in parts])
    slots = np.concatenate([p.slot for p in parts])
    order = np.lexsort((slots, rows))

    def cat(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)[order]

    return BandResult(first.band, cat("anchor"), cat("positive"), cat("negative"), cat("rank"), skipped,
                      cat("anchor_negative_sim"), cat("anchor_positive_sim"), first.note, rows[order], slots[order],
                      cat("teacher_score"), cat("teacher_positive_score"))


def rows_of(ctx: BandContext, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(ctx.a)) if rows is None else np.asarray(rows, dtype=np.int64)


def domain_groups(ctx: BandContext) -> tuple[np.ndarray, str]:
    """Group id of every pool row: its domain label when at least two labels exist, else its k-means cluster."""
    labels = domain_labels(ctx.corpus)
    need_clusters = len(labels) < 2 or any(d is None for d in ctx.corpus.domains)
    clusters = cluster_labels(ctx.emb, ctx.params.n_clusters, ctx.seed) if need_clusters else None
    if len(labels) < 2:
        return clusters, f"k-means clusters ({int(clusters.max()) + 1}); fewer than two domain labels"
    code = {d: i for i, d in enumerate(labels)}
    groups = np.array([code[d] if d else -1 for d in ctx.corpus.domains], dtype=np.int64)
    if clusters is not None:
        unlabeled = groups < 0
        groups[unlabeled] = len(labels) + clusters[unlabeled]
        return groups, f"domain labels {labels}; k-means clusters for {int(unlabeled.sum())} unlabeled sentences"
    return groups, f"domain labels {labels}"
