"""Negatives in bands of difficulty, each with its guards and its skipped-candidate counts: random, in_domain,
nli_contradiction and nearest_neighbour, and on request the graded bands (graded_easy, graded_medium,
graded_hard: each anchor's nearest-neighbour window cut in thirds by the judge's score, the teacher's when there is
one), which let a curriculum move through difficulty as a teacher grades it.

Everything is vectorised over anchor rows (numpy), so a million anchors take seconds, and every random
choice comes from a counter-based hash of (seed, round, band, draw, anchor id, positive id): the same
inputs and seed give the same triplets whatever the process, chunking or sharding of the anchors.
Hand-written because no library mines graded bands with these guards; the kNN itself is `mining.index`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from dataio.hashing import hash_strings, salt_of, splitmix64, uniform
from dataio.triplet_layout import GRADED_BANDS
from mining.clusters import cluster_labels
from mining.corpus import MiningCorpus, domain_labels, normalized_keys
from mining.embeddings import Embeddings
from mining.exclusions import pair_keys
from mining.index import KnnResult
from mining.params import MiningParams

log = logging.getLogger(__name__)

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


def _collect(band: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], skipped: Counter,
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


def _rejection_band(ctx: BandContext, band: str, rows: np.ndarray,
                    draw: Callable[[np.ndarray, np.ndarray], np.ndarray], extra_guard: Callable | None) -> BandResult:
    """Draw `num_negatives` candidates per row; rejected draws are retried up to `max_tries` times."""
    params = ctx.params
    skipped: Counter = Counter()
    parts = []
    chosen = np.full((len(rows), params.num_negatives), -1, dtype=np.int64)
    for slot in range(params.num_negatives):
        pending = np.arange(len(rows))
        for attempt in range(params.max_tries):
            if not len(pending):
                break
            u = uniform(ctx.row_key[rows[pending]], salt_of(ctx.seed, ctx.round, band, slot, attempt))
            cand = draw(rows[pending], u)
            hopeless = cand < 0  # the anchor's group has no other member: no retry can help
            skipped["no_candidate_in_group"] += int(hopeless.sum())
            pending, cand, u = pending[~hopeless], cand[~hopeless], u[~hopeless]
            reject = np.zeros(len(pending), dtype=bool)
            masks = ctx.guard(rows[pending], cand)
            for reason, mask in masks.items():
                mask = mask & ~reject
                skipped[reason] += int(mask.sum())
                reject |= mask
            if extra_guard is not None:
                for reason, mask in extra_guard(rows[pending], cand).items():
                    mask = mask & ~reject
                    skipped[reason] += int(mask.sum())
                    reject |= mask
            dup = (chosen[pending] == cand[:, None]).any(axis=1) & ~reject
            skipped["duplicate"] += int(dup.sum())
            reject |= dup
            ok = pending[~reject]
            chosen[ok, slot] = cand[~reject]
            parts.append((rows[ok], np.full(len(ok), slot), cand[~reject], np.full(len(ok), -1)))
            pending = pending[reject]
        skipped["no_negative_found"] += len(pending)
    return _collect(band, parts, skipped, ctx)


def _rows(ctx: BandContext, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(ctx.a)) if rows is None else np.asarray(rows, dtype=np.int64)


def random_band(ctx: BandContext, rows: np.ndarray | None = None) -> BandResult:
    """Uniform over the pool: the easiest negatives. `rows`: the anchor rows to mine (default all; a shard's)."""
    rows = _rows(ctx, rows)
    n = ctx.n_pool

    def draw(_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.minimum((u * n).astype(np.int64), n - 1)

    return _rejection_band(ctx, "random", rows, draw, None)


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


def in_domain_band(ctx: BandContext, rows: np.ndarray | None = None) -> BandResult:
    """Same domain (or cluster), outside the anchor's top-m neighbours: harder than random, easier than kNN."""
    groups, how = ctx.groups()
    order = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = _rows(ctx, rows)
    m = ctx.params.exclude_top

    def draw(r: np.ndarray, u: np.ndarray) -> np.ndarray:
        g = groups[ctx.a[r]]
        size = sizes[g]
        cand = order[np.minimum(starts[g] + (u * size).astype(np.int64), len(order) - 1)]
        return np.where(size > 1, cand, -1)

    def near(r: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
        if ctx.knn is None:
            return {}
        top = ctx.knn.indices[ctx.knn_rows(r), : m + 1]
        return {"top_neighbour": (top == cand[:, None]).any(axis=1)}

    res = _rejection_band(ctx, "in_domain", rows, draw, near)
    res.note = how
    return res


def nli_contradiction_band(ctx: BandContext, rows: np.ndarray | None = None) -> BandResult:
    """The labeled contradiction of each NLI row: no false negatives by construction."""
    rows = _rows(ctx, rows)
    rows = rows[ctx.neg[rows] >= 0]
    skipped: Counter = Counter()
    cand = ctx.neg[rows]
    reject = np.zeros(len(rows), dtype=bool)
    for reason, mask in ctx.guard(rows, cand).items():
        skipped[reason] += int(mask.sum())
        reject |= mask
    keep = rows[~reject]
    part = (keep, np.zeros(len(keep), dtype=np.int64), ctx.neg[keep], np.full(len(keep), -1))
    res = _collect("nli_contradiction", [part], skipped, ctx)
    if not (ctx.neg >= 0).any():
        res.note = "no NLI triplets in the inputs"
    return res


def _neighbour_window(ctx: BandContext, rows: np.ndarray, skipped: Counter, filter_enabled: bool
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For anchor `rows`: their kNN candidates, which are valid, the nearest-neighbour window after the guards
    and the false-negative filter, and each candidate's place in the kNN list (`negative_rank`). Counts what the
    guards and the filter removed into `skipped`."""
    params = ctx.params
    cand = ctx.knn.indices[ctx.knn_rows(rows)]
    valid = cand >= 0
    excluded = ~valid
    for reason, mask in ctx.guard(rows, cand).items():
        skipped[reason] += int((mask & valid).sum())
        excluded |= mask
    ok = ~excluded
    knn_rank = np.cumsum(ok, axis=1) - 1  # what `negative_rank` records: the place in the kNN list
    unsup = ctx.p[rows] == ctx.a[rows]
    if filter_enabled:
        if ctx.teacher is None:  # the index's scores (exact for torch / faiss-flat / IVF-flat)
            sims = ctx.knn.scores[ctx.knn_rows(rows)]
            ap = ctx.emb.pair_sims(ctx.a[rows], ctx.p[rows])
        else:  # the teacher judges: its cosine of each candidate and of the anchor's positive
            sims = _teacher_sims(ctx, rows, cand, valid)
            ap = ctx.teacher.pair_sims(ctx.a[rows], ctx.p[rows])
        threshold = np.full(len(rows), np.inf, dtype=np.float64)
        if params.relative_margin is not None:
            threshold = np.where(unsup, threshold, ap - np.abs(ap) * params.relative_margin)
        if params.max_score is not None:
            threshold = np.where(unsup, params.max_score, threshold)
        drop = ok & (sims > threshold[:, None])
        # Counted among the candidates the window would have reached without the filter.
        reached = drop & (knn_rank < params.range_max)
        skipped["relative_margin"] += int((reached & ~unsup[:, None]).sum())
        skipped["max_score"] += int((reached & unsup[:, None]).sum())
        ok &= ~drop
    rank = np.cumsum(ok, axis=1) - 1
    first = np.where(unsup, params.first_unsupervised_rank, params.range_min)
    window = ok & (rank >= first[:, None]) & (rank < params.range_max)
    return cand, valid, window, knn_rank


def _teacher_sims(ctx: BandContext, rows: np.ndarray, cand: np.ndarray, valid: np.ndarray) -> np.ndarray:
    flat = np.where(valid, cand, 0).reshape(-1)
    return ctx.teacher.pair_sims(np.repeat(ctx.a[rows], cand.shape[1]), flat).reshape(cand.shape)


def _seeded_pick(ctx: BandContext, rows: np.ndarray, cand: np.ndarray, valid: np.ndarray, allowed: np.ndarray,
                 salt: int) -> np.ndarray:
    """`num_negatives` of each row's `allowed` candidates, chosen by keys of the row's and the candidate's ids."""
    keys = splitmix64(ctx.row_key[rows][:, None] ^ splitmix64(ctx.id_key[np.where(valid, cand, 0)] ^
                                                               np.uint64(salt)))
    keys = np.where(allowed, keys, np.iinfo(np.uint64).max)
    n = min(ctx.params.num_negatives, cand.shape[1])
    order = np.argsort(keys, axis=1, kind="stable")[:, :n]
    pick = np.zeros_like(allowed)
    np.put_along_axis(pick, order, True, axis=1)
    return pick & allowed


def nearest_neighbour_band(ctx: BandContext, rows: np.ndarray | None = None, *,
                           filter_enabled: bool = True) -> BandResult:
    """Ranks [range_min, range_max) of the kNN list after the positive-aware filter (TopK-PercPos).

    As NV-Retriever does, false negatives are filtered first and the window is taken from what is left: a
    filtered candidate is replaced by the next one instead of costing the anchor its negative. The window
    counts the candidates that passed the guards and the filter; `negative_rank` records the place in the
    kNN list (the anchor, its positives and same-text sentences not counted), filtered candidates included."""
    if ctx.knn is None:
        raise ValueError("nearest_neighbour needs the kNN of the anchors")
    params = ctx.params
    skipped: Counter = Counter()
    parts = []
    salt = salt_of(ctx.seed, ctx.round, "nearest_neighbour", "sample")
    all_rows = _rows(ctx, rows)
    for s in range(0, len(all_rows), ROW_CHUNK):
        rows = all_rows[s:s + ROW_CHUNK]
        cand, valid, window, knn_rank = _neighbour_window(ctx, rows, skipped, filter_enabled)
        if params.sampling == "top":
            pick = window & (np.cumsum(window, axis=1) <= params.num_negatives)
        else:
            pick = _seeded_pick(ctx, rows, cand, valid, window, salt)
        got = pick.sum(axis=1)
        skipped["no_negative_found"] += int(np.maximum(params.num_negatives - got, 0).sum())
        r_local, col = np.nonzero(pick)
        parts.append((rows[r_local], col, cand[r_local, col], knn_rank[r_local, col]))
    return _collect("nearest_neighbour", parts, skipped, ctx)


def graded_band(ctx: BandContext, rows: np.ndarray | None = None, *, grade: int) -> BandResult:
    """One third of each anchor's nearest-neighbour window, graded by the judge: the window's candidates (after
    the guards and the false-negative filter, as `nearest_neighbour` takes them) sorted by the judge's cosine
    with the anchor (the teacher's when the round has one, else the student's) and cut in three equal parts;
    grade 0 (graded_easy) is the least similar third, 2 (graded_hard) the most. `num_negatives` are drawn per
    anchor from its third, seeded by ids, so every anchor with at least three candidates has a negative of
    each grade and a curriculum over the grades moves each anchor from easy to hard negatives.

    The three grades are drawn in one pass over the window (`graded_bands`), kept on `ctx` for the other two."""
    key = None if rows is None else np.asarray(rows).tobytes()
    if ctx._graded is None or ctx._graded[0] != key:
        ctx._graded = (key, graded_bands(ctx, rows))
    return ctx._graded[1][grade]


def graded_bands(ctx: BandContext, rows: np.ndarray | None = None) -> list[BandResult]:
    """`graded_band` of every grade, easy to hard: each block's window and its thirds computed once."""
    if ctx.knn is None:
        raise ValueError("the graded bands need the kNN of the anchors")
    grades = range(len(GRADED_BANDS))
    skipped: list[Counter] = [Counter() for _ in grades]
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in grades]
    salts = [salt_of(ctx.seed, ctx.round, band, "sample") for band in GRADED_BANDS]
    all_rows = _rows(ctx, rows)
    for s in range(0, len(all_rows), ROW_CHUNK):
        rows = all_rows[s:s + ROW_CHUNK]
        removed: Counter = Counter()
        cand, valid, window, knn_rank = _neighbour_window(ctx, rows, removed, True)
        judge = ctx.knn.scores[ctx.knn_rows(rows)] if ctx.teacher is None else _teacher_sims(ctx, rows, cand, valid)
        # Each candidate's place among its anchor's window, least similar first (ties: the kNN order).
        score = np.where(window, judge, np.inf)
        order = np.argsort(score, axis=1, kind="stable")
        place = np.empty_like(order)
        np.put_along_axis(place, order, np.arange(cand.shape[1])[None, :].repeat(len(rows), axis=0), axis=1)
        size = window.sum(axis=1)
        third = (place * len(GRADED_BANDS)) // np.maximum(size, 1)[:, None]
        for grade in grades:
            skipped[grade].update(removed)
            pick = _seeded_pick(ctx, rows, cand, valid, window & (third == grade), salts[grade])
            got = pick.sum(axis=1)
            skipped[grade]["no_negative_found"] += int(np.maximum(ctx.params.num_negatives - got, 0).sum())
            r_local, col = np.nonzero(pick)
            parts[grade].append((rows[r_local], col, cand[r_local, col], knn_rank[r_local, col]))
    return [_collect(band, parts[grade], skipped[grade], ctx) for grade, band in enumerate(GRADED_BANDS)]


BAND_FUNCTIONS: dict[str, Callable[..., BandResult]] = {
    "random": random_band,
    "in_domain": in_domain_band,
    "nli_contradiction": nli_contradiction_band,
    "nearest_neighbour": nearest_neighbour_band,
    **{band: partial(graded_band, grade=g) for g, band in enumerate(GRADED_BANDS)},
}


def add_similarities(result: BandResult, emb: Embeddings, teacher: Embeddings | None = None) -> BandResult:
    """Cosine similarities (from the cached embeddings) of each triplet's anchor-negative and anchor-positive,
    the student's and, with a teacher, the teacher's."""
    result.anchor_negative_sim = emb.pair_sims(result.anchor, result.negative)
    result.anchor_positive_sim = emb.pair_sims(result.anchor, result.positive)
    if teacher is not None:
        result.teacher_score = teacher.pair_sims(result.anchor, result.negative)
        result.teacher_positive_score = teacher.pair_sims(result.anchor, result.positive)
    return result


def available_bands(corpus: MiningCorpus) -> list[str]:
    """Bands the inputs allow: nli_contradiction needs NLI triplets with a contradiction."""
    out = ["random", "in_domain"]
    if corpus.has_nli():
        out.append("nli_contradiction")
    out.append("nearest_neighbour")
    return out
