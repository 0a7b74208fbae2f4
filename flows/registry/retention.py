"""Retention: keep the last N runs of a folder of runs (a scheduled deployment's `<output_dir>/<start time>/`)
whole, and free what older runs hold that nothing needs: `simcse-curriculum prune OUTPUT_DIR --keep N`.

In a run older than the last N that trained (no-op records hold nothing to free and do not count):

    removed   triplets/ (the mined Parquet rounds), cache/ (embeddings), start_model/ (a server registry's
              version, downloaded), rounds/<r>/optimizer/ and rounds/<r>/train/, and every rounds/<r>/model/
              except the models worth keeping: one registered as a promoted version (a registry run), or the
              run's selected model (`selection.json`: a run without a registry has no other copy of its result)
    kept      everything else: config, metrics, report, plots, selection, what the run saw, its log;
              `pruned.json` lists what was removed, with sizes and when

and in a registry inside OUTPUT_DIR that those runs name: the model files of versions that were never promoted
and came from a pruned run (the version stays listed, tagged `simcse.pruned`). Never touched: anything outside
OUTPUT_DIR (a registry elsewhere is left as it is, and said so), a registry's current, promoted or pending
versions, a run folder in use (its `dataio.folder_lock` is held: checked again, and held, while it is pruned),
and folders that are not runs. `--dry-run` lists what would go, with sizes, and writes nothing.

OUTPUT_DIR may itself hold a run made by `simcse-curriculum run` with the same config (its config.yaml, rounds/, ...
beside the scheduled runs' folders): that run is left as it is, with a note, and the runs in its subfolders are
pruned. (Refusing such a folder made every scheduled night's retention fail once one manual run had been made
there, and the `prune` command its warning suggested failed the same way.) A run folder with no runs inside is
refused: its parent is the folder of runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataio.atomic import atomic_write_json
from dataio.errors import InputError
from dataio.folder_lock import FolderInUse, _pid_alive, lock_folder, read_holder
from flows.registry.mlflow_store import MlflowStore
from flows.registry.model_registry import ModelRegistry
from flows.registry.versions import local_folder
from flows.registry.warm_start import registry_started
from flows.run.output_folder import RUN_CONFIG, is_run_config

PRUNED_FILE = "pruned.json"
# Per run: what its later readers need stays; these go (round models are decided one by one).
RUN_LEVEL = ("triplets", "cache", "start_model")
ROUND_LEVEL = ("optimizer", "train")
ACTIVITY = ("config.yaml", "state.json", "base_metrics.json", "noop.json", "selection.json")


def size_of(path: Path) -> int:
    """Bytes of a file or of every file under a folder (symbolic links counted as links, never followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return total


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


@dataclass
class Removal:
    """One path to remove, and why."""

    path: Path
    bytes: int
    why: str
    run: Path | None = None  # the run folder it belongs to
    version: tuple[Any, int] | None = None  # (registry, version number) for a registry version's files

    def as_dict(self, root: Path) -> dict[str, Any]:
        return {"path": str(self.path), "relative": str(self.path.relative_to(root)), "bytes": self.bytes,
                "why": self.why, **({"version": self.version[1]} if self.version else {})}


@dataclass
class PrunePlan:
    folder: Path
    keep: int
    kept: list[Path] = field(default_factory=list)  # the last runs, whole
    in_use: list[Path] = field(default_factory=list)
    noops: list[Path] = field(default_factory=list)
    pruned_runs: list[Path] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "keep": self.keep, "kept": [p.name for p in self.kept],
                "in_use": [p.name for p in self.in_use], "pruned_runs": [p.name for p in self.pruned_runs],
                "removals": [r.as_dict(self.folder) for r in self.removals], "bytes": self.bytes,
                "notes": self.notes}


def _in_use(run: Path) -> bool:
    """Whether a live process holds the run folder's lock (read from the lock file, nothing written)."""

    holder = read_holder(run)
    if holder is None:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # another host's process cannot be checked from here: it counts as running
    return _pid_alive(int(holder.get("pid") or 0))


def _last_activity(run: Path) -> float:
    """When the run last wrote a record (its config, state, evaluations, a round's metrics)."""
    paths = [run / name for name in ACTIVITY] + list((run / "rounds").glob("*/metrics.json"))
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=run.stat().st_mtime)


def _trained(run: Path) -> bool:
    return any((run / name).exists() for name in ("rounds", "triplets", "base_metrics.json"))


