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

from collections import Counter
from collections.abc import Callable
from functools import partial

import numpy as np

from dataio.hashing import salt_of, splitmix64, uniform
from dataio.triplet_layout import GRADED_BANDS
from mining.band_context import ROW_CHUNK, BandContext, BandResult, collect, rows_of
from mining.corpus import MiningCorpus
from mining.embeddings import Embeddings


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
    return collect(band, parts, skipped, ctx)


def random_band(ctx: BandContext, rows: np.ndarray | None = None) -> BandResult:
    """Uniform over the pool: the easiest negatives. `rows`: the anchor rows to mine (default all; a shard's)."""
    rows = rows_of(ctx, rows)
    n = ctx.n_pool

    def draw(_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.minimum((u * n).astype(np.int64), n - 1)

    return _rejection_band(ctx, "random", rows, draw, None)


def in_domain_band(ctx: BandContext, rows: np.ndarray | None = None) -> BandResult:
    """Same domain (or cluster), outside the anchor's top-m neighbours: harder than random, easier than kNN."""
    groups, how = ctx.groups()
    order = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = rows_of(ctx, rows)
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
    rows = rows_of(ctx, rows)
    rows = rows[ctx.neg[rows] >= 0]
    skipped: Counter = Counter()
    cand = ctx.neg[rows]
    reject = np.zeros(len(rows), dtype=bool)
    for reason, mask in ctx.guard(rows, cand).items():
        skipped[reason] += int(mask.sum())
        reject |= mask
    keep = rows[~reject]
    part = (keep, np.zeros(len(keep), dtype=np.int64), ctx.neg[keep], np.full(len(keep), -1))
    res = collect("nli_contradiction", [part], skipped, ctx)
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
    all_rows = rows_of(ctx, rows)
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
    return collect("nearest_neighbour", parts, skipped, ctx)


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
    all_rows = rows_of(ctx, rows)
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
    return [collect(band, parts[grade], skipped[grade], ctx) for grade, band in enumerate(GRADED_BANDS)]


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
    return add_teacher_scores(result, teacher)


def add_teacher_scores(result: BandResult, teacher: Embeddings | None) -> BandResult:
    """The teacher's cosines of each triplet's anchor-negative and anchor-positive (nothing without a teacher)."""
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
