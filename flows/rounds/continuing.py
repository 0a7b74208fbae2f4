"""Runs that continue each other: a run whose config names a registry (`registry:`) builds on the registry's
current model instead of starting again from the base model, and hands its own model back through the
promotion gate. What a scheduled run does, night after night, over a corpus that grows:

    check (read-only, seconds)   the registry's current version, what its line has seen (flows.run.new_data),
                                 the run's input files
        nothing new: every input file was seen, or the new and changed files hold no unseen row; or the
        current version already made a run from these inputs and settings that was not promoted
            -> a recorded no-op: <run>/noop.json and a short report.md, an MLflow run tagged simcse.noop
               when tracking is on; nothing is evaluated, mined or trained. `registry.force: true`
               (`run --force`, a scheduled run's `force=true` parameter: `forced`) runs anyway.
    start                        from the current version (flows.registry.warm_start; recorded as the parent), evaluated
                                 as the baseline; <run>/data_seen.json says how many rows were new
    rounds                       flows.rounds.loop: each round mines the whole corpus with the round's model
    end                          the run's model registered as a new version through the gate
                                 (flows.registry.registration.register_run; margin: registry.gate.min_gain, by default
                                 eval.min_improvement); <run>/registered.json

`prepare` is read-only; a new registry is created (from `model.name_or_path`, its version 1) when the run
starts, after its inputs were checked. A run that has started before (a resume) is never a no-op: it continues.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataio.atomic import atomic_write_text
from dataio.folder_lock import lock_folder
from flows.registry.promotion import GateSettings
from flows.registry.registration import check_parent_scores, register_run
from flows.registry.tracking import tracker_for
from flows.registry.warm_start import WarmStart, record_start, resolve_start
from flows.rounds.loop import run_rounds
from flows.rounds.report import build_report
from flows.run.config import RunConfig
from flows.run.new_data import (
    Seen,
    input_files,
    inputs_key,
    read_record,
    seen_of_version,
    settings_key,
    survey,
    write_survey,
)
from flows.run.rundir import REGISTERED_FILE, START_FILE, RunDir, write_json
from flows.run.step_records import Evaluation, RunInputs

NOOP_FILE = "noop.json"
_log = logging.getLogger("flows")


def gate_settings(config: RunConfig) -> Any:
    """The promotion gate of a registry run: `registry.gate`, its margin by default `eval.min_improvement`."""
    assert config.registry is not None
    g = config.registry.gate
    return GateSettings(metric=g.metric, min_gain=g.min_gain if g.min_gain is not None else config.eval.min_improvement,
                        guard=g.guard, guard_tolerance=g.guard_tolerance, parent_tolerance=g.parent_tolerance)


def has_started(run: RunDir) -> bool:
    """The folder holds a run that started (and is resumed, never a no-op)."""
    return any((run.root / name).exists() for name in (START_FILE, "base_metrics.json", "rounds", "triplets"))


@dataclass
class NothingNew:
    """The read-only check before a registry run: `reason` is set when the run is a no-op."""

    reason: str | None
    start: WarmStart
    survey: Any = None  # flows.run.new_data.Survey, when the check read the new and changed files
    files: list[Any] = dataclasses.field(default_factory=list)  # flows.run.new_data.InputFile


def _tried(registry: Any, parent: int, inputs: str, settings: str) -> Any:
    """A version made from `parent` with the same inputs and settings that was not promoted: running again would
    repeat it (the same seed gives the same model)."""
    return next((v for v in reversed(registry.versions())
                 if v.parent == parent and v.promoted == "false" and v.tags.get("simcse.inputs_key") == inputs
                 and v.tags.get("simcse.settings_key") == settings), None)


def check_nothing_new(config: RunConfig) -> NothingNew:
    """Whether a registry run has nothing to do. Read-only: hashes the input files, reads the files that are
    new or changed since the current version's line saw them, and asks the registry."""
    start = resolve_start(config, for_run=False)
    run = RunDir(Path(config.output_dir))
    if config.registry is None or config.registry.force:
        return NothingNew(None, start)
    if (run.root / NOOP_FILE).is_file():  # recorded already: the same answer
        return NothingNew(json.loads((run.root / NOOP_FILE).read_text(encoding="utf-8"))["reason"], start)
    if has_started(run) or start.parent is None:
        return NothingNew(None, start)
    registry = start.registry
    current = registry.version(start.parent)
    seen = seen_of_version(registry, current)
    files = input_files(config, run)
    label = f"version {current.version} of {registry.name!r} (current)"
    if seen.files and all(f.key in seen.files for f in files):
        rows = sum(int(seen.files[f.key].get("rows") or 0) for f in files)
        return NothingNew(f"nothing new: {label} has seen every input file ({len(files)} files, {rows} rows)",
                          start, files=files)
    tried = _tried(registry, current.version, inputs_key(files), settings_key(config))
    if tried is not None:
        return NothingNew(f"nothing new since version {tried.version} was made from {label} with these inputs and "
                          f"settings and not promoted ({tried.reason})", start, files=files)
    result = survey(files, seen) if seen.files else None
    if result is not None and result.new_rows == 0:
        changed = len(result.names("new")) + len(result.names("changed"))
        return NothingNew(f"nothing new: the {changed} new or changed input files hold no row {label} has not seen "
                          f"({result.rows} rows in {len(files)} files)", start, result, files)
    return NothingNew(None, start, result, files)


