"""The scheduling step of a round: open it in the curriculum (competence, band mixture and alpha from the
bands' measured difficulties), once; a round already open or closed reports the plan it started with.

Plain functions (no Prefect), wrapped by the flow's `schedule` task. The training step draws the round's
batches from the start state returned here (flows.rounds.train_step.round_batches), and the closing step closes the
round (flows.rounds.records.finish_round).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from curriculum import CurriculumScheduler
from dataio.triplets import read_manifest
from flows.run.config import RunConfig
from flows.run.fingerprint import file_fingerprint
from flows.run.rundir import RunDir
from flows.run.step_records import PlanSpec, RoundPlan

_log = logging.getLogger("flows")


def curriculum_scheduler(config: RunConfig, run: RunDir, state: Any = None, persist: bool = True) -> Any:
    """The run's curriculum scheduler: resumed from state.json, or on `state` (writing state.json only when
    `persist`)."""
    if state is not None:
        return CurriculumScheduler(config.curriculum, state, state_path=run.state_path if persist else None)
    return CurriculumScheduler.resume(config.curriculum, run.state_path)


def schedule_round(config: RunConfig, run: RunDir, round_: int) -> RoundPlan:
    """Open round `round_` (idempotent for a round already open) and return its plan and start state."""
    manifest = read_manifest(run.triplets, round_)
    scheduler = curriculum_scheduler(config, run)
    if scheduler.state.round is None and not scheduler.state.round_open:
        scheduler.set_baseline(base_dev_metric(run))  # adaptive mode compares round 0 with the starting model
    state = scheduler.state
    if state.round is not None and state.round >= round_ and not state.round_open:
        # Closed already (a kill after state.json but before metrics.json): report the round's start.
        start, _ = round_entries(state, round_)
        if start is None:
            raise RuntimeError(f"{run.state_path}: round {round_} closed without a start entry")
        return RoundPlan(plan=started_plan(start, round_), state=None,
                         manifest_sha256=file_fingerprint(run.manifest_path(round_)), closed=True)
    plan = scheduler.start_round(round_, manifest.difficulties(config.curriculum.difficulty))
    _log.info("round %d plan: competence %.3f, mixture %s, alpha %s", round_, plan.competence,
             {b: round(p, 3) for b, p in plan.mixture.items()}, {b: round(a, 3) for b, a in plan.alpha.items()})
    return RoundPlan(plan=PlanSpec(round=round_, stage=plan.stage, competence=plan.competence,
                                   mixture=dict(plan.mixture), alpha=dict(plan.alpha)),
                     state=json.loads(scheduler.state.to_json()),
                     manifest_sha256=file_fingerprint(run.manifest_path(round_)), closed=False)


def round_entries(state: Any, r: int) -> tuple[Any, Any]:
    """Round r's start and close in the state's history (the last of each; None when missing)."""
    start = next((e for e in reversed(state.history) if e.event == "start_round" and e.round == r), None)
    end = next((e for e in reversed(state.history) if e.round == r and e.event in ("advance", "hold", "end_round")),
               None)
    return start, end


def started_plan(start: Any, round_: int) -> PlanSpec:
    """The plan a round opened with, from its `start_round` entry in the scheduler's history."""
    return PlanSpec(round=round_, stage=start.stage, competence=start.competence, mixture=dict(start.mixture),
                    alpha=dict(start.alpha))


def base_dev_metric(run: RunDir) -> float | None:
    """The starting model's dev metric (base_metrics.json), if it was evaluated on a dev set."""
    base = run.read_base_metrics() or {}
    value = (base.get("dev_metric") or {}).get("value")
    return float(value) if value is not None else None
