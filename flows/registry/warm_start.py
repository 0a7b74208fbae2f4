"""Warm start: a run whose config names a registry (`registry.path`) starts from the registry's current version,
not from `model.name_or_path`, and records that version as its parent.

`model.name_or_path` then names only the model a *new* registry starts from (its version 1, `models init`). The
folder the run starts from goes into the run's saved config (`<run>/config.yaml`, `model.name_or_path`, which
`models register` reads) and into `<run>/warm_start.json` with the parent version and its files' sha256. So:

- the starting model is evaluated as the run's baseline (`base_metrics.json`), which the promotion gate
  compares the run's model with;
- a resumed run starts from the same version even when the registry's current model has moved on meanwhile;
- a version whose files changed after a run started from them stops the resumed run (one line), instead of
  training on from other weights than the baseline was measured on;
- a new run checks the version's files against the sha256 recorded with it in the registry before it loads them
  (`ModelRegistry.verified_path`), and, once it has evaluated them, its scores against the ones recorded with the
  version (`flows.registry.registration.check_parent_scores`, from `flows.rounds.continuing`): a changed version
  stops the run.

Resolving is read-only. A registry with no current version yet is created when the run starts (`record_start`,
after the run's inputs were checked, inside its folder's lock): version 1 is the model the run starts from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dataio.errors import InputError
from dataio.hashing import model_folder_sha256
from flows.registry.mlflow_store import MlflowStore, require_mlflow
from flows.registry.model_registry import ModelRegistry
from flows.registry.versions import local_folder
from flows.run.config import RunConfig
from flows.run.inputs import base_model_path
from flows.run.output_folder import DOWNLOADED_START
from flows.run.rundir import START_FILE, RunDir, write_json


@dataclass(frozen=True)
class WarmStart:
    """Where a registry run starts: `config` with `model.name_or_path` set to that folder."""

    config: RunConfig
    parent: int | None  # the version it starts from; None before a new registry is created
    registry: Any = None  # flows.registry.model_registry.ModelRegistry
    resumed: bool = False  # the start was read from the run folder (a run that had started before)

    @property
    def model(self) -> str:
        return self.config.model.name_or_path


def configured_registry(config: RunConfig) -> Any:
    """The registry `config.registry` names (not opened: a folder without a store yet is a new registry)."""
    assert config.registry is not None
    return ModelRegistry(MlflowStore.at(config.registry.path), config.registry.name)


def registry_started(registry: Any) -> bool:
    """Whether the registry has a current version, asked without creating a store where none is."""
    if registry.store.is_local and not (Path(registry.store.location) / "mlflow.db").is_file():
        return False
    return registry.current_number() is not None


def read_start(run: RunDir) -> dict[str, Any] | None:
    """`<run>/warm_start.json`, else the start the saved config names (a run killed before it wrote the record)."""
    path = run.root / START_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if run.config_path.is_file():
        saved = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
        model = (saved.get("model") or {}).get("name_or_path")
        if saved.get("registry") and model:
            return {"model": model, "parent_version": None}
    return None


def _with_model(config: RunConfig, model: str) -> RunConfig:
    if config.model.name_or_path == model:
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": model})})


def resolve_start(config: RunConfig, *, for_run: bool) -> WarmStart:
    """The model a registry run starts from; `config` unchanged when it names no registry.

    A run that has started before keeps its recorded start (`for_run`: its files are checked against the
    recorded sha256). Otherwise it is the registry's current version; a registry with none yet starts from
    `model.name_or_path`, registered as version 1 when the run starts (`record_start`, after its checks)."""
    if config.registry is None:
        return WarmStart(config, None)

    require_mlflow()  # one line saying how to install it, before anything asks the registry
    run = RunDir(Path(config.output_dir))
    registry = configured_registry(config)
    saved = read_start(run)
    if saved is not None:
        parent = saved.get("parent_version")
        if for_run and saved.get("model_sha256") and Path(saved["model"]).is_dir() and \
                model_folder_sha256(Path(saved["model"])) != saved["model_sha256"]:
            raise InputError(f"the model this run started from (version {parent} of {registry.name!r}) changed on "
                             f"disk since the run started (its files' sha256 differs from {START_FILE}): restore the "
                             f"version's files, or start a new run in another output_dir", path=saved["model"])
        return WarmStart(_with_model(config, saved["model"]), parent, registry, resumed=True)
    if not registry_started(registry):
        return WarmStart(config, None, registry)
    current = registry.current()
    if registry.store.is_local:  # a run checks the files it starts from; the read-only check does not read them
        local = registry.verified_path(current) if for_run else registry.local_path(current)
    elif for_run:  # a server registry: the version's files are downloaded into the run folder, and checked
        local = registry.verified_path(current, run.root / DOWNLOADED_START)
    else:  # ... when the run starts, not by a check
        return WarmStart(config, current.version, registry)
    return WarmStart(_with_model(config, str(local)), current.version, registry)


def _parent_of(start: WarmStart) -> int | None:
    """The version a start is: recorded, or the version whose files it is (a run killed before its record was
    written), or version 1 of a registry that has none yet, registered now from the run's model."""
    if start.parent is not None or start.registry is None:
        return start.parent
    registry = start.registry
    if not registry_started(registry):
        return registry.ensure_started(Path(base_model_path(start.config))).version

    model = Path(start.model).resolve()
    sha = model_folder_sha256(model) if model.is_dir() else None
    for version in registry.versions():
        folder = local_folder(version.source)
        if folder is not None and folder.is_dir() and (folder.resolve() == model or model_folder_sha256(folder) == sha):
            return version.version
    return None


def record_start(run: RunDir, start: WarmStart) -> dict[str, Any]:
    """Write `<run>/warm_start.json` once (a resumed run keeps the first record); returns the record. A new
    registry is created here, from the model the run starts from, once the run's inputs were checked."""
    path = run.root / START_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    model = Path(start.model)
    record = {"registry": str(start.registry.store) if start.registry is not None else None,
              "name": start.registry.name if start.registry is not None else None,
              "parent_version": _parent_of(start), "model": start.model,
              "model_sha256": model_folder_sha256(model) if model.is_dir() else None}
    write_json(path, record)
    return record
