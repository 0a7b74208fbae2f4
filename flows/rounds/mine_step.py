"""The mining step of a round: mine every band with the current model into `<run>/triplets/`, and read a
mined round back from its manifest (never from partial files).

Plain functions (no Prefect): the flow's `mine` task wraps `mine_round`, and asks `mined_round_intact` whether
a cached result may stand in for the files. `mining.pipeline.mine` returns an existing complete round, so a
repeated call costs nothing.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from dataio.errors import TripletDataError
from dataio.triplets import RoundManifest, is_complete, read_manifest, round_problem
from flows.run import inputs as run_inputs
from flows.run.config import RunConfig
from flows.run.fingerprint import file_fingerprint
from flows.run.progress import bars_on, forwarded
from flows.run.rundir import RunDir
from flows.run.step_records import MinedRound, RunInputs
from mining.pipeline import mine
from mining.shards import EncoderRef, sharded_mining

_log = logging.getLogger("flows")


def mine_round(model_path: str, inputs: RunInputs, config: RunConfig, run: RunDir, round_: int) -> MinedRound:
    """Mine every band of round `round_` with `model_path`; mining returns an existing complete round.

    `mining.shards` > 1 spreads the round over a Dask or Ray cluster (`mining.engine`; `mining.cluster`, else a
    local one), set up as `mine --shards --engine` does (mining.shards.sharded_mining); `mining.encode_runtime`
    is what the encoder runs on.
    """
    start = time.perf_counter()
    settings = config.mining
    corpus = run_inputs.load_mining_corpus(inputs, settings.params)
    _log.info("round %d: mining %s from a pool of %d sentences with %s", round_,
             ", ".join(settings.bands) if settings.bands else "every band the inputs allow", len(corpus),
             run_inputs.model_label(model_path))
    encoder = run_inputs.load_encoder(model_path, config, settings.encode_runtime)
    kwargs: dict[str, Any] = {"round": round_, "bands": settings.bands, "seed": config.seed,
                              "cache_dir": run.cache, "show_progress": bars_on(), "params": settings.params}
    if inputs.exclude_pairs:
        kwargs["exclude_pairs"] = inputs.exclude_pairs
    if config.teacher is not None:
        kwargs["teacher"] = run_inputs.teacher_of(config)
        kwargs["teacher_vectors"] = config.teacher.vectors
    ref = EncoderRef.of(run_inputs.open_encoder, model_path, encode_runtime=settings.encode_runtime,
                        **run_inputs.encoder_settings(config))
    # Encoding the pool is most of a round's mining: its lines (start, cache hit, done) are the run's own.
    with sharded_mining(settings.shards, ref, settings.cluster, settings.engine) as sharding, \
            forwarded(("mining.embeddings",), _log):
        result = mine(corpus, encoder, run.triplets, **kwargs, **sharding)
    summary = mined_summary(run, round_, result.manifest, seconds=time.perf_counter() - start)  # not read back
    _log.info("round %d mined: %s", round_, ", ".join(
        f"{b} {s['rows']} rows (difficulty {_fmt(s.get('mean_anchor_negative_sim'))})"
        for b, s in summary.bands.items()))
    return summary


def read_mined(run: RunDir, round_: int) -> MinedRound:
    """The band statistics and files of a complete round, from its manifest (never from partial files)."""
    return mined_summary(run, round_, read_manifest(run.triplets, round_))


def mined_summary(run: RunDir, round_: int, manifest: RoundManifest, seconds: float | None = None) -> MinedRound:
    """A mined round as the later steps take it: band statistics, files, rows, difficulties, the manifest's hash."""
    return MinedRound(round=round_, bands={b: s.model_dump(mode="json") for b, s in manifest.bands.items()},
                      files=[f.model_dump(mode="json") for f in manifest.files],
                      rows=sum(f.rows for f in manifest.files), difficulties=manifest.difficulties(),
                      manifest_sha256=file_fingerprint(run.manifest_path(round_)), seconds=seconds)


def mined_round_intact(run: RunDir, round_: int) -> bool:
    """The round's manifest exists and every file it lists is in place with its rows and sha256 (else the
    round is mined again: a Prefect cache hit never stands in for a missing or changed file)."""
    if not is_complete(run.triplets, round_):  # an old-layout round stops the run with the upgrade command
        return False
    try:
        problem = round_problem(run.triplets, read_manifest(run.triplets, round_), check_sha=True)
    except (OSError, TripletDataError) as err:
        problem = str(err)
    if problem is not None:
        _log.warning("round %d: %s; mining it again", round_, problem)
    return problem is None


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"
