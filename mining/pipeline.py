"""One mining round: corpus -> embeddings (cached) -> kNN index -> bands -> Parquet + manifest.

`mine()` is what the flows call each round with the current model. A round whose manifest already records
the same model fingerprint, corpus fingerprint and parameters (with the sha256 of the excluded-pairs file, when
one is given) is returned as is (nothing recomputed), so a re-run after a crash or a repeated flow task costs
nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataio.errors import TripletDataError
from dataio.process_memory import peak_rss_mb
from dataio.triplet_layout import manifest_path
from dataio.triplets import RoundManifest, check_layout, is_complete, read_manifest, resolve_file, round_problem
from mining import index as index_module
from mining.band_context import POOL_EMBEDDING_BANDS, BandContext, BandResult
from mining.bands import BAND_FUNCTIONS, add_similarities, add_teacher_scores, available_bands
from mining.corpus import MiningCorpus, check_size
from mining.embeddings import Embeddings, embed_corpus, model_fingerprint
from mining.exclusions import ExcludedPairs, as_excluded_pairs, pair_keys
from mining.index import (
    FAISS_NPROBE_START,
    KnnResult,
    _cuda_available,
    choose_backend,
    faiss_search,
    ivf_index,
    knn,
    recall_sample_rows,
    tune_nprobe,
)
from mining.judge import JUDGE_LABELS, judge_embeddings, mine_positives, never_negatives, with_mined_positives
from mining.params import MiningParams, check_bands
from mining.parquet import RoundWriter
from mining.shards import (
    EncoderRef,
    MapShards,
    SearchSpec,
    ShardJob,
    blocks,
    encode_slice,
    local_map,
    merge_shards,
    mine_shard,
    save_faiss_index,
)
from mining.similarity_sample import add_sampled_similarities

log = logging.getLogger(__name__)


@dataclass
class MiningResult:
    """What a round produced: the manifest (band statistics, files) and where it lies."""

    root: Path
    round: int
    manifest_path: Path
    manifest: RoundManifest
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, BandResult] = field(default_factory=dict, repr=False)

    @property
    def bands(self) -> dict[str, dict[str, Any]]:
        """Each band's statistics as in the manifest file (rows, mean_anchor_negative_sim, skipped, note)."""
        return {b: s.model_dump(mode="json", exclude_unset=True) for b, s in self.manifest.bands.items()}

    @property
    def files(self) -> list[Path]:
        return [resolve_file(self.root, self.round, f.path) for f in self.manifest.files]

    def difficulties(self) -> dict[str, float]:
        return self.manifest.difficulties()


def resolve_params(params: MiningParams | Mapping[str, Any] | None) -> MiningParams:
    if params is None:
        return MiningParams()
    if isinstance(params, MiningParams):
        return params
    return MiningParams.from_dict(dict(params))


