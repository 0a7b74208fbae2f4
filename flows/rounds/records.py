"""A run's records: the starting model's scores, closing a round (the curriculum's decision, then
`rounds/<r>/metrics.json`, which marks the round complete), the model to use (`selection.json`), the run's
summary and timings, and the clean-up of a killed write.

Plain functions (no Prefect): the flow's `finish-round` task wraps `finish_round`; the round loop
(flows.rounds.loop) calls the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from curriculum import CurriculumState
from flows.rounds.model_cards import write_round_card
from flows.rounds.schedule_step import curriculum_scheduler, round_entries, started_plan
from flows.rounds.train_step import round_batches
from flows.run.config import RunConfig
from flows.run.rundir import RunDir, jsonable, recorded_model, remove_stale_temporaries, seal, write_json
from flows.run.step_records import Evaluation, MinedRound, TrainedRound

_log = logging.getLogger("flows")


def write_base_metrics(run: RunDir, evaluated: Evaluation) -> None:
    """`base_metrics.json`: the starting model's evaluation, the baseline every round is compared with."""
    write_json(run.base_metrics_path, {"round": "base", **evaluated.as_file()})


def finish_round(config: RunConfig, run: RunDir, round_: int, mined: MinedRound, trained: TrainedRound,
                 evaluated: Evaluation) -> dict[str, Any]:
    """Close the round in the curriculum (once), then write `rounds/<r>/metrics.json` (marks it done)."""
    state = CurriculumState.load(run.state_path)
    dev = evaluated.dev_metric or {}
    start, end = round_entries(state, round_)
    plan = started_plan(start, round_).model_dump(exclude={"round"})
    if state.round == round_ and state.round_open:
        recorded = trained.scheduler_after  # train results of older versions lack it: draw them again
        after = CurriculumState.model_validate(recorded) if recorded is not None else \
            round_batches(config, run, round_, json.loads(state.to_json()))[1]
        scheduler = curriculum_scheduler(config, run, state=after, persist=False)
        decision = scheduler.end_round(dev.get("value"), trained.mean_train_accuracy)
        scheduler.save(run.state_path)  # one atomic write closes the round
        verdict = {"advanced": decision.advanced, "reason": decision.reason, "stage_after": decision.stage,
                   "competence_after": decision.competence}
    else:
        verdict = {"advanced": end.event == "advance", "reason": end.reason, "stage_after": end.stage,
                   "competence_after": end.competence}
    metrics = seal(jsonable({  # sealed: an edit of the record is found when the run resumes (flows.rounds.recovery)
        "round": round_, "model": recorded_model(round_), "model_sha256": run.model_sha256(round_),
        "evaluation": evaluated.evaluation, "dev_metric": evaluated.dev_metric, "eval_keys": evaluated.eval_keys,
        "train": {"steps": trained.steps, "mean_train_accuracy": trained.mean_train_accuracy,
                  "seconds": trained.seconds},
        "mining": {"bands": mined.bands, "rows": mined.rows, "seconds": mined.seconds,
                   "manifest_sha256": mined.manifest_sha256},
        "curriculum": {**plan, "decision": verdict["reason"], **verdict},
        "seconds": {"mine": mined.seconds, "train": trained.seconds, "evaluate": evaluated.seconds},
    }))

    write_round_card(config, run, round_, metrics)  # before metrics.json, which marks the round complete
    write_json(run.metrics_path(round_), metrics)
    _log.info("round %d closed: %s", round_, verdict["reason"])
    return metrics


def clean_partial_writes(run: RunDir) -> None:
    """Drop leftovers of a killed write in the folders this package writes (rounds/, plots/)."""
    removed = remove_stale_temporaries(run.root / "rounds") + remove_stale_temporaries(run.plots)
    if removed:
        _log.info("removed %d temporary files left by an interrupted run", removed)


def select_model(run: RunDir, config: RunConfig) -> dict[str, Any] | None:
    """The run's result: its best model by the dev metric, the starting model included; `selection.json`.

    A run whose rounds all scored below the model it started from says so and names the starting model:
    the team's data did not improve it, and the model to keep is the one they had. A round's model is named
    relative to the run folder (`rounds/<r>/model`, whatever path an older record gives), so the selection of a
    folder moved elsewhere names its own files; `model_path` resolves it."""
    base = run.read_base_metrics()
    if not base or not base.get("dev_metric"):
        return None
    name = base["dev_metric"]["name"]
    candidates = [{"round": "base", "model": base.get("model"), "dev": base["dev_metric"]["value"]}]
    for r in run.completed_rounds():
        metrics = run.read_metrics(r)
        value = (metrics.get("dev_metric") or {}).get("value")
        if value is not None:
            candidates.append({"round": r, "model": recorded_model(r), "dev": value})
    margin = config.eval.min_improvement
    best_round = max(candidates[1:], key=lambda c: (c["dev"], c["round"]), default=None)
    improved = best_round is not None and best_round["dev"] > candidates[0]["dev"] + margin
    best = best_round if improved else candidates[0]
    by = f" by more than {margin:g} (eval.min_improvement)" if margin else ""
    if improved:
        note = (f"round {best['round']} has the best {name} ({best['dev']:.2f}, starting model "
                f"{candidates[0]['dev']:.2f}): use {best['model']}")
    else:
        best_dev = best_round["dev"] if best_round else float("nan")
        note = (f"no round beat the starting model on {name}{by} (best round {best_dev:.2f}, starting model "
                f"{candidates[0]['dev']:.2f}): this data did not improve it; keep the starting model {best['model']}")
    selection = {"dev_metric": name, "selected_round": best["round"], "model_to_use": best["model"],
                 "dev": best["dev"], "improved": improved, "min_improvement": margin, "note": note,
                 "candidates": candidates}
    write_json(run.root / "selection.json", jsonable(selection))
    return selection


def model_path(run: RunDir, selection: dict[str, Any] | None) -> str | None:
    """The model a selection names, as a path to load: a round's model in the run folder where it is now, or the
    starting model as the run recorded it (a folder or a model name)."""
    if not selection:
        return None
    if selection.get("selected_round") == "base":
        return selection.get("model_to_use")
    return str(run.root / str(selection["model_to_use"]))


def summarize(run: RunDir, config: RunConfig) -> dict[str, Any]:
    """The run's summary: rounds completed, the base and last round's metrics, and the model to use (a path)."""
    done = run.completed_rounds()
    selection = select_model(run, config)
    return {"run_dir": str(run.root), "rounds_completed": done, "rounds": config.rounds,
            "base": run.read_base_metrics(), "last": run.read_metrics(done[-1]) if done else None,
            "model_to_use": model_path(run, selection), "selection": selection}


def write_timings(run: RunDir, timings: list[dict[str, Any]]) -> None:
    """Per-round wall time vs time in task bodies (Prefect's overhead), merged over resumed invocations."""
    if not timings:
        return
    path = run.root / "timings.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    by_round = {t["round"]: t for t in previous}
    by_round.update({t["round"]: t for t in timings})
    write_json(path, [by_round[r] for r in sorted(by_round)])
