"""The model registry: versions of the encoder, each with its parent, its metrics and whether it
was promoted; the alias `current` names the model to use. Built on MLflow's model registry (a registered
model, its versions, tags and aliases) in an `MlflowStore` (a folder with SQLite, or a team's server).

A version is the model folder of a run (a SentenceTransformer folder with its model card) logged as the
artifact `model` of the run's MLflow run, plus tags:

    simcse.parent      the version the run started from ('' for the first version)
    simcse.promoted    true | false | pending (the gate passed; the alias switch is under way)
    simcse.reason      why, in one sentence
    simcse.promoting   while a promotion by hand or a rollback moves the alias: what it means ({'reason': ...,
                       'rolled_back': the version left}); written before the switch, removed with the marks after it
    simcse.metrics     the version's scores (JSON: {'sts/dev': 86.7, 'pairs/dev_pairs': 75.1, ...})
    simcse.gate        the gate's numbers (JSON; flows.registry.promotion.GateDecision)
    simcse.run_key     the run that made it (registering again finds it instead of adding a duplicate)
    simcse.run_dir     the run folder it came from
    simcse.candidate_round   the run's round whose model it is
    simcse.data_rows, simcse.data_new_rows, simcse.data_files, simcse.inputs_key, simcse.settings_key
                       what the run read and how much of it was new (flows.run.new_data; runs that recorded it),
                       with the record itself as the artifacts `data_seen/` of the version's MLflow run
    simcse.model_sha256   the model folder's sha256 (dataio.hashing.model_folder_sha256: the value a round's
                       metrics.json and a warm start's warm_start.json record for the same files)
    simcse.files_sha256   {file: sha256} of the model folder (the card left out), to name the file that changed
    simcse.eval_keys      {metric: what it was measured on} (flows.run.inputs.eval_keys), so a later run's evaluation of
                       the version is compared with its recorded scores only where the files and settings agree

Verified before use: the files are checked against the recorded sha256 wherever a version is used (`models
path`, a warm start, a promotion by the gate or by hand, a rollback); a changed file is one InputError naming
the file, the version and the way out. A version registered before the sha256 were recorded is used with a
warning that it cannot be verified.

The first version is the model the registry starts from (`models init`), so a current model exists before
the first run.

Kill safety: the model files are copied and checked before the version exists; creating a version with its
tags is one database transaction, and so is moving the alias. `current` therefore always names a complete,
loadable version: the old one until the switch, the new one after. Registering again after a kill finds
the version by its run key and finishes the switch.

The alias is the truth of which version is current, and the marks follow it: the version it names reads as
promoted whatever its tag says (a kill between the switch and the tags left it marked "not promoted"), with the
reason its promotion recorded before the switch (`simcse.promoting`). Every command that moves the alias first
writes the marks of a switch a kill interrupted (`settle`), and drops the record of one that never happened.

One register per run at a time: `register_run` holds the run folder's lock (`dataio.folder_lock`), so a second
register of the same run while the first is under way is refused naming it (two at once made two versions).

One move of the alias at a time: a promotion, a rollback, a run's registration and the registry's start each hold
the store's switch lock (`switching`) from reading which version is current to moving the alias, and another
command on the same folder store waits its turn (without it, a promotion by hand made while a run registered could
be overruled, and one promotion's reason dropped by another's `settle`). An OS file lock (`filelock`), released by
the kernel when its process dies. A team's MLflow server has no such lock: move its alias from one place at a time.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from dataio.atomic import atomic_dir
from dataio.errors import InputError
from dataio.hashing import model_folder_hashes
from flows.registry.mlflow_store import MlflowStore, check_database
from flows.registry.versions import (
    CURRENT,
    FILES_SHA256,
    MODEL_ARTIFACT,
    MODEL_SHA256,
    PROMOTING,
    TAG,
    Version,
    Warn,
    changed_file,
    file_tags,
    local_folder,
    promotion_intent,
    version_from_record,
)

_log = logging.getLogger("flows")

SWITCH_LOCK = ".alias.lock"  # in a folder store: held while a command checks and moves the alias
SWITCH_WAIT_SECONDS = 600.0  # how long a command waits for another's move of the alias before it says so


class ModelRegistry:
    """A registered model `name` in `store`; runs and their artifacts go to experiment `experiment`."""

    def __init__(self, store: MlflowStore, name: str, experiment: str | None = None) -> None:
        self.store = store
        self.name = name
        self.experiment = experiment or name
        self.switch_wait = SWITCH_WAIT_SECONDS
        self._switch_lock: filelock.FileLock | None = None

    @property
    def client(self) -> Any:
        return self.store.client()

    @contextmanager
    def switching(self) -> Iterator[None]:
        """Held while a command checks which version is current and moves the alias (see the module docstring);
        re-entrant in one registry object. A folder store's lock is waited for up to `switch_wait` seconds, then
        refused in one line; a server's registry has none."""
        if self.store.folder is None:
            yield
            return
        if self._switch_lock is None:
            self.store.folder.mkdir(parents=True, exist_ok=True)
            self._switch_lock = filelock.FileLock(self.store.folder / SWITCH_LOCK)
        try:
            self._switch_lock.acquire(timeout=self.switch_wait)
        except filelock.Timeout:
            raise InputError(f"registry {self.store.location}: another command (a promotion, a rollback or a run "
                             f"registering its model) has been moving the current model for {self.switch_wait:.0f} s; "
                             f"try again once it has finished") from None
        try:
            yield
        finally:
            self._switch_lock.release()

    # ------------------------------------------------------------------------------------------ reading
    def exists(self) -> bool:
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
            return True
        except MlflowException:
            return False

    def current_number(self) -> int | None:
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(self.name).aliases or {}
        except MlflowException:
            return None
        return int(aliases[CURRENT]) if CURRENT in aliases else None

    def versions(self) -> list[Version]:
        """Every version, oldest first."""
        if not self.exists():
            return []
        current = self.current_number()
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((version_from_record(mv, current) for mv in found), key=lambda v: v.version)

    def version(self, number: int) -> Version:
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, str(number))
        except MlflowException:
            known = [v.version for v in self.versions()]
            raise InputError(f"registry {self.store}: model {self.name!r} has no version {number} "
                             f"(versions: {known or 'none'})") from None
        return version_from_record(mv, self.current_number())

    def current(self) -> Version | None:
        number = self.current_number()
        return self.version(number) if number is not None else None

    def find(self, tag: str, value: str) -> Version | None:
        return next((v for v in self.versions() if v.tags.get(TAG + tag) == value), None)

    def local_path(self, version: Version, dest: Path | None = None) -> Path:
        """A local folder `SentenceTransformer(path)` loads: the version's own files when the store keeps them
        on this machine, else a copy downloaded into `dest` (whole, or not at all)."""
        local = local_folder(version.source)
        if local is not None:
            if self.store.is_local and not self.store.inside(version.source):
                raise InputError(f"version {version.version}'s files are recorded at {local}, outside the registry "
                                 "folder, which serves only its own files; register the model again into this "
                                 "registry", path=self.store.location)
            if not local.is_dir():
                pruned = version.tags.get(TAG + "pruned")
                why = f"were removed by `simcse-curriculum prune` on {pruned}" if pruned else "are missing"
                raise InputError(f"version {version.version}'s files {why}", path=local)
            return local
        if dest is None:
            raise InputError(f"version {version.version}'s files are on the server ({version.source}); give a folder "
                             "to download them into (--dest)")
        if (dest / "config.json").is_file() or (dest / "modules.json").is_file():
            return dest
        import mlflow  # MLflow: only when a store is used (the optional `tracking` extra)

        with atomic_dir(dest) as tmp:
            mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp),
                                                tracking_uri=self.store.tracking_uri)
            inner = tmp / MODEL_ARTIFACT
            if inner.is_dir():  # download_artifacts keeps the last path component
                for child in inner.iterdir():
                    child.rename(tmp / child.name)
                inner.rmdir()
        return dest

    def verified_path(self, version: Version, dest: Path | None = None, warn: Warn | None = None) -> Path:
        """`local_path`, its files checked against the sha256 recorded with the version (`check_files`)."""
        folder = self.local_path(version, dest)
        self.check_files(version, folder, warn, downloaded=not self.store.is_local)
        return folder

    def check_files(self, version: Version, folder: Path, warn: Warn | None = None, downloaded: bool = False) -> None:
        """The files in `folder` are the ones registered as `version` (their sha256): else one InputError naming the
        file, the version and what to do. A version registered without sha256 is used, with a warning (`warn`,
        by default the `flows` logger) that it cannot be verified."""
        try:
            problem = changed_file(version.tags, folder)
        except KeyError:
            self._unverifiable(version, folder, warn)
            return
        if problem is None:
            return
        name, how = problem
        todo = (f"delete {folder} to download the version again" if downloaded else
                f"restore the registry folder {self.store} from a backup, or use another version "
                f"(`simcse-curriculum models list {self.store}`, then `models rollback {self.store} VERSION`)")
        raise InputError(f"version {version.version} of {self.name!r}: {f'{name} ' if name else ''}{how} since it was "
                         f"registered (its sha256 differs from the one recorded with the version); {todo}",
                         path=folder / name if name else folder)

    def verify(self, version: Version, warn: Warn | None = None) -> None:
        """Check a version's files where they are: in the registry folder, or downloaded from a server into a
        temporary folder first (a promotion or rollback on a server registry)."""
        if self.store.is_local:
            self.verified_path(version, warn=warn)
            return
        if not (FILES_SHA256 in version.tags or MODEL_SHA256 in version.tags):
            self._unverifiable(version, version.source, warn)  # nothing to download it for
            return
        with tempfile.TemporaryDirectory(prefix="simcse-verify-") as tmp:
            folder = self.local_path(version, Path(tmp) / "model")
            self.check_files(version, folder, warn, downloaded=True)

    def _unverifiable(self, version: Version, where: Any, warn: Warn | None) -> None:
        (warn or _log.warning)(f"version {version.version} of {self.name!r} was registered without its files' sha256 "
                               f"(before the registry recorded them), so its files ({where}) cannot be verified")

    # ------------------------------------------------------------------------------------------ writing
    def new_run(self, run_name: str, tags: dict[str, str]) -> str:
        experiment = self.store.experiment_id(self.experiment)
        return self.client.create_run(experiment, run_name=run_name, tags=tags).info.run_id

    def _log_model(self, run_id: str, model_dir: Path) -> tuple[str, dict[str, str]]:
        """Copy the model folder into the run's artifacts and check every file arrived (sizes; and, in a registry
        folder, each file's sha256 against the source's); returns its URI and the tags recording its sha256."""
        artifact_uri = self.client.get_run(run_id).info.artifact_uri.rstrip("/")
        if self.store.is_local and not self.store.inside(artifact_uri):  # never write outside the folder in use
            raise InputError(f"the MLflow run {run_id} keeps its artifacts in {artifact_uri}, outside the registry "
                             "folder; nothing was registered", path=self.store.location)
        tags, files = file_tags(model_dir)
        self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
        expected = {p.relative_to(model_dir).as_posix(): p.stat().st_size
                    for p in model_dir.rglob("*") if p.is_file()}
        logged = self._artifact_sizes(run_id, MODEL_ARTIFACT)
        missing = [name for name, size in expected.items() if logged.get(name) != size]
        source = f"{artifact_uri}/{MODEL_ARTIFACT}"
        copy = local_folder(source)
        if not missing and self.store.is_local and copy is not None:
            _, copied = model_folder_hashes(copy)
            missing = [name for name, sha in files.items() if copied.get(name) != sha]
        if missing:
            raise OSError(f"registry {self.store}: copying {model_dir} left {len(missing)} files incomplete "
                          f"({', '.join(sorted(missing)[:3])})")
        return source, tags

    def _artifact_sizes(self, run_id: str, root: str) -> dict[str, int]:
        out: dict[str, int] = {}
        stack = [root]
        while stack:
            for info in self.client.list_artifacts(run_id, stack.pop()):
                if info.is_dir:
                    stack.append(info.path)
                else:
                    out[info.path[len(root) + 1:]] = int(info.file_size or 0)
        return out

    def ensure_started(self, base_model: str | Path) -> Version:
        """The current version, registering `base_model` as version 1 (current) in a new registry.

        Finishes a start that a kill interrupted (the model registered, the alias not yet set)."""
        current = self.current()
        if current is not None:
            return current
        with self.switching():  # two starts at once would register two first versions
            current = self.current()
            if current is not None:  # started by the command this one waited for
                return current
            first = next(iter(self.versions()), None) or self._register_start(Path(base_model))
            self.client.set_registered_model_alias(self.name, CURRENT, str(first.version))
            return self.version(first.version)

    def _register_start(self, base: Path) -> Version:
        """Version 1: the model the registry starts from (its folder's files, checked as every version's are)."""
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        if not base.is_dir():
            raise InputError(f"registry {self.store}: the model it starts from must be a local folder to register "
                             f"as version 1; got {str(base)!r}")
        try:
            self.client.create_registered_model(
                self.name, description="SimCSE encoders registered by simcse-curriculum; the alias 'current' "
                                       "names the model to use")
        except MlflowException:
            pass  # there already (a start interrupted after this step)
        run_id = self.new_run("registry-start", {TAG + "role": "registry-start"})
        source, sha_tags = self._log_model(run_id, base)
        self.client.set_terminated(run_id)
        tags = {TAG + "parent": "", TAG + "promoted": "true", TAG + "run_key": "registry-start",
                TAG + "reason": f"the model the registry starts from ({base})", TAG + "metrics": "{}", **sha_tags}
        mv = self.client.create_model_version(self.name, source, run_id=run_id, tags=tags,
                                              description=f"start: {base}")
        return version_from_record(mv, None)

    def register(self, *, run_id: str, model_dir: Path, parent: Version, passed: bool, reason: str,
                 gate: dict[str, Any], metrics: dict[str, float], run_key: str, run_dir: str,
                 extra_tags: dict[str, str] | None = None) -> Version:
        """Register a run's model as a new version (once per `run_key`) and make it current if `passed`.

        The alias moves only while it still names `parent`: a version promoted by hand during the run is not
        overruled by a comparison made against another model."""
        version = self.find("run_key", run_key)
        if version is None:
            source, sha_tags = self._log_model(run_id, model_dir)  # checked against the round's files
            tags = {TAG + "parent": str(parent.version), TAG + "promoted": "pending" if passed else "false",
                    TAG + "reason": reason, TAG + "gate": json.dumps(gate), TAG + "metrics": json.dumps(metrics),
                    TAG + "run_key": run_key, TAG + "run_dir": run_dir,
                    **{TAG + k: v for k, v in (extra_tags or {}).items()}, **sha_tags}
            mv = self.client.create_model_version(self.name, source, run_id=run_id, tags=tags,
                                                  description=f"from version {parent.version}: {reason}")
            version = version_from_record(mv, self.current_number())
        elif version.pending:  # a switch a kill interrupted: the files are still the ones registered
            self.verify(version)
        if version.pending:
            with self.switching():
                self._switch_if_still(version, parent, reason)
        return self.version(version.version)

    def _switch_if_still(self, version: Version, parent: Version, reason: str) -> None:
        """Make a pending `version` current if the alias still names `parent`, else record why it was not."""
        self.settle()
        current = self.current_number()
        if current == parent.version:
            self.client.set_registered_model_alias(self.name, CURRENT, str(version.version))
            current = version.version
        if current == version.version:
            self.client.set_model_version_tag(self.name, str(version.version), TAG + "promoted", "true")
        else:
            why = (f"{reason}; not promoted: the current model changed from version {parent.version} to "
                   f"{current} during the run (promote by hand with `models promote` if wanted)")
            self.client.set_model_version_tag(self.name, str(version.version), TAG + "reason", why)
            self.client.set_model_version_tag(self.name, str(version.version), TAG + "promoted", "false")

    def promote(self, number: int, reason: str = "promoted by hand", warn: Warn | None = None,
                rolled_back: int | None = None) -> Version:
        """Make version `number` current (a person's decision; the gate is not asked), once its files are checked
        against the sha256 recorded with it. What the switch means (its reason; `rolled_back`: the version a
        rollback leaves) is recorded on the version before the alias moves, and written as its marks after, so a
        kill anywhere in between reads as what happened (`_from_mlflow`) and is finished by the next move."""
        self.verify(self.version(number), warn)  # an unknown version, or changed files: one clear error
        with self.switching():
            self.settle()
            before = self.current_number()
            if before != number:
                intent: dict[str, Any] = {"reason": f"{reason} (current was version {before})"}
                if rolled_back is not None:
                    intent["rolled_back"] = rolled_back
                self.client.set_model_version_tag(self.name, str(number), PROMOTING, json.dumps(intent))
            self.client.set_registered_model_alias(self.name, CURRENT, str(number))
            self._mark_promoted(number)
        return self.version(number)

    def _mark_promoted(self, number: int) -> None:
        """The marks of a switch to `number` that happened: promoted, the recorded reason, the version a rollback
        left tagged; the record of the switch goes last, so a kill here leaves it for `settle`."""
        tags = dict(self.client.get_model_version(self.name, str(number)).tags or {})
        intent = promotion_intent(tags)
        self.client.set_model_version_tag(self.name, str(number), TAG + "promoted", "true")
        if intent is not None and intent.get("reason"):
            self.client.set_model_version_tag(self.name, str(number), TAG + "reason", str(intent["reason"]))
        if intent is not None and intent.get("rolled_back") is not None:
            self.client.set_model_version_tag(self.name, str(intent["rolled_back"]), TAG + "rolled_back",
                                              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if PROMOTING in tags:
            self.client.delete_model_version_tag(self.name, str(number), PROMOTING)

    def settle(self) -> None:
        """Finish what a killed promotion left: the current version's marks, when its switch happened; the record
        of a switch that never happened (killed before the alias moved) dropped. Called before the alias moves
        again, so a record left on a version is always about the last switch."""
        current = self.current_number()
        for version in self.versions():
            if PROMOTING not in version.tags:
                continue
            if version.version == current:
                self._mark_promoted(version.version)
            else:
                self.client.delete_model_version_tag(self.name, str(version.version), PROMOTING)

    def rollback(self, number: int | None = None, warn: Warn | None = None) -> Version:
        """Make the current version's parent (or version `number`) current again, once its files are checked; the
        version left is tagged."""
        with self.switching():  # the version rolled back from is the one current when the alias moves
            self.settle()  # a rollback killed after its switch: this is the version it moved to, marks written
            current = self.current()
            if current is None:
                raise InputError(f"registry {self.store}: {self.name!r} has no current version")
            target = number if number is not None else current.parent
            if target is None:
                raise InputError(f"version {current.version} is the first version; there is nothing to roll back to")
            return self.promote(target, reason=f"rolled back from version {current.version}", warn=warn,
                                rolled_back=current.version if current.version != target else None)


def open_registry(location: str, name: str | None = None) -> ModelRegistry:
    """A registry named on the command line: a folder or server URI, and the model's name (the only one in
    the store when not given)."""
    store = MlflowStore.at(location)
    if store.is_local:
        if not (Path(store.location) / "mlflow.db").is_file():
            raise InputError("no registry here (no mlflow.db); give the folder named by registry.path",
                             path=store.location)
        # An empty or damaged mlflow.db is refused before MLflow opens it (and would write its schema into it).
        check_database(Path(store.location), need_records=True)
    if name is None:
        names = [m.name for m in store.client().search_registered_models()]
        if len(names) != 1:
            found = "no registered models" if not names else "several models: " + ", ".join(sorted(names))
            raise InputError(f"registry {store}: {found}; give --name")
        name = names[0]
    registry = ModelRegistry(store, name)
    if not registry.exists():
        raise InputError(f"registry {store}: no registered model {name!r}")
    return registry