def mine(corpus: MiningCorpus, encoder: Any, out_dir: str | os.PathLike, round: int = 0,
         bands: Sequence[str] | None = None, params: MiningParams | Mapping[str, Any] | None = None, seed: int = 0,
         cache_dir: str | os.PathLike | None = None, *, model_fp: str | None = None,
         embeddings: Embeddings | None = None, show_progress: bool = True, keep_results: bool = False,
         exclude_pairs: str | os.PathLike | ExcludedPairs | None = None, shards: int = 1,
         map_shards: MapShards | None = None, encoder_ref: EncoderRef | None = None,
         teacher: Any | None = None, teacher_vectors: str | os.PathLike | None = None) -> MiningResult:
    """Mine round `round` of `corpus` with `encoder` into `out_dir` (the triplets root).

    `bands`: default every band the inputs allow. `cache_dir`: embeddings cache (default
    `<out_dir>/.cache`). `embeddings`: precomputed pool embeddings (skips encoding; their fingerprints are
    used). `keep_results`: keep the in-memory band results on the returned object (for analysis).
    `exclude_pairs`: a file (or `mining.exclusions.ExcludedPairs`) of (anchor_id, negative_id) pairs marked as
    false negatives; no band picks them.
    `shards` > 1: encode `shards` chunks at a time, then search and mine the anchors in `shards` blocks, each
    through `map_shards(fn, items)` (default: in this process, one after the other; flows passes a Dask
    cluster's). Workers load the encoder from `encoder_ref` (default: the `encoder` object travels) and read
    the pool from the embeddings cache. The triplets are those of `shards=1` (counter-based draws).
    `teacher`: a frozen judge (`mining.encoders.Teacher`, or any encoder with a fingerprint): the pool is embedded
    with it once (cached by its content hash), its cosines decide the false-negative filter and the mined
    positives (`params.mined_positives`), and every row records them (`teacher_score`, `teacher_positive_score`).
    `teacher_vectors`: a folder keeping the teacher's vectors by text across runs (mining.vector_store).
    """
    t_start = time.perf_counter()
    p = resolve_params(params)
    chosen = check_bands(bands) or available_bands(corpus)
    check_size(corpus, p.num_negatives)
    out = Path(out_dir)
    _check_round(out, round)  # before anything is computed or written
    mfp = embeddings.model_fingerprint if embeddings is not None else model_fingerprint(encoder, model_fp)
    cfp = corpus.fingerprint()
    excluded = as_excluded_pairs(exclude_pairs)
    teacher_fp = model_fingerprint(teacher) if teacher is not None else None
    judge = p.judge_of_positives(teacher is not None) if p.mined_positives else None  # refused before any work
    run_params = _run_params(p, seed, chosen, excluded, teacher_fp)

    reused = _reusable_round(out, round, mfp, cfp, run_params)
    if reused is not None:
        return reused

    timings: dict[str, float] = {}
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    # No band of this round looks at the student's vectors: only a sample's similarities are computed
    # (mining.similarity_sample). Mined positives the teacher alone judges need the teacher's vectors (cached,
    # every row scored from them), not the student's; a judgement the student takes part in needs the whole pool.
    sampled = p.similarity_sample is not None and embeddings is None and \
        judge in (None, "teacher") and not set(chosen) & POOL_EMBEDDING_BANDS
    sharded = shards > 1 and not sampled  # sampled: nothing to search or spread, the bands are index arithmetic
    map_shards = map_shards or local_map
    timings["encode"] = 0.0
    if not sampled:
        embeddings = _pool_embeddings(corpus, encoder, embeddings, cache, mfp, p, show_progress, timings,
                                      shards=shards if sharded else 1, map_shards=map_shards,
                                      worker_encoder=encoder_ref or encoder)
    teacher_emb = _teacher_embeddings(corpus, teacher, cache, teacher_fp, p, show_progress, timings, teacher_vectors)

    t = time.perf_counter()
    excluded_pairs, exclusion_info = _pool_exclusions(excluded, corpus)
    corpus, excluded_pairs, judged = _judge_positives(corpus, embeddings, teacher_emb, judge, p, seed,
                                                      excluded_pairs, timings)
    ctx = BandContext(corpus, embeddings, p, seed, round, excluded_pairs=excluded_pairs, teacher=teacher_emb)
    timings["bands"] = time.perf_counter() - t
    if sharded:
        results, index_info, shard_timings = _mine_sharded(ctx, embeddings, chosen, ctx.knn_depth(chosen), p, seed,
                                                           shards, map_shards, cache)
        timings["index"] = shard_timings["index"]
        timings["bands"] += shard_timings["bands"]
        sample_info: Any = None
    else:
        results, index_info, sample_info = _mine_here(ctx, chosen, encoder, sampled, show_progress, timings)
    _assert_and_log_bands(results, ctx)

    writer = _write_bands(RoundWriter(out, round, corpus, model_fingerprint=mfp, corpus_fingerprint=cfp,
                                      params=run_params, rows_per_file=p.rows_per_file), results, timings)
    timings["total"] = time.perf_counter() - t_start
    path = writer.finish({b: r.stats() for b, r in results.items()},  # the manifest last: the round is complete
                         _manifest_extra(corpus, embeddings, index_info, sample_info, timings, exclusion_info, teacher,
                                         teacher_fp, teacher_emb, judged, judge))
    manifest = read_manifest(out, round)
    return MiningResult(out, round, path, manifest, cached=False, timings=timings,
                        results=results if keep_results else {})