def record_noop(config: RunConfig, check: NothingNew, started: float,
                context_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the no-op into the run folder (config.yaml, noop.json, report.md) and, when tracking is on, as an
    MLflow run tagged `simcse.noop` (and `context_tags`); returns the run's summary."""
    run = RunDir(Path(config.output_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    registry = check.start.registry
    with lock_folder(run.root):
        if (run.root / NOOP_FILE).is_file():
            record = json.loads((run.root / NOOP_FILE).read_text(encoding="utf-8"))
        else:
            run.claim(check.start.config)
            files = check.survey.files if check.survey is not None else [f.describe() for f in check.files]
            record = {"noop": True, "reason": check.reason, "registry": str(registry.store), "name": registry.name,
                      "current_version": check.start.parent, "model": check.start.model,
                      "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "seconds": round(time.perf_counter() - started, 3), "new_rows": 0, "inputs": files}
            write_json(run.root / NOOP_FILE, record)
            _write_noop_report(run, record)
            if config.tracking.enabled:
                _track_noop(config, run, record, context_tags)
    _log.info("no-op: %s; the model to use stays version %s (%s)", record["reason"], record["current_version"],
             record["model"])
    return {"run_dir": str(run.root), "noop": True, "reason": record["reason"], "report": str(run.report_path),
            "rounds": config.rounds, "rounds_completed": [], "current_version": record["current_version"],
            "model_to_use": record["model"], "flow_seconds": time.perf_counter() - started}


def _write_noop_report(run: RunDir, record: dict[str, Any]) -> None:
    lines = ["# Curriculum run report: nothing to do", "", f"Run folder: `{run.root}`  ",
             f"Checked: {record['checked_at']} in {record['seconds']:.1f} s", "",
             f"**{record['reason']}.** Nothing was evaluated, mined or trained.", "",
             f"The model to use stays version {record['current_version']} of `{record['name']}` "
             f"(registry `{record['registry']}`): `{record['model']}`.", "",
             "To run anyway: `registry.force: true` in the config, or `simcse-curriculum run CONFIG --force`.", "",
             "## Inputs", "", "| file | kind | status |", "|---|---|---|"]
    lines += [f"| `{f.get('path')}` | {f.get('kind')} | {f.get('status', 'seen')} |" for f in record["inputs"]]
    atomic_write_text(run.report_path, "\n".join(lines) + "\n")


def _track_noop(config: RunConfig, run: RunDir, record: dict[str, Any], context_tags: dict[str, str] | None) -> None:
    tracker = tracker_for(config, run, context_tags)
    tracker.start(config, {"simcse.noop": "true", "simcse.noop_reason": record["reason"][:5000],
                           "simcse.parent_version": str(record["current_version"])})
    tracker.log(metrics={"data/new_rows": 0.0})
    tracker.client.log_artifact(tracker.run_id, str(run.root / NOOP_FILE))
    tracker.log_files()
    tracker.finish()


@dataclass
class Continuing:
    """A registry run between its check and its end; `noop` holds the summary when there was nothing to do."""

    config: RunConfig
    run: RunDir
    start: WarmStart | None = None
    check: NothingNew | None = None
    noop: dict[str, Any] | None = None

    @classmethod
    def prepare(cls, config: RunConfig, context_tags: dict[str, str] | None = None) -> Continuing:
        """Check for a no-op (and record it, tagged `context_tags` when tracked); otherwise resolve the warm start,
        creating a new registry."""
        started = time.perf_counter()
        run = RunDir(Path(config.output_dir))
        if config.registry is None:
            return cls(config, run)
        check = check_nothing_new(config)
        if check.reason is not None:
            return cls(config, run, check.start, check, noop=record_noop(config, check, started, context_tags))
        start = resolve_start(config, for_run=True)
        if start.parent is None and not start.resumed:
            _log.info("warm start: registry %s is new; it starts from %s (version 1)", start.registry.store,
                     start.model)
        else:
            _log.info("warm start: version %s of %r (%s)%s", start.parent, start.registry.name, start.model,
                     ", as recorded when this run started" if start.resumed else "")
        return cls(start.config, run, start, check)

    def on_start(self, inner: Any = None) -> Any:
        """A `RoundSteps.on_start` hook (after the starting model's evaluation, inside the folder's lock): record
        the start and what the inputs hold that the parent had not seen, then call `inner`."""
        if self.start is None:
            return inner

        def hook(inputs: RunInputs, base: Evaluation) -> None:
            parent = self._record_inputs()
            self._check_parent_scores(parent, base.as_file())  # before round 0 trains from it
            if inner is not None:
                inner(inputs, base)
            if self.config.tracking.enabled:
                self._track_start()

        return hook

    def _check_parent_scores(self, parent: int | None, base: dict[str, Any]) -> None:
        """The run's evaluation of the version it started from repeats the scores recorded with that version
        (flows.registry.registration.check_parent_scores); a version whose files or evaluation changed stops the run
        here."""
        if parent is None or self.start is None:
            return
        registry = self.start.registry
        check_parent_scores(registry, registry.version(parent), base, gate_settings(self.config).parent_tolerance,
                            self.run.base_metrics_path)

    def _record_inputs(self) -> int | None:
        """Record the start and what the inputs hold that the parent has not seen; returns the parent version."""
        assert self.start is not None
        start = record_start(self.run, self.start)
        (self.run.root / NOOP_FILE).unlink(missing_ok=True)  # a forced run in a folder that recorded a no-op
        parent = start.get("parent_version")
        files = input_files(self.config, self.run)
        previous = read_record(self.run)
        if previous is not None and previous.get("inputs_key") == _inputs_key(files):
            record = previous  # a resumed run whose inputs did not change
        else:
            registry = self.start.registry
            seen = seen_of_version(registry, registry.version(parent)) if parent is not None else Seen()
            checked = self.check.survey if self.check is not None else None
            result = checked if checked is not None and checked.keys == [f.key for f in files] else survey(files, seen)
            record = write_survey(self.run, result, seen, parent, self.config)
        new = ", ".join(Path(p).name for p in record["new_files"][:5])
        _log.info("data: %d input files, %d rows, %d new to version %s%s", len(record["files"]), record["rows"],
                      record["new_rows"], parent, f" (new files: {new})" if new else "")
        return parent

    def _track_start(self) -> None:
        record = read_record(self.run) or {}
        tracker = tracker_for(self.config, self.run)
        tracker.log(metrics={"data/new_rows": record.get("new_rows"), "data/rows": record.get("rows")},
                    tags={"simcse.parent_version": str(record.get("parent_version")),
                          "simcse.registry": str(self.start.registry.store if self.start else "")})

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Register the run's model through the gate (`registry.register_version`); the summary gains `registry`."""
        if self.start is None or self.config.registry is None:
            return summary

        data = read_record(self.run) or {}
        out: dict[str, Any] = {"parent_version": data.get("parent_version", self.start.parent),
                               "rows": data.get("rows"), "new_rows": data.get("new_rows"),
                               "new_files": data.get("new_files")}
        if self.config.registry.register_version:
            out["registered"] = self._register()
        summary["registry"] = out
        self.run.drop_spent_optimizer(self.config.rounds)  # one folder, one night: it is finished

        summary["report"] = str(build_report(self.run.root))  # with the registration
        if self.config.tracking.enabled and "registered" in out:
            tracker = tracker_for(self.config, self.run)
            tracker.log(tags={"simcse.registered_version": str(out["registered"]["version"]),
                              "simcse.promoted": str(out["registered"]["promoted"]).lower()})
            tracker.log_files()
        return summary

    def _register(self) -> dict[str, Any]:
        assert self.start is not None
        registry = self.start.registry
        version = register_run(registry, self.run.root, gate_settings(self.config))
        record = registration_record(registry, version)
        write_json(self.run.root / REGISTERED_FILE, record)
        state = "promoted: now the current model" if record["promoted"] else "not promoted"
        _log.info("registered as version %d of %r (from version %s): %s; %s", version.version, registry.name,
                      version.parent, state, version.reason)
        return record


def registration_record(registry: Any, version: Any) -> dict[str, Any]:
    """What a registry run records of its registration (`registered.json`, the summary's `registry.registered`, so
    `run --json`): plain JSON, `promoted` a boolean."""
    return {"registry": str(registry.store), "name": registry.name, "version": version.version,
            "parent": version.parent, "promoted": version.promoted == "true", "reason": version.reason,
            "current_version": registry.current_number(), "gate": version.gate,
            "model": str(registry.local_path(version)) if registry.store.is_local else version.source}


def _inputs_key(files: list[Any]) -> str:
    return inputs_key(files)


def run_continuing(config: RunConfig, build_steps: Any) -> dict[str, Any]:
    """A whole registry run (or a plain run, without `registry`): `build_steps(config)` gives the `RoundSteps`
    (flows.rounds.loop) for the resolved config. The Prefect flow does the same with its tasks."""
    cont = Continuing.prepare(config)
    if cont.noop is not None:
        return cont.noop
    how = build_steps(cont.config)
    how = dataclasses.replace(how, on_start=cont.on_start(how.on_start))
    return cont.finish(run_rounds(cont.config, cont.run, how))
