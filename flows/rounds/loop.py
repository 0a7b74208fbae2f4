"""The round loop, once, for every caller: the Prefect flow runs each step as a task, the experiment
harness (bench/experiment.py) calls the plain step functions. No Prefect here.

    evaluate the starting model
    for each round r not yet complete:
        mine (current model) -> schedule (mixture, alpha) -> train -> evaluate -> close the round
        -> select the model to use (the best by dev, the starting model included) -> report
A killed run resumes with the same call: finished rounds are skipped, each step finds its own finished
output (see `flows.run.inputs`, `flows.rounds.mine_step`, `flows.rounds.schedule_step`, `flows.rounds.train_step`,
`flows.rounds.records`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dataio.folder_lock import lock_folder
from flows.rounds.mine_step import mine_round
from flows.rounds.records import (
    clean_partial_writes,
    finish_round,
    select_model,
    summarize,
    write_base_metrics,
    write_timings,
)
from flows.rounds.recovery import ensure_state
from flows.rounds.report import build_report
from flows.rounds.schedule_step import schedule_round
from flows.rounds.train_step import train_round
from flows.rounds.validate import check_run
from flows.run.config import RunConfig
from flows.run.inputs import base_model_path, describe_evaluation, evaluate_model, prepare_inputs, release_encoder
from flows.run.rundir import RunDir, write_json
from flows.run.step_records import Evaluation, MinedRound, RoundPlan, RunInputs, StepRecord, TrainedRound

_log = logging.getLogger("flows")


@dataclass(frozen=True)
class RoundSteps:
    """How each step runs. The round steps hand each other frozen records (`flows.run.step_records`); their
    `task_seconds` (the time inside a Prefect task body; a `task_seconds` key of the dicts `finish` and `report`
    return) lets the loop measure orchestration overhead."""

    prepare: Callable[[], RunInputs]
    evaluate: Callable[[str, RunInputs], Evaluation]  # (model, inputs)
    mine: Callable[[str, RunInputs, int], MinedRound]  # (model in, inputs, round)
    schedule: Callable[[int], RoundPlan]
    train: Callable[[str, RoundPlan, int], TrainedRound]  # (model in, plan, round)
    finish: Callable[[int, MinedRound, TrainedRound, Evaluation], dict[str, Any]]  # metrics.json, sealed
    report: Callable[[], dict[str, Any]] | None = None
    on_round: Callable[[int, dict[str, Any]], None] | None = None  # after a round closed (e.g. artifacts)
    on_start: Callable[[RunInputs, Evaluation], None] | None = None  # (inputs, base evaluation)
    on_end: Callable[[dict[str, Any]], None] | None = None  # the run's summary, after its last round
    check: Callable[[], Any] | None = None  # before the run folder is touched: flows.rounds.validate.check_run


def plain_steps(config: RunConfig, run: RunDir) -> RoundSteps:
    """The step functions called directly, without Prefect: the fault-injection tests drive a run this way."""
    return RoundSteps(
        check=lambda: check_run(config, announce=True),
        prepare=lambda: prepare_inputs(config, run),
        evaluate=lambda model, inputs: evaluate_model(model, inputs, config),
        mine=lambda model, inputs, r: mine_round(model, inputs, config, run, r),
        schedule=lambda r: schedule_round(config, run, r),
        train=lambda model, plan, r: train_round(model, plan, config, run, r),
        finish=lambda r, mined, trained, evaluated: finish_round(config, run, r, mined, trained, evaluated),
        report=lambda: {"report": str(build_report(run.root))},
    )


def run_rounds(config: RunConfig, run: RunDir, how: RoundSteps) -> dict[str, Any]:
    """Every round of the run not yet complete; returns the run's summary (`flows.rounds.records.summarize` + timings).

    Checks every input first (`how.check`), before the run folder is touched, then holds the folder's lock
    throughout (`dataio.folder_lock`; re-entrant, so the CLI's lock covers it)."""
    if how.check is not None:  # every file, column and label before the folder is touched
        for warning in how.check().warnings:
            _log.warning("%s", warning)
    run.root.mkdir(parents=True, exist_ok=True)
    try:
        with lock_folder(run.root):
            return _run_rounds(config, run, how)
    finally:
        release_encoder()  # the round's model stays in memory between steps, not after the run


def _run_rounds(config: RunConfig, run: RunDir, how: RoundSteps) -> dict[str, Any]:
    run.claim(config)
    clean_partial_writes(run)
    ensure_state(run, config)  # a lost or stale state.json is rebuilt from the rounds, never restarted
    done = run.completed_rounds()
    _log.info("run folder %s: %s", run.root, f"{len(done)} of {config.rounds} rounds complete, resuming" if done
             else f"{config.rounds} rounds of {config.steps_per_round} steps")
    start = time.perf_counter()
    inputs = how.prepare()
    base_model = base_model_path(config)
    base = how.evaluate(base_model, inputs)
    write_base_metrics(run, base)
    _log.info("base model: %s", describe_evaluation(base))
    if config.teacher is not None and not run.teacher_metrics_path.is_file():  # once per run: it never changes
        teacher = how.evaluate(config.teacher.path, inputs)
        write_json(run.teacher_metrics_path, teacher.as_file())
        _log.info("teacher (the judge's ceiling): %s", describe_evaluation(teacher))
    if how.on_start is not None:
        how.on_start(inputs, base)

    timings: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for r in range(config.rounds):
        if r in done:
            _log.info("round %d: complete, skipped", r)
            continue
        round_start = time.perf_counter()
        model_in = base_model if r == 0 else str(run.model_dir(r - 1))
        if r > 0 and r - 1 in done:  # written by an earlier call: check it is still there, as that round wrote it
            run.check_model(r - 1)
        elif r > 0 and not run.model_complete(r - 1):  # closed by this call: an internal error
            raise RuntimeError(f"round {r - 1} is marked complete but its model is missing: {run.model_dir(r - 1)}")
        mined = how.mine(model_in, inputs, r)
        plan = how.schedule(r)
        trained = how.train(model_in, plan, r)
        evaluated = how.evaluate(str(run.model_dir(r)), inputs)
        metrics = how.finish(r, mined, trained, evaluated)
        selection = select_model(run, config)
        report = how.report() if how.report else {}
        parts = {"mine": mined, "schedule": plan, "train": trained, "evaluate": evaluated, "finish": metrics,
                 "report": report}
        wall = time.perf_counter() - round_start
        tasks = {name: _task_seconds(x) for name, x in parts.items()}
        in_tasks = sum(tasks.values())
        timings.append({"round": r, "wall_seconds": wall, "task_seconds": in_tasks, "prefect_seconds": wall - in_tasks,
                        "tasks": tasks})
        write_timings(run, timings[-1:])
        _log.info("round %d: %s; %.1f s (%.1f s in task bodies)", r, describe_evaluation(evaluated), wall,
                 in_tasks)
        if selection:
            _log.info("model to use: %s", selection["note"])
        if how.on_round is not None:
            how.on_round(r, metrics)

    if not timings and how.report:  # nothing ran in this call: the report may predate a code change
        report = how.report()
    summary = summarize(run, config)
    summary["report"] = report.get("report", str(run.report_path) if run.report_path.is_file() else None)
    summary["timings"] = timings
    summary["flow_seconds"] = time.perf_counter() - start
    if how.on_end is not None:
        how.on_end(summary)
    return summary


def _task_seconds(result: StepRecord | dict[str, Any]) -> float:
    """The time a step spent inside its Prefect task body (0 when it ran as a plain call)."""
    if isinstance(result, StepRecord):
        return result.task_seconds
    return float(result.get("task_seconds", 0.0))