def _write_bands(writer: RoundWriter, results: Mapping[str, BandResult], timings: dict[str, float]) -> RoundWriter:
    """Every band's rows written (the round is not complete until `writer.finish` writes its manifest)."""
    t = time.perf_counter()
    writer.begin()
    for res in results.values():
        writer.write_band(res)
    timings["write"] = time.perf_counter() - t
    return writer


def _teacher_embeddings(corpus: MiningCorpus, teacher: Any | None, cache: Path, teacher_fp: str | None,
                        p: MiningParams, show_progress: bool, timings: dict[str, float],
                        vectors: str | os.PathLike | None = None) -> Embeddings | None:
    """The teacher's vectors of the pool (None without a teacher): encoded once per pool (per text with a store
    folder, `vectors`), cached by the teacher's content hash, so later rounds read them from the cache."""
    if teacher is None:
        return None
    t = time.perf_counter()
    emb = embed_corpus(corpus, teacher, cache, model_fp=teacher_fp, batch_size=p.batch_size,
                       show_progress=show_progress, store=vectors)
    timings["teacher_encode"] = time.perf_counter() - t
    return emb


def _run_params(p: MiningParams, seed: int, chosen: Sequence[str], excluded: ExcludedPairs | None,
                teacher_fp: str | None) -> dict[str, Any]:
    """The parameters a round's manifest records and a rerun compares: an excluded-pairs file and a teacher only
    when given, so rounds mined without them keep their fingerprint."""
    run_params = {**p.as_dict(), "seed": int(seed), "bands": list(chosen)}
    if excluded is not None:
        run_params["exclude_pairs_sha256"] = excluded.sha256
    if teacher_fp is not None:
        run_params["teacher_fingerprint"] = teacher_fp
    return run_params


def _judge_positives(corpus: MiningCorpus, embeddings: Embeddings | None, teacher_emb: Embeddings | None,
                     judge: str | None, p: MiningParams, seed: int, excluded_pairs: np.ndarray | None,
                     timings: dict[str, float]) -> tuple[MiningCorpus, np.ndarray | None, Any]:
    """Mined positives (mining.judge, by `judge`: teacher, student or both; None: the round mines none): the corpus
    with them as anchors' positives, and the pairs they make added to those no band may pick as negatives."""
    if judge is None:
        return corpus, excluded_pairs, None
    t = time.perf_counter()
    judged = mine_positives(corpus, judge_embeddings(judge, embeddings, teacher_emb), p, seed,
                            pair_keys(excluded_pairs, len(corpus)))
    corpus = with_mined_positives(corpus, judged)
    guard = never_negatives(corpus, judged)
    excluded_pairs = guard if excluded_pairs is None else np.concatenate([excluded_pairs, guard])
    log.info("mined positives (%s judge): %d of %d unsupervised anchors (%.1f%%)",
             judge, len(judged.rows), judged.candidates, 100 * judged.share)
    timings["mined_positives"] = time.perf_counter() - t
    return corpus, excluded_pairs, judged


def _check_round(out: Path, round_: int) -> None:
    if round_ < 0:
        raise ValueError(f"round must be >= 0, got {round_}")
    check_layout(out)  # a folder of an older layout is refused with the upgrade command


def _assert_and_log_bands(results: Mapping[str, BandResult], ctx: BandContext) -> None:
    """Every band's rows keep the guards (an assertion: a failure is a bug here, not bad input); each logged."""
    for band, res in results.items():
        _assert_guards(res, ctx)
        log.info("band %s: %d rows, mean anchor-negative sim %s, skipped %s", band, res.rows,
                 f"{res.mean_sim():.4f}" if res.mean_sim() is not None else "n/a", dict(res.skipped))


