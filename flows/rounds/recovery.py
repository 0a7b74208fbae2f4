"""The run's curriculum state and its rounds on disk must agree: a lost state is rebuilt, never restarted.

`state.json` is where a run continues from. Missing, empty (`{}`), truncated, or behind the rounds on disk
(an old copy put back), it used to read as a fresh curriculum: round 1 planned at stage 0 on 100 % random
negatives, and the run went on, exit code 0. Ahead of the rounds on disk (rounds deleted to train them again,
as a changed model's message advises), it made every rerun stop with a traceback ("round 0 is closed but its
model is missing"). `ensure_state` runs before any round and checks the state
against `rounds/<r>/metrics.json`, the marks of complete rounds. When they disagree it rebuilds the state by
replaying the scheduler over the complete rounds, with what each recorded: its bands' difficulties (the
manifest's statistics, copied into metrics.json), the steps trained, the dev metric and the train accuracy
it closed with (and the base model's dev metric, round 0's reference in adaptive mode). That is the same
sequence of calls the run made (`start_round`, one `after_batch` per step, `end_round`; none depends on the
batches' contents), so the replay gives the same state, history included.

It is done automatically, because it is exact and checked: every round's replayed plan (stage, competence,
mixture, alpha) and decision (advanced, reason, stage and competence after) must equal what that round
recorded, or nothing is written and the run stops with one line saying what differs and how to recover. The
damaged (or stale) file is kept beside as `state.json.damaged`. With no complete round, the replay is the fresh
state, which is what the run starts from anyway. Complete rounds with a gap (round r deleted, a later one kept)
are not replayed: the later rounds were trained from the missing one, so the run stops with one line naming
the round folder and the way out.

The records themselves are checked first, on every resume, state.json intact or not (`check_records`): an
edited metrics.json was trusted while state.json was intact, and an edited dev score made the model to use a
round that never scored it. A round's metrics.json seals itself (`record_sha256`, flows.run.rundir.seal), names
its round, gives its dev metric as its evaluation does, and records the sha256 of the manifest of the triplets
it trained on; one that does not is one line naming the file. Then state.json is held against the records
(each round's plan, decision, and the dev metric and train accuracy it closed with, which the state's history
records too): when they disagree and every record is sealed, state.json is the file that changed and is
rebuilt as a lost one is; an older, unsealed record cannot tell which file changed, and the run stops. A state
ahead of the rounds on disk (a round closed whose model, or folder, was deleted since) is rebuilt from the
rounds that are left, so the deleted round is trained again.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from curriculum import CurriculumScheduler, CurriculumState
from curriculum.errors import StateError
from flows.rounds.schedule_step import base_dev_metric, round_entries
from flows.run.config import RunConfig
from flows.run.record_check import check_records, same_value
from flows.run.rundir import RECORD_SHA256, RunDir

_log = logging.getLogger("flows")


def _state_problem(run: RunDir, done: list[int]) -> str | None:
    """Why state.json cannot be continued from with these rounds complete, or None when it can."""
    path = run.state_path
    if not path.is_file():
        return "is missing" if done else None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "is not readable JSON (truncated?)"
    if not isinstance(raw, dict) or not raw or not raw.get("config"):
        return "is empty"
    try:
        state = CurriculumState.model_validate(raw)
    except ValueError:
        return "does not hold a curriculum state"
    if done and (state.round is None or state.round < done[-1]):
        return f"is behind the rounds on disk (it ends at round {state.round}, rounds 0-{done[-1]} are complete)"
    last = done[-1] if done else -1
    if state.round is not None and state.round > last:
        # One round ahead is a round under way: open, or closed with its model trained (a kill between the close
        # and metrics.json). Anything else is a round whose model or folder was deleted since it closed (as a
        # changed model's message advises).
        under_way = state.round == last + 1 and (state.round_open or run.round_trained(state.round))
        if not under_way:
            ends = f"round {last} is the last complete round" if done else "no round is complete"
            return (f"is ahead of the rounds on disk (it records round {state.round} "
                    f"{'open' if state.round_open else 'closed'}, but {ends} and round {state.round}'s model is "
                    f"{'there' if run.model_complete(state.round) else 'missing'})")
    problem = _disagreement(state, run, done)
    if problem is not None:
        return problem
    return None


def _disagreement(state: Any, run: RunDir, done: list[int]) -> str | None:
    """Where state.json and a complete round's metrics.json tell different stories: the round's plan, its
    decision, and the dev metric and train accuracy it closed with, which the state's history records too.
    Raises StateError when the records cannot tell which file is right (see `check_records`)."""
    for r in done:
        record = run.read_metrics(r)
        cur = record.get("curriculum") or {}
        start, end = round_entries(state, r)
        if start is None or end is None:
            found = f"has no {'start' if start is None else 'close'} of round {r}, which is complete"
        else:
            pairs = [("stage", start.stage), ("competence", start.competence), ("mixture", dict(start.mixture)),
                     ("alpha", dict(start.alpha)), ("advanced", end.event == "advance"), ("reason", end.reason),
                     ("stage_after", end.stage), ("competence_after", end.competence)]
            differs = [(f"curriculum.{k}", v, cur[k]) for k, v in pairs if k in cur and cur[k] != v]
            closed_with = [("dev_metric", end.dev_metric, record.get("dev_metric"), "value"),
                           ("train.mean_train_accuracy", end.train_accuracy, record.get("train"),
                            "mean_train_accuracy")]
            differs += [(k, v, part[key]) for k, v, part, key in closed_with
                        if isinstance(part, dict) and key in part and not same_value(v, part[key])]
            if not differs:
                continue
            key, theirs, mine = differs[0]
            found = (f"disagrees with round {r}'s metrics.json ({key}: {theirs!r} in state.json, {mine!r} in "
                     f"metrics.json)")
        if all(run.read_metrics(c).get(RECORD_SHA256) for c in done):  # each record checked whole: state.json is off
            return found
        raise StateError(f"{run.state_path} {found}, and that record is older than the records' own checksum, so "
                         f"which file was edited cannot be told; restore the edited one from a backup (if "
                         f"metrics.json is right, delete state.json: it is rebuilt from the rounds)")
    return None


def _difficulties(metrics: dict[str, Any]) -> dict[str, float]:
    bands = (metrics.get("mining") or {}).get("bands") or {}
    out = {}
    for band, stats in bands.items():
        value = (stats or {}).get("mean_anchor_negative_sim")
        if (stats or {}).get("rows") and value is not None and math.isfinite(float(value)):
            out[band] = float(value)
    return out


def replay_state(run: RunDir, config: RunConfig, rounds: list[int]) -> tuple[Any, str | None]:
    """(the state after `rounds` replayed from their records, None) or (None, what differs from a record)."""
    scheduler = CurriculumScheduler(config.curriculum)
    scheduler.set_baseline(base_dev_metric(run))
    for r in rounds:
        metrics = run.read_metrics(r)
        recorded = metrics.get("curriculum") or {}
        if not recorded:
            return None, f"round {r}'s metrics.json has no curriculum record"
        plan = scheduler.start_round(r, _difficulties(metrics))
        got = {"stage": plan.stage, "competence": plan.competence, "mixture": dict(plan.mixture),
               "alpha": dict(plan.alpha)}
        for key, value in got.items():
            if recorded.get(key) != value:
                return None, f"round {r} recorded {key} {recorded.get(key)!r}, the replay gives {value!r}"
        for _ in range(config.steps_per_round):  # as finish_round replays the round's batches
            scheduler.after_batch(None)
        train_accuracy = (metrics.get("train") or {}).get("mean_train_accuracy")
        dev = (metrics.get("dev_metric") or {}).get("value")
        try:
            decision = scheduler.end_round(dev, train_accuracy)
        except ValueError as exc:
            return None, f"round {r} cannot be closed again from its record ({exc})"
        got = {"advanced": decision.advanced, "reason": decision.reason, "stage_after": decision.stage,
               "competence_after": decision.competence}
        for key, value in got.items():
            if recorded.get(key) != value:
                return None, f"round {r} recorded {key} {recorded.get(key)!r}, the replay gives {value!r}"
    return scheduler.state, None


def ensure_state(run: RunDir, config: RunConfig) -> bool:
    """Check the complete rounds' records, then state.json against them; rebuild it when it is lost, behind,
    ahead or disagrees with sealed records (see above).

    Returns True when it was rebuilt. Raises InputError for a record that is not what its round wrote, and
    StateError (one line each, exit code 2) when the rounds on disk cannot be replayed to what they recorded.
    """
    done = run.completed_rounds()
    if done != list(range(len(done))):  # a round deleted while later ones stay: the rounds no longer follow
        missing = next(r for r in range(len(done) + 1) if r not in done)
        later = [r for r in done if r > missing]
        shown = f"round {later[0]} is" if len(later) == 1 else f"rounds {later[0]}-{later[-1]} are"
        raise StateError(f"{run.round_dir(missing)} is missing or incomplete while {shown} complete, trained "
                         f"from it; restore it, or delete {run.round_dir(run.retrain_from(missing))} and every "
                         f"later round to train them again")
    check_records(run, done)  # the records are what their rounds wrote, before they are trusted or replayed
    problem = _state_problem(run, done)
    if problem is None:
        return False
    path = run.state_path
    state, mismatch = replay_state(run, config, done)
    if state is None:
        raise StateError(f"{path} {problem}, and rebuilding it from rounds 0-{done[-1]} does not give what they "
                         f"recorded ({mismatch}); restore state.json from a backup, or start a new output_dir "
                         f"(model.name_or_path: {run.model_dir(done[-1])} continues from the last model)")
    if path.exists():
        os.replace(path, path.with_name(path.name + ".damaged"))
    state.save(path)
    if done:
        _log.warning("%s %s; rebuilt from rounds 0-%d (each round's plan and decision replayed exactly; the old "
                    "file is kept as %s.damaged)", path, problem, done[-1], path.name)
    else:
        _log.warning("%s %s and no round is complete; starting the curriculum from its first stage (the old file "
                    "is kept as %s.damaged)", path, problem, path.name)
    return True
