"""The training step of a round: draw the round's batches from its triplets as the curriculum moves, shape
them for the run's settings (word-deletion positives, in-batch negatives only), and train from the previous
round's model into `rounds/<r>/model/`, resumable from the trainer's mid-round checkpoint.

Plain functions (no Prefect), wrapped by the flow's `train` task.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

from curriculum import CurriculumState, TripletSampler
from dataio.errors import InputError
from flows.rounds.model_cards import round_card
from flows.rounds.schedule_step import curriculum_scheduler
from flows.run import inputs as run_inputs
from flows.run.config import RunConfig
from flows.run.progress import bars_on
from flows.run.rundir import RunDir, jsonable, recorded_model, write_json
from flows.run.step_records import RoundPlan, TrainedRound
from mining.embeddings import embed_corpus
from simcse.train_config import TrainConfig
from simcse.views import word_deletion

_log = logging.getLogger("flows")


def round_batches(config: RunConfig, run: RunDir, round_: int, start_state: dict[str, Any]) -> tuple[list[dict], Any]:
    """The round's training batches, drawn from its triplets with the plan as the curriculum moves.

    Drawn on a scratch copy of the scheduler from the round's start state, so the sequence is the same
    every time it is asked for (the trainer skips what it already trained after a resume) and state.json
    is written once, when the round closes. Returns the batches and the scheduler state after them.
    """
    state = CurriculumState.model_validate(copy.deepcopy(start_state))
    scratch = curriculum_scheduler(config, run, state=state, persist=False)
    sampler = TripletSampler(run.triplets, round_, batch_size=config.batch_size, seed=config.seed,
                             negatives_per_anchor=config.negatives_per_anchor, verify_checksums=True,
                             difficulty=config.curriculum.difficulty)
    batches: list[dict] = []
    plan = scratch.plan
    for _ in range(config.steps_per_round):
        batches.append(sampler.draw(plan))
        plan = scratch.after_batch(sampler.state_dict())
    return batches, scratch.state


def teacher_table(config: RunConfig, run: RunDir) -> Any:
    """The teacher's embeddings of the run's pool by text (simcse.distill.TeacherTable), from the embeddings
    cache the round's mining filled (the teacher is loaded only if that cache is gone)."""
    from simcse.distill import TeacherTable  # torch: only when a model is loaded or trained

    corpus = run_inputs.load_mining_corpus(run_inputs.prepare_inputs(config, run), config.mining.params)
    teacher = run_inputs.teacher_of(config)
    embeddings = embed_corpus(corpus, teacher, run.cache, model_fp=teacher.fingerprint(), show_progress=False,
                              store=config.teacher.vectors)
    return TeacherTable(corpus.texts, embeddings.matrix)