def _reusable_round(out: Path, round_: int, mfp: str, cfp: str, run_params: dict[str, Any]) -> MiningResult | None:
    """The round already mined with the same fingerprints and parameters, its files intact (checked by sha256:
    it may have been written by another process), else None (a damaged one is said and mined again)."""
    existing = _existing_manifest(out, round_)
    if existing is None or existing.model_fingerprint != mfp or existing.corpus_fingerprint != cfp \
            or existing.params != run_params:
        return None
    problem = round_problem(out, existing, check_sha=True)
    if problem is None:
        log.info("round %d: manifest with the same fingerprints and parameters exists; reusing it", round_)
        return MiningResult(out, round_, manifest_path(out, round_), existing, cached=True)
    log.warning("round %d: %s; mining the round again", round_, problem)
    return None


def _pool_embeddings(corpus: MiningCorpus, encoder: Any, embeddings: Embeddings | None, cache: Path, mfp: str,
                     p: MiningParams, show_progress: bool, timings: dict[str, float], *, shards: int,
                     map_shards: MapShards, worker_encoder: Any) -> Embeddings:
    """The pool's student embeddings: the ones given (checked against the pool), else the cache's or encoded now
    (`shards` > 1: `shards` chunks at a time through `map_shards`, workers loading `worker_encoder`)."""
    t = time.perf_counter()
    if embeddings is None:
        map_chunks = None
        if shards > 1:
            encode = functools.partial(encode_slice, worker_encoder, batch_size=p.batch_size)
            map_chunks = functools.partial(map_shards, encode)
        embeddings = embed_corpus(corpus, encoder, cache, model_fp=mfp, batch_size=p.batch_size,
                                  show_progress=show_progress, map_chunks=map_chunks, chunks_per_call=shards)
    elif embeddings.matrix.shape[0] != len(corpus):
        raise ValueError(f"embeddings have {embeddings.matrix.shape[0]} rows for a pool of {len(corpus)}")
    timings["encode"] = time.perf_counter() - t
    return embeddings


def _pool_exclusions(excluded: ExcludedPairs | None, corpus: MiningCorpus) -> tuple[Any, dict[str, Any]]:
    """The excluded pairs as pool-index pairs, and what the manifest says of them (none: None, {})."""
    if excluded is None:
        return None, {}
    pairs, unknown = excluded.pool_pairs(corpus)
    log.info("%s: %d excluded pairs, %d naming ids not in the pool (ignored)", excluded.path, len(pairs), unknown)
    return pairs, {**excluded.describe(), "in_pool": len(pairs), "not_in_pool": unknown}


def _mine_here(ctx: BandContext, chosen: list[str], encoder: Any, sampled: bool, show_progress: bool,
               timings: dict[str, float]) -> tuple[dict[str, BandResult], dict[str, Any], Any]:
    """Every band of the round in this process: (results, what the manifest says of the index, the similarity
    sample's description or None). `sampled`: no index; the bands' similarities from a sample of their rows."""
    if sampled:
        t = time.perf_counter()
        results = {band: BAND_FUNCTIONS[band](ctx) for band in chosen}
        sample_info = add_sampled_similarities(ctx, results, encoder, ctx.params.similarity_sample,
                                               ctx.params.batch_size)
        for res in results.values():  # the teacher's pool vectors are at hand: every row gets its scores
            add_teacher_scores(res, ctx.teacher)
        timings["bands"] += time.perf_counter() - t
        return results, {}, sample_info
    t = time.perf_counter()
    index_info = _search(ctx, ctx.knn_depth(chosen), show_progress)
    timings["index"] = time.perf_counter() - t
    t = time.perf_counter()
    results = {band: add_similarities(BAND_FUNCTIONS[band](ctx), ctx.emb, ctx.teacher) for band in chosen}
    timings["bands"] += time.perf_counter() - t
    return results, index_info, None