def _config(run: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _registry_of(run: Path, opened: dict[tuple[str, str], Any]) -> Any:
    """The registry the run's config names, opened once per prune (None: no registry, or none there any more)."""
    settings = _config(run).get("registry")
    if not isinstance(settings, dict) or not settings.get("path"):
        return None
    key = (str(settings["path"]), str(settings.get("name") or "simcse-encoder"))
    if key not in opened:
        try:
            registry = ModelRegistry(MlflowStore.at(key[0]), key[1])
            opened[key] = registry if registry_started(registry) else None
        except InputError:  # MLflow missing: nothing can be known to be promoted
            opened[key] = None
    return opened[key]


def _kept_rounds(run: Path, registry: Any) -> dict[int, str]:
    """Round -> why its model is kept: a promoted version's files, or the run's selected model."""
    kept: dict[int, str] = {}
    if registry is not None:
        for version in registry.versions():
            if version.run_dir and Path(version.run_dir).resolve() == run.resolve() and \
                    (version.promoted in ("true", "pending") or version.current):
                round_ = version.tags.get("simcse.candidate_round")
                if round_ is not None and round_.isdigit():
                    kept[int(round_)] = f"version {version.version} ({'current' if version.current else 'promoted'})"
    else:
        selection = run / "selection.json"
        if selection.is_file():
            chosen = json.loads(selection.read_text(encoding="utf-8")).get("selected_round")
            if isinstance(chosen, int):
                kept[chosen] = "the run's selected model (no registry holds a copy)"
    return kept


def plan_prune(folder: str | os.PathLike, keep: int) -> PrunePlan:
    """What `prune` would remove from the runs in `folder`, keeping the last `keep` runs that trained."""
    if keep < 1:
        raise InputError(f"--keep must be 1 or more (got {keep}): the last run is always kept")
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise InputError("no such folder; give the folder that holds the runs (a scheduled deployment's "
                         "output_dir)", path=root)
    runs = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and is_run_config(p / RUN_CONFIG)),
                  key=lambda p: (_last_activity(p), p.name))
    plan = PrunePlan(root, keep)
    if is_run_config(root / RUN_CONFIG):
        if not runs:
            raise InputError("this is one run's folder; give the folder that holds the runs (its parent)", path=root)
        plan.notes.append(f"{root} itself holds a run made by `simcse-curriculum run` ({RUN_CONFIG}, rounds/, ... "
                          "beside the runs' folders): left as it is; only the runs in its subfolders are pruned")
    trained = [p for p in runs if _trained(p)]
    plan.noops = [p for p in runs if not _trained(p)]
    plan.kept = trained[-keep:]
    opened: dict[tuple[str, str], Any] = {}
    for run in trained[:-keep]:
        if _in_use(run):
            plan.in_use.append(run)
            continue
        registry = _registry_of(run, opened)
        kept_rounds = _kept_rounds(run, registry)
        removals = [Removal(run / name, size_of(run / name), what, run) for name, what in
                    zip(RUN_LEVEL, ("mined triplets (Parquet rounds)", "embeddings cache",
                                    "a server registry's version, downloaded")) if (run / name).exists()]
        for round_dir in sorted((run / "rounds").glob("*"), key=lambda p: (len(p.name), p.name)):
            if not round_dir.name.isdigit():
                continue
            for name in ROUND_LEVEL:
                if (round_dir / name).exists():
                    removals.append(Removal(round_dir / name, size_of(round_dir / name), f"round {round_dir.name}'s "
                                            f"{'optimizer state' if name == 'optimizer' else 'trainer checkpoint'}",
                                            run))
            model = round_dir / "model"
            if model.exists() and int(round_dir.name) not in kept_rounds:
                removals.append(Removal(model, size_of(model), f"round {round_dir.name}'s model (not promoted)", run))
        if removals:
            plan.pruned_runs.append(run)
            plan.removals += removals
    pruned = {p.resolve() for p in trained[:-keep] if p not in plan.in_use}
    for registry in {id(r): r for r in opened.values() if r is not None}.values():
        plan.removals += _registry_removals(registry, root, pruned, plan.notes)
    return plan


def _registry_removals(registry: Any, root: Path, pruned: set[Path], notes: list[str]) -> list[Removal]:
    """The files of versions never promoted that came from pruned runs, when the registry is inside `root`."""

    store = registry.store.folder
    if store is None or not store.resolve().is_relative_to(root):
        notes.append(f"registry {registry.store} is outside {root}: its versions are left as they are")
        return []
    out = []
    for version in registry.versions():
        if version.promoted != "false" or version.current or not version.run_dir or \
                Path(version.run_dir).resolve() not in pruned or version.tags.get("simcse.pruned"):
            continue
        files = local_folder(version.source)
        if files is None or not files.is_dir() or not files.resolve().is_relative_to(store.resolve()):
            continue
        out.append(Removal(files, size_of(files), f"version {version.version}'s model files (never promoted)",
                           version=(registry, version.version)))
    return out


def _remove(path: Path, root: Path) -> None:
    """Remove a file or folder whose parent is inside `root` (a symbolic link: the link only; a folder's links
    are removed, never followed)."""
    parent = path.parent.resolve()
    if not parent.is_relative_to(root):
        raise RuntimeError(f"refusing to remove {path}: outside {root}")
    target = parent / path.name
    if target.is_symlink() or target.is_file():
        target.unlink(missing_ok=True)
    elif target.is_dir():
        shutil.rmtree(target)


def apply_prune(plan: PrunePlan) -> PrunePlan:
    """Remove what `plan` lists; each run under its folder lock (a run that started meanwhile is skipped)."""
    done: list[Removal] = []
    by_run: dict[Path, list[Removal]] = {}
    for removal in plan.removals:
        if removal.run is not None:
            by_run.setdefault(removal.run, []).append(removal)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for run, removals in by_run.items():
        try:
            with lock_folder(run, "simcse-curriculum prune"):
                for removal in removals:
                    _remove(removal.path, plan.folder)
                    done.append(removal)
                previous = json.loads((run / PRUNED_FILE).read_text(encoding="utf-8")) \
                    if (run / PRUNED_FILE).is_file() else []
                atomic_write_json(run / PRUNED_FILE, previous + [
                    {"at": when, "keep": plan.keep, "removed": [r.as_dict(run) for r in removals]}])
        except FolderInUse:
            plan.in_use.append(run)
            plan.pruned_runs.remove(run)
    for removal in plan.removals:
        if removal.version is None:
            continue
        registry, number = removal.version
        # Tag first: a prune killed between the two leaves a version marked pruned whose files are still there.
        registry.client.set_model_version_tag(registry.name, str(number), "simcse.pruned", when)
        _remove(removal.path, plan.folder)
        done.append(removal)
    plan.removals = done
    return plan