def train_config(config: RunConfig, round_: int) -> Any:
    """simcse's TrainConfig for round `round_`: the run's `training:` section plus what the run decides.

    Steps, batch size and seed come from the run (a different dropout stream per round, reproducible);
    the learning rate follows one schedule over all the run's steps (warm-up once, then decay to 0 at the
    end of the last round), and the optimizer's state passes from round to round; a mid-round checkpoint
    every half round lets a killed round continue instead of starting over.
    """
    settings = config.training.model_dump(exclude_unset=True)  # what the YAML set; the run fills in the rest
    settings.setdefault("seed", config.seed + round_)
    settings.setdefault("save_every", max(1, config.steps_per_round // 2))
    settings.setdefault("eval_every", 0)
    settings.setdefault("final_checkpoint", False)  # the round keeps its model and drops the train folder
    settings.update(max_steps=config.steps_per_round, batch_size=config.batch_size,
                    schedule_steps=config.rounds * config.steps_per_round,
                    schedule_offset=round_ * config.steps_per_round, save_optimizer=True)

    settings["progress"] = settings.get("progress", True) and bars_on()  # a bar on a terminal only (flows.run.progress)
    return TrainConfig(**settings)


def describe_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """What a round trained on: the bands its negatives came from, step by step, and a digest of its anchors
    and positives (equal for every arm with the same seed: paired sampling, checked by the experiment)."""
    names: list[str] = []
    per_step = []
    digest, order = hashlib.sha256(), hashlib.sha256()
    for batch in batches:
        counts: dict[str, int] = {}
        for band in batch.get("band") or []:
            for b in band if isinstance(band, list) else [band]:
                counts[b] = counts.get(b, 0) + 1
                if b not in names:
                    names.append(b)
        per_step.append(counts)
        digest.update(json.dumps([batch["anchor"], batch.get("positive")]).encode("utf-8"))
        order.update(json.dumps(batch["anchor"]).encode("utf-8"))
    # anchor_order_sha256: the anchors alone, what arms with and without mined positives share (paired sampling)
    return {"bands_per_step": {"bands": names, "counts": [[c.get(b, 0) for b in names] for c in per_step]},
            "anchors_sha256": digest.hexdigest(), "anchor_order_sha256": order.hexdigest()}


def with_word_deletion(batch: dict[str, Any], p: float, salt: str) -> dict[str, Any]:
    """Unsupervised rows (positive == anchor) get a word-deleted copy of the anchor as their positive."""
    positives = [word_deletion(a, p, salt) if pos == a else pos for a, pos in zip(batch["anchor"], batch["positive"])]
    return {**batch, "positive": positives}


def without_hard_negatives(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch for `negatives: in_batch`: anchors and positives only; unsupervised rows (positive == anchor)
    become plain unsupervised SimCSE (the trainer encodes the anchors twice under two dropout masks)."""
    anchors, positives = batch["anchor"], batch.get("positive")
    if positives is None or all(p == a for a, p in zip(anchors, positives)):
        return {"anchor": list(anchors)}
    return {"anchor": list(anchors), "positive": list(positives)}


def train_round(model_path: str, plan: RoundPlan, config: RunConfig, run: RunDir, round_: int) -> TrainedRound:
    """Train `steps_per_round` steps from `model_path`; the model lands in `rounds/<r>/model/`.

    The trainer works in `rounds/<r>/train/` (its checkpoint makes a killed round continue where it
    stopped, with the same weights as an uninterrupted run); its final model folder is then moved into
    place in one rename, and the checkpoint is dropped.
    """
    from simcse.train import MODEL, OPTIMIZER, train  # torch: only when a model is loaded or trained

    start = time.perf_counter()
    result_path = run.train_result_path(round_)
    if run.round_trained(round_):
        shutil.rmtree(run.train_dir(round_), ignore_errors=True)
        return TrainedRound.model_validate_json(result_path.read_text(encoding="utf-8"))
    if plan.state is None:
        raise RuntimeError(f"round {round_} is closed but its model is missing: {run.model_dir(round_)}")
    optimizer_state = None
    if round_ > 0 and model_path == str(run.model_dir(round_ - 1)):  # the run continues: so does its optimizer
        optimizer_state = run.optimizer_dir(round_ - 1)
        if not optimizer_state.is_dir():
            raise InputError(f"the optimizer state of round {round_ - 1} is missing, so round {round_} cannot "
                             f"continue the run's schedule; delete {run.round_dir(run.retrain_from(round_ - 1))} "
                             f"and every later round to train them again", path=optimizer_state)
    _log.info("round %d: training %d steps of %d rows from %s", round_, config.steps_per_round, config.batch_size,
             run_inputs.model_label(model_path))
    batches, after = round_batches(config, run, round_, plan.state)
    if config.positive_view == "word_deletion":
        batches = [with_word_deletion(b, config.word_deletion, f"{config.seed}/{round_}/{i}")
                   for i, b in enumerate(batches)]
    drawn = describe_batches(batches)
    if config.negatives == "in_batch":
        batches = [without_hard_negatives(b) for b in batches]
    encoder = run_inputs.take_encoder(model_path, config)  # trained in place: no longer the folder's

    settings = train_config(config, round_)
    teacher = teacher_table(config, run) if settings.distill_kl > 0 or settings.distill_margin_mse > 0 else None
    result = train(encoder, batches, settings, run.train_dir(round_), optimizer_state=optimizer_state,
                   card=round_card(config, run, round_, plan.plan.model_dump()), teacher=teacher)
    trained = run.train_dir(round_) / MODEL
    for src, dst in ((run.train_dir(round_) / OPTIMIZER, run.optimizer_dir(round_)), (trained, run.model_dir(round_))):
        if dst.exists():  # left by a kill between these renames and the result file
            shutil.rmtree(dst)
        os.replace(src, dst)  # the model last: its folder marks the round trained
    run_inputs.hold_encoder(str(run.model_dir(round_)), config, encoder)  # evaluated and mined next, as saved
    summary = TrainedRound.model_validate(jsonable({
        "round": round_, "steps": result.steps, "mean_train_accuracy": result.train_accuracy,
        "history": result.history, "triplets_per_s": result.triplets_per_s, "resumed_from": result.resumed_from,
        "model": recorded_model(round_), "seconds": time.perf_counter() - start, **drawn,
        # where the batches left the curriculum: the round closes from it, drawing nothing again
        "scheduler_after": json.loads(after.to_json())}))
    write_json(result_path, summary.as_file())
    shutil.rmtree(run.train_dir(round_), ignore_errors=True)  # the checkpoint is only needed mid-round
    if round_ > 0:  # round r's optimizer state now carries the run on; r-1's is no longer needed
        shutil.rmtree(run.optimizer_dir(round_ - 1), ignore_errors=True)
    accuracy = summary.mean_train_accuracy  # a finite number or None (jsonable)
    _log.info("round %d trained: %d steps, train accuracy %s, %.1f s", round_, summary.steps,
             "n/a" if accuracy is None else f"{accuracy:.3f}", summary.seconds)
    return summary