def _search(ctx: BandContext, depth: int, show_progress: bool) -> dict[str, Any]:
    """The anchors' `depth` nearest neighbours in the pool, set on `ctx`; what the manifest says of the index."""
    if not depth:
        return {}
    p = ctx.params
    result = knn(ctx.emb.matrix, ctx.uq, depth, p.backend, nlist=p.nlist, nprobe=p.nprobe, ivf_codec=p.ivf_codec,
                 recall_sample=p.recall_sample, seed=ctx.seed, show_progress=show_progress,
                 recall_target=p.recall_target)
    ctx.set_knn(result, ctx.uq)
    return {"backend": result.backend, "device": result.device, "recall_at_k": result.recall,
            "seconds": round_(result.seconds), **result.details}


def _manifest_extra(corpus: MiningCorpus, embeddings: Embeddings | None, index_info: dict[str, Any],
                    sample_info: Any, timings: dict[str, float], exclusion_info: dict[str, Any], teacher: Any,
                    teacher_fp: str | None, teacher_emb: Embeddings | None, judged: Any,
                    judge: str | None) -> dict[str, Any]:
    """What the manifest records of the round beside its bands: index, corpus, embeddings (or the similarity
    sample), timings, and the excluded pairs, the teacher and the mined positives when there were any."""
    extra: dict[str, Any] = {
        "index": index_info, "corpus": corpus.describe(),
        "embeddings": {"cached": embeddings.cached, "path": str(embeddings.path) if embeddings.path else None}
        if embeddings is not None else {"sample": sample_info},
        "timings": {k: round_(v) for k, v in timings.items()}}
    if exclusion_info:
        extra["exclude_pairs"] = exclusion_info
    if teacher_emb is not None:
        extra["teacher"] = {"fingerprint": teacher_fp, "path": str(getattr(teacher, "path", "")) or None,
                            "cached": teacher_emb.cached,
                            "path_of_embeddings": str(teacher_emb.path) if teacher_emb.path else None}
        if not teacher_emb.cached:  # what encoding with the teacher cost in memory: the process's peak so far
            extra["teacher"]["process_peak_rss_mb"] = peak_rss_mb()
    if judged is not None:
        extra["mined_positives"] = {"judge": JUDGE_LABELS[judge], **judged.describe()}
    return extra


def _existing_manifest(root: Path, round_: int) -> RoundManifest | None:
    """The round's manifest when it is complete and readable; else None (the round is mined again)."""
    if not is_complete(root, round_):  # an old-layout round is refused with the upgrade command
        return None
    try:
        return read_manifest(root, round_)
    except TripletDataError as err:
        log.warning("round %d: %s; mining it again", round_, err)
        return None


