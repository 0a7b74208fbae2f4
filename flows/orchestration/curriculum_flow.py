"""The flows: the curriculum loop, and standalone mine / train / evaluate built from the same tasks.

`curriculum_flow(config)`: the round loop of `flows.rounds.loop` (the one the experiment harness runs too) with
each step a Prefect task: evaluate the base model; then for each round r not yet complete: mine (every
band, with the current model; cached) -> schedule (mixture and alpha from the round's measured band
difficulties) -> train a fixed number of steps on batches the sampler draws -> evaluate -> close the round
(state.json, rounds/<r>/metrics.json) -> the model to use -> plots and report. A run killed at any point
resumes with the same call: finished rounds are skipped, a half-mined round is re-mined (only manifests
count), a half-trained round continues from the trainer's checkpoint.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import deployment, flow_run

from dataio.errors import InputError
from dataio.triplets import is_complete
from flows.orchestration.scheduled_runs import run_scheduled, scheduled_run_name
from flows.orchestration.tasks import bind_tasks, run_logging
from flows.registry.tracking import round_hooks, tracker_for
from flows.rounds.continuing import Continuing
from flows.rounds.loop import RoundSteps, run_rounds
from flows.rounds.mine_step import mined_round_intact, read_mined
from flows.rounds.recovery import ensure_state
from flows.rounds.validate import check_run
from flows.run.config import RunConfig, load_config
from flows.run.inputs import base_model_path, describe_evaluation
from flows.run.rundir import RunDir
from flows.run.step_records import Evaluation

ConfigArg = RunConfig | str | Path


def _as_config(config: ConfigArg) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def _artifact_key(run: RunDir, what: str) -> str:
    """Artifact keys allow ASCII lowercase letters, digits and dashes only (Prefect checks `^[a-z0-9-]*$`):
    accents are dropped ('prüfung' -> 'prufung'), any other character becomes a dash. (`str.isalnum` alone
    kept the 'ü', and a run into such a folder failed at its first artifact, after the round's work.)"""
    name = "".join(_key_part(ch) for ch in run.root.name.casefold()).strip("-") or "run"
    return f"{name}-{what}"[:100]


def _key_part(ch: str) -> str:
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return plain if plain and all(c in _KEY_CHARS for c in plain) else "-"


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _metrics_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        ev = row.get("evaluation") or {}
        entry: dict[str, Any] = {"round": row.get("round")}
        for kind in ("sts", "pairs"):
            for stem, value in (ev.get(kind) or {}).items():
                entry[f"{'sts' if kind == 'sts' else 'ap'}:{stem}"] = round(float(value), 2)
        for name in ("alignment", "uniformity"):
            if ev.get(name) is not None:
                entry[name] = round(float(ev[name]), 4)
        train = row.get("train") or {}
        if train.get("mean_train_accuracy") is not None:
            entry["train_accuracy"] = round(float(train["mean_train_accuracy"]), 4)
        cur = row.get("curriculum") or {}
        if cur.get("competence") is not None:
            entry["competence"] = round(float(cur["competence"]), 3)
        table.append(entry)
    return table


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run this process runs in, if any (id, name, deployment)."""
    tags = {"prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name,
            "prefect.root_flow_run_id": flow_run.root_flow_run_id, "prefect.deployment": deployment.name}
    return {k: str(v) for k, v in tags.items() if v}


@flow(name="simcse-curriculum", log_prints=True, validate_parameters=False)
def curriculum_flow(config: ConfigArg) -> dict[str, Any]:
    """Train -> re-mine -> advance the curriculum, round after round; returns a summary of the run."""
    with run_logging():
        return _curriculum(_as_config(config))


def _curriculum(config: RunConfig) -> dict[str, Any]:
    # A registry run (flows.rounds.continuing): a no-op when nothing is new, else a warm start from the current version.
    continuing = Continuing.prepare(config, prefect_tags())
    if continuing.noop is not None:
        create_markdown_artifact(continuing.run.report_path.read_text(encoding="utf-8"),
                                 key=_artifact_key(continuing.run, "report"), description="No-op: nothing new")
        return continuing.noop
    config = continuing.config
    run = RunDir(Path(config.output_dir))
    tasks = bind_tasks(run)

    def after_round(r: int, _metrics: dict[str, Any]) -> None:
        rows = ([base_row] if (base_row := run.read_base_metrics()) else []) + \
            [run.read_metrics(k) for k in run.completed_rounds()]
        create_table_artifact(_metrics_table(rows), key=_artifact_key(run, "metrics"),
                              description=f"Evaluation after round {r} of {run.root}")

    hooks = round_hooks(tracker_for(config, run, prefect_tags()), config)  # MLflow, when tracking.enabled

    def on_round(r: int, metrics: dict[str, Any]) -> None:
        after_round(r, metrics)
        if "on_round" in hooks:
            hooks["on_round"](r, metrics)

    how = RoundSteps(
        prepare=lambda: tasks.prepare(config, run.root),
        evaluate=lambda model, inputs: tasks.evaluate(model, inputs, config),
        # A cached task result never stands in for an output that is gone: such a task runs again.
        mine=lambda model, inputs, r: tasks.mine.with_options(refresh_cache=not mined_round_intact(run, r))(
            model, inputs, config, run.root, r),
        schedule=lambda r: tasks.schedule(config, run.root, r),
        train=lambda model, plan, r: tasks.train.with_options(refresh_cache=not run.model_complete(r))(
            model, plan, config, run.root, r),
        finish=lambda r, mined, trained, evaluated: tasks.finish(config, run.root, r, mined, trained, evaluated),
        report=lambda: tasks.report(run.root),
        on_round=on_round,
        on_start=continuing.on_start(hooks.get("on_start")),
        on_end=hooks.get("on_end"),
        check=lambda: check_run(config, announce=True),
    )
    summary = continuing.finish(run_rounds(config, run, how))  # registers the model through the gate
    create_markdown_artifact(run.report_path.read_text(encoding="utf-8"), key=_artifact_key(run, "report"),
                             description=f"Run report of {run.root}")
    get_run_logger().info("report: %s", summary["report"])
    return summary


@flow(name="simcse-mine", log_prints=True, validate_parameters=False)
def mine_flow(config: ConfigArg, round_: int = 0, model: str | None = None) -> dict[str, Any]:
    """Mine every configured band of the corpus once (a domain team's triplets), without training."""
    config = _as_config(config)
    run = RunDir(Path(config.output_dir))
    with run_logging():
        check_run(config, announce=True)  # before the folder is touched
    run.claim(config)
    tasks = bind_tasks(run)
    inputs = tasks.prepare(config, run.root)
    model_path = model or base_model_path(config)
    mined = tasks.mine.with_options(refresh_cache=not mined_round_intact(run, round_))(
        model_path, inputs, config, run.root, round_)
    get_run_logger().info("mined round %d into %s: %s", round_, run.triplets,
                          {b: s.get("rows") for b, s in mined.bands.items()})
    return mined.model_dump(mode="json")


@flow(name="simcse-train", log_prints=True, validate_parameters=False)
def train_flow(config: ConfigArg, round_: int = 0, model: str | None = None) -> dict[str, Any]:
    """Train one curriculum round on an already mined round (see `mine_flow`), then evaluate it."""
    config = _as_config(config)
    run = RunDir(Path(config.output_dir))
    with run_logging():
        check_run(config, announce=True)  # before the folder is touched
        run.claim(config)
        ensure_state(run, config)
    tasks = bind_tasks(run)
    inputs = tasks.prepare(config, run.root)
    if not is_complete(run.triplets, round_):
        raise InputError(f"round {round_} has not been mined; run the mine flow first", path=run.triplets)
    model_path = model or (base_model_path(config) if round_ == 0 else str(run.model_dir(round_ - 1)))
    mined = read_mined(run, round_)
    plan = tasks.schedule(config, run.root, round_)
    trained = tasks.train.with_options(refresh_cache=not run.model_complete(round_))(
        model_path, plan, config, run.root, round_)
    evaluated = tasks.evaluate(str(run.model_dir(round_)), inputs, config)
    metrics = tasks.finish(config, run.root, round_, mined, trained, evaluated)
    tasks.report(run.root)
    return metrics


@flow(name="simcse-evaluate", log_prints=True, validate_parameters=False)
def evaluate_flow(config: ConfigArg, model: str | None = None) -> dict[str, Any]:
    """Evaluate a model (default: the config's base model) on the config's evaluation files."""
    config = _as_config(config)
    run = RunDir(Path(config.output_dir))
    tasks = bind_tasks(run)
    inputs = tasks.prepare(config, run.root)
    result = tasks.evaluate(model or base_model_path(config), inputs, config).model_dump(mode="json")
    get_run_logger().info("%s", describe_evaluation(Evaluation.model_validate(result)))
    create_table_artifact(_metrics_table([{"round": model or "base", **result}]),
                          key=_artifact_key(run, "evaluation"), description="Evaluation")
    return result


@flow(name="simcse-curriculum-scheduled", log_prints=True, flow_run_name=scheduled_run_name)
def scheduled_flow(config: str, force: bool = False) -> dict[str, Any]:
    """What `serve` and `deploy` run: one curriculum run per scheduled time, in `<output_dir>/<start time>/`,
    or the latest such folder when its run did not finish (`flows.orchestration.scheduled_runs`). `force`: a registry
    run
    goes ahead even when nothing is new (`prefect deployment run NAME -p force=true`).

    The curriculum runs inside this flow run (its function, not a subflow): the flow run a deployment starts
    carries the night's name and tags, and it holds the night's task runs and artifacts. (As a subflow, the
    named and tagged run showed 0 task runs, and the run holding them had a random name and no tags.)"""
    from prefect.runtime import flow_run  # Prefect: only where a flow runs

    with run_logging():
        return run_scheduled(config, flow_run.scheduled_start_time, curriculum_flow.fn, force)
