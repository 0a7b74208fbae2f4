"""Registering a finished run as a version of the model registry: its best round, its scores and what it read,
the promotion gate's decision, and the parent's recorded scores checked against the run's evaluation of it (a
continuing run asks the same check before it trains: `check_parent_scores`). One register per run at a time.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import yaml

from dataio.errors import InputError
from dataio.folder_lock import lock_folder
from flows.registry.model_registry import ModelRegistry
from flows.registry.promotion import GateSettings, best_round, decide, parent_drift
from flows.registry.tracking import TRACKING_FILE
from flows.registry.versions import EVAL_KEYS, MODEL_SHA256, TAG, Version, local_folder
from flows.run.new_data import attach_to_run
from flows.run.record_check import check_records
from flows.run.rundir import START_FILE, RunDir
from simcse.evaluation import flat_metrics


def register_run(registry: ModelRegistry, run_dir: Path, gate: GateSettings) -> Version:
    """`_register_run`, holding the run folder's lock (`dataio.folder_lock`): two registers of one run at once
    both found no version for it and both made one. A second register of the run, or one of a run still being
    written (a `run` holds the folder), is refused naming the holder; the run's own registration, inside its
    `run`, holds the lock already. A run folder this user cannot write (an archived, read-only run) holds no lock
    file and is registered without one."""
    if not Path(run_dir).is_dir():
        return _register_run(registry, run_dir, gate)  # which says it is not a run folder
    lock = lock_folder(run_dir, f"simcse-curriculum models register {registry.store} {run_dir}")
    try:
        lock.__enter__()
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        return _register_run(registry, run_dir, gate)
    try:
        return _register_run(registry, run_dir, gate)
    finally:
        lock.__exit__(None, None, None)


def _register_run(registry: ModelRegistry, run_dir: Path, gate: GateSettings) -> Version:
    """Register a finished run's candidate (its best round by the gate's metric) as a new version whose parent
    is the version the run started from; it becomes current only if the gate passes against that version,
    as the run itself evaluated it (its base metrics). Registering the same run again returns its version.

    The run must have started from a registered version's folder (`models path REGISTRY`): otherwise its
    baseline is not a version's score and the comparison would mean nothing. The baseline must also be the
    version's: the files the run started from are the version's (the sha256 its warm_start.json recorded, else
    the version's files as they are now), and the run's evaluation of them repeats the scores recorded with the
    version (`check_parent_scores`); otherwise nothing is registered."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        raise InputError("not a run folder (no config.yaml); give the output_dir of a run", path=run_dir)
    config = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    started = Path(str((config.get("model") or {}).get("name_or_path", ""))).expanduser()
    record = _recorded_start(registry, run)
    parent = registry.version(int(record["parent_version"])) if record is not None else next(
        (v for v in registry.versions() if (local := local_folder(v.source)) is not None and started.is_dir()
         and local.resolve() == started.resolve()), None)
    if parent is None:
        raise InputError(f"the run started from {started}, which is no version of {registry.name!r}; start runs "
                         f"from `simcse-curriculum models path {registry.store}` (model.name_or_path)",
                         path=run.config_path)
    check_records(run, run.completed_rounds())  # the gate reads the records: each must be what its round wrote
    base = run.read_base_metrics() or {}
    rounds = {r: run.read_metrics(r).get("evaluation") or {} for r in run.completed_rounds()}
    if not rounds or not base:
        raise InputError("the run has no completed round (or no base evaluation); finish it first", path=run_dir)
    dev = (base.get("dev_metric") or {}).get("name")
    metric = gate.metric or dev
    chosen = best_round(rounds, metric) if metric else None
    if chosen is None:
        chosen = max(rounds)  # nothing scored (diverged): the last round, which the gate refuses
    decision = decide(rounds[chosen], base.get("evaluation"), gate, dev, parent_label=f"version {parent.version}")
    run_key = str(run.root.resolve())
    existing = registry.find("run_key", run_key)
    if existing is not None and not existing.pending:
        return existing
    _check_start(registry, parent, record, run)  # the baseline was measured on the version's files ...
    check_parent_scores(registry, parent, base, gate.parent_tolerance, run.base_metrics_path)  # ... and repeats it
    run.check_model(chosen)  # the files registered are the ones the round wrote and evaluated (sha256)
    run_tags = {TAG + "run_dir": str(run.root.resolve()), TAG + "candidate_round": str(chosen)}
    run_id = existing.run_id if existing is not None else \
        _training_run(registry, run, run_tags) or registry.new_run(run.root.name, run_tags)

    seen_tags = attach_to_run(registry.client, run_id, run) if existing is None else {}  # what the run saw
    keys = run.read_metrics(chosen).get("eval_keys") or base.get("eval_keys")
    version = registry.register(run_id=run_id, model_dir=run.model_dir(chosen), parent=parent,
                                passed=decision.passed, reason=decision.reason, gate=decision.as_dict(),
                                metrics=flat_metrics(rounds[chosen]), run_key=run_key, run_dir=str(run.root.resolve()),
                                extra_tags={"candidate_round": str(chosen), **seen_tags,
                                            **({"eval_keys": json.dumps(keys, sort_keys=True)} if keys else {})})
    registry.client.set_terminated(run_id)
    return version


def _training_run(registry: ModelRegistry, run: Any, tags: dict[str, str]) -> str | None:
    """The MLflow run the run folder was tracked in (`tracking.json`, flows.registry.tracking), when it is in the
    registry's
    store: the version is registered from it, so MLflow links the version to the run's metrics, report and plots.
    None when the run was not tracked, or tracked elsewhere (then the version gets a run of its own)."""
    from mlflow.exceptions import MlflowException  # MLflow: only when a store is used (the optional `tracking` extra)

    path = run.root / TRACKING_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return None
    run_id = state.get("run_id") if isinstance(state, dict) else None
    if not run_id or state.get("store") != registry.store.location:
        return None
    try:
        registry.client.get_run(run_id)
    except MlflowException:  # not in this store any more (a store moved aside): the version gets its own run
        return None
    for key, value in tags.items():
        registry.client.set_tag(run_id, key, value)
    return run_id


def _recorded_start(registry: ModelRegistry, run: Any) -> dict[str, Any] | None:
    """The start a warm-started run recorded (flows.registry.warm_start: its parent version and the sha256 of the
    files it
    started from), when its parent is a version of this registry."""
    path = run.root / START_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("parent_version") is None or record.get("name") not in (None, registry.name) \
            or record.get("registry") not in (None, str(registry.store)):
        return None
    return record


def _check_start(registry: ModelRegistry, parent: Version, record: dict[str, Any] | None, run: Any) -> None:
    """The run's baseline was measured on the files registered as `parent`: the sha256 its warm start recorded is
    the version's; without that record (a run started from `models path`), the version's files as they are now."""
    started, registered = (record or {}).get("model_sha256"), parent.tags.get(MODEL_SHA256)
    if started and registered:
        if started != registered:
            raise InputError(f"the run started from files that are not version {parent.version} of {registry.name!r} "
                             f"(their sha256 in {START_FILE} differs from the one recorded with the version), so its "
                             "baseline is not the version's score; nothing was registered: start a new run from the "
                             "version", path=run.root / START_FILE)
    elif registry.store.is_local:
        registry.verify(parent)


def check_parent_scores(registry: ModelRegistry, parent: Version, base: dict[str, Any], tolerance: float,
                        where: Path) -> None:
    """The run's evaluation of the version it started from (`base`, its base_metrics.json) repeats the scores
    recorded with that version, within `tolerance` points, on every metric measured on the same file with the same
    settings (flows.registry.promotion.parent_drift); else one InputError. A version recorded without its evaluation's
    keys (registered before they were recorded, or version 1) is not compared."""
    keys = json.loads(parent.tags.get(EVAL_KEYS) or "{}")
    drift = parent_drift(base.get("evaluation"), base.get("eval_keys"), parent.metrics, keys, tolerance)
    if drift is None:
        return
    raise InputError(f"{drift.describe(f'version {parent.version} of {registry.name!r}')}: the version's files or the "
                     "evaluation changed since it was registered; restore the version's files (or make another "
                     f"version current: `simcse-curriculum models rollback {registry.store} VERSION`) and start a new "
                     "run, or, where a library, device or precision change moved the scores, raise "
                     "registry.gate.parent_tolerance (`models register --parent-tolerance`)", path=where)