def _mine_sharded(ctx: BandContext, embeddings: Embeddings, chosen: list[str], depth: int, p: MiningParams,
                  seed: int, shards: int, map_shards: MapShards, work: Path
                  ) -> tuple[dict[str, BandResult], dict[str, Any], dict[str, float]]:
    """Search and bands in blocks of unique anchors, each block one `mine_shard` call through `map_shards`.

    Exact backends search inside each shard. faiss-ivf is trained, tuned (nprobe) and saved once here, then
    each shard searches its block in the saved index; torch-ivf searches here and ships each shard its rows.
    The recall sample is the unsharded one, its hits counted where each sampled query is searched."""
    t0 = time.perf_counter()
    n, dim = embeddings.matrix.shape
    nq = len(ctx.uq)
    backend, reason = p.backend, "requested"
    if backend == "auto":
        backend, reason = choose_backend(n, nq, dim)
    if "in_domain" in chosen:
        ctx.groups()  # once, here: every shard gets the same groups (k-means when needed)
    spec, full, index_file = None, None, None
    details: dict[str, Any] = {"reason": reason, "pool": n, "queries": nq, "k": depth}
    approximate = backend in ("faiss-ivf", "torch-ivf")
    pick = recall_sample_rows(nq, p.recall_sample, seed) if approximate and depth else None
    if depth and backend == "faiss-ivf":
        index, info = ivf_index(embeddings.matrix, nlist=p.nlist, codec=p.ivf_codec, seed=seed)

        def search(q: np.ndarray, nprobe: int) -> np.ndarray:
            index.nprobe = nprobe
            return faiss_search(embeddings.matrix, q, depth, index, False, trained=True, refine=info["refined"])[1]

        tuned = tune_nprobe(search, embeddings.matrix, ctx.uq, depth, info["nlist"], p.nprobe, FAISS_NPROBE_START,
                            p.recall_target, p.recall_sample, seed)
        details.update(info)
        details.update(tuned)
        index_file = save_faiss_index(index, work, f"shard-index-{os.getpid()}-{time.time_ns()}.faiss")
        del index
        spec = SearchSpec(backend, depth, index_file, tuned["nprobe"], info)
    elif depth and backend == "torch-ivf":
        full = knn(embeddings.matrix, ctx.uq, depth, backend, nlist=p.nlist, nprobe=p.nprobe, seed=seed,
                   recall_sample=p.recall_sample, recall_target=p.recall_target)
        details.update(full.details)
    elif depth:
        spec = SearchSpec(backend, depth)
    prepared = time.perf_counter() - t0
    jobs = []
    for start, end in blocks(nq, shards, align=index_module.SEARCH_STEP):
        own = None if pick is None or full is not None else pick[(pick >= start) & (pick < end)]
        part = None if full is None else KnnResult(full.scores[start:end], full.indices[start:end], full.backend,
                                                   full.device)
        jobs.append(ShardJob(ctx, (start, end), chosen, spec, own, part))
    log.info("mining %d anchors in %d shards (%s)", nq, len(jobs), backend)
    t = time.perf_counter()
    try:
        parts = map_shards(mine_shard, jobs)
    finally:
        if index_file is not None:
            Path(index_file).unlink(missing_ok=True)
    wall = time.perf_counter() - t
    results = merge_shards(parts, chosen)
    recall = None
    if full is not None:
        recall = full.recall
    elif pick is not None:
        hits, total = sum(x.recall_hits for x in parts), sum(x.recall_total for x in parts)
        recall = hits / total if total else 1.0
        details["recall_sample"] = len(pick)
    # Each shard's search and bands overlap in time with the others': split the wall time by their shares.
    search_s = sum(x.seconds["index"] for x in parts)
    bands_s = sum(x.seconds["bands"] for x in parts)
    share = search_s / max(1e-9, search_s + bands_s)
    index_info = {"backend": backend, "device": "cuda" if backend == "torch" and _cuda_available() else "cpu",
                  "recall_at_k": recall, "seconds": round_(prepared + wall * share), "shards": len(jobs),
                  **details} if depth else {"shards": len(jobs)}
    return results, index_info, {"index": prepared + wall * share, "bands": wall * (1 - share)}


def _assert_guards(res: BandResult, ctx: BandContext) -> None:
    """Last line of defence: a negative equal to its anchor or positive (index or text), or an excluded pair,
    is a bug, not data."""
    if not res.rows:
        return
    bad = (res.negative == res.anchor) | (res.negative == res.positive)
    keys = ctx.text_key
    bad |= (keys[res.negative] == keys[res.anchor]) | (keys[res.negative] == keys[res.positive])
    if bad.any():
        raise AssertionError(f"band {res.band}: {int(bad.sum())} negatives equal their anchor or positive")
    excluded = np.isin(res.anchor * ctx.n_pool + res.negative, ctx.excluded_keys)
    if excluded.any():
        raise AssertionError(f"band {res.band}: {int(excluded.sum())} negatives are excluded pairs")


def round_(x: float) -> float:
    return float(np.round(x, 4))
