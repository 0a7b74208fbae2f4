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
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from dataio.atomic import atomic_dir
from dataio.errors import InputError
from dataio.folder_lock import lock_folder
from dataio.hashing import model_folder_hashes, model_folder_sha256
from flows.registry.mlflow_store import DB_NAME, MlflowStore, check_database, local_path, relocate
from flows.registry.promotion import GateSettings, best_round, decide, parent_drift
from flows.registry.tracking import TRACKING_FILE
from flows.run.new_data import attach_to_run
from flows.run.record_check import check_records
from flows.run.rundir import START_FILE, RunDir
from simcse.evaluation import flat_metrics

CURRENT = "current"
MODEL_ARTIFACT = "model"
TAG = "simcse."
PROMOTING = TAG + "promoting"
MODEL_SHA256 = TAG + "model_sha256"
FILES_SHA256 = TAG + "files_sha256"
EVAL_KEYS = TAG + "eval_keys"
MAX_MANIFEST = 5000  # characters: the tag-value limit of older MLflow servers; beyond it only the folder's hash
_log = logging.getLogger("flows")
Warn = Callable[[str], Any]


@dataclass
class Version:
    """One registered version, as `models list` shows it."""

    version: int
    parent: int | None
    created: str
    promoted: str  # its tag: true | false | pending (`as_dict` gives JSON's booleans)
    current: bool
    reason: str
    metrics: dict[str, float]
    gate: dict[str, Any]
    run_id: str | None
    source: str
    run_dir: str | None = None
    tags: dict[str, str] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (`models list --json`, `models register --json`): `promoted` and `pending` are booleans (a tag
        is a string; `pending`: the gate passed and the switch of `current` is under way, or a kill stopped it)."""
        out = {k: v for k, v in self.__dict__.items() if k != "tags"}
        out["promoted"] = self.promoted == "true"
        out["pending"] = self.promoted == "pending"
        out["decides"] = self.gate.get("metric")
        return out

    @property
    def pending(self) -> bool:
        """The gate passed and the alias switch has not been recorded as done (the tag, not the reading)."""
        return self.tags.get(TAG + "promoted") == "pending"


def _int(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None


def _intent(tags: dict[str, str]) -> dict[str, Any] | None:
    """What a promotion recorded before it moved the alias (`simcse.promoting`), or None."""
    try:
        value = json.loads(tags[PROMOTING]) if tags.get(PROMOTING) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _from_mlflow(mv: Any, current: int | None) -> Version:
    tags = dict(mv.tags or {})
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    is_current = int(mv.version) == current
    promoted, reason = tags.get(TAG + "promoted", "false"), tags.get(TAG + "reason", "")
    if is_current:
        # The alias moved in one transaction and is the truth; the marks written after it may be lost to a kill.
        promoted = "true"
        reason = str((_intent(tags) or {}).get("reason") or reason)
    return Version(version=int(mv.version), parent=_int(tags.get(TAG + "parent")), created=created,
                   promoted=promoted, current=is_current, reason=reason,
                   metrics=json.loads(tags.get(TAG + "metrics") or "{}"),
                   gate=json.loads(tags.get(TAG + "gate") or "{}"), run_id=mv.run_id, source=mv.source,
                   run_dir=tags.get(TAG + "run_dir"), tags=tags)


def local_folder(uri: str) -> Path | None:
    """The folder a `file:` URI (or a plain path) names; None for remote artifacts."""
    return local_path(uri)


def file_tags(model_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(the version tags that record a model folder's sha256, its {file: sha256}), the folder read once."""
    digest, files = model_folder_hashes(model_dir)
    tags = {MODEL_SHA256: digest}
    manifest = json.dumps(files, sort_keys=True)
    if len(manifest) <= MAX_MANIFEST:
        tags[FILES_SHA256] = manifest
    return tags, files


def changed_file(tags: dict[str, str], folder: Path) -> tuple[str | None, str] | None:
    """The first file of `folder` that is not what the version's tags recorded, and how: ('model.safetensors',
    'changed'), ('vocab.txt', 'is missing'), ('pytorch_model.bin', 'was added'), or (None, 'its files changed')
    where only the folder's hash was recorded; None when they agree. KeyError: nothing was recorded."""
    if FILES_SHA256 in tags:
        expected = json.loads(tags[FILES_SHA256])
        _, found = model_folder_hashes(folder)
        for name in sorted(set(expected) | set(found)):
            if expected.get(name) != found.get(name):
                return name, "is missing" if name not in found else "was added" if name not in expected else "changed"
        return None
    if model_folder_sha256(folder) != tags[MODEL_SHA256]:
        return None, "its files changed"
    return None


class ModelRegistry:
    """A registered model `name` in `store`; runs and their artifacts go to experiment `experiment`."""

    def __init__(self, store: MlflowStore, name: str, experiment: str | None = None) -> None:
        self.store = store
        self.name = name
        self.experiment = experiment or name

    @property
    def client(self) -> Any:
        return self.store.client()

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
        return sorted((_from_mlflow(mv, current) for mv in found), key=lambda v: v.version)

    def version(self, number: int) -> Version:
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, str(number))
        except MlflowException:
            known = [v.version for v in self.versions()]
            raise InputError(f"registry {self.store}: model {self.name!r} has no version {number} "
                             f"(versions: {known or 'none'})") from None
        return _from_mlflow(mv, self.current_number())

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
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        current = self.current()
        if current is not None:
            return current
        first = next(iter(self.versions()), None)
        if first is None:
            base = Path(base_model)
            if not base.is_dir():
                raise InputError(f"registry {self.store}: the model it starts from must be a local folder to register "
                                 f"as version 1; got {base_model!r}")
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
            first = _from_mlflow(mv, None)
        self.client.set_registered_model_alias(self.name, CURRENT, str(first.version))
        return self.version(first.version)

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
            version = _from_mlflow(mv, self.current_number())
        elif version.pending:  # a switch a kill interrupted: the files are still the ones registered
            self.verify(version)
        if version.pending:
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
        return self.version(version.version)

    def promote(self, number: int, reason: str = "promoted by hand", warn: Warn | None = None,
                rolled_back: int | None = None) -> Version:
        """Make version `number` current (a person's decision; the gate is not asked), once its files are checked
        against the sha256 recorded with it. What the switch means (its reason; `rolled_back`: the version a
        rollback leaves) is recorded on the version before the alias moves, and written as its marks after, so a
        kill anywhere in between reads as what happened (`_from_mlflow`) and is finished by the next move."""
        self.verify(self.version(number), warn)  # an unknown version, or changed files: one clear error
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
        intent = _intent(tags)
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
        self.settle()  # a rollback killed after its switch: this is the version it moved to, marks written
        current = self.current()
        if current is None:
            raise InputError(f"registry {self.store}: {self.name!r} has no current version")
        target = number if number is not None else current.parent
        if target is None:
            raise InputError(f"version {current.version} is the first version; there is nothing to roll back to")
        return self.promote(target, reason=f"rolled back from version {current.version}", warn=warn,
                            rolled_back=current.version if current.version != target else None)


def read_local_version(store: MlflowStore, name: str | None = None, number: int | None = None) -> tuple[str, Version]:
    """(the registered model's name, its version `number`, by default the current one) of a registry folder, read
    from MLflow's own records in `mlflow.db` with the standard library's sqlite3: `models path` answers in well
    under a second this way, where importing MLflow alone takes seconds. The same checks and messages as
    `open_registry` and `ModelRegistry.version`; a store moved here names its own files first (`relocate`)."""

    folder = Path(store.location)
    if not (folder / DB_NAME).is_file():
        raise InputError("no registry here (no mlflow.db); give the folder named by registry.path", path=folder)
    check_database(folder, need_records=True)
    relocate(folder)
    con = sqlite3.connect(f"{(folder / DB_NAME).as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        names = sorted(row[0] for row in con.execute("SELECT name FROM registered_models"))
        if name is None:
            if len(names) != 1:
                found = "no registered models" if not names else "several models: " + ", ".join(names)
                raise InputError(f"registry {store}: {found}; give --name")
            name = names[0]
        elif name not in names:
            raise InputError(f"registry {store}: no registered model {name!r}")
        alias = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                            (name, CURRENT)).fetchone()
        current = int(alias[0]) if alias is not None else None
        if number is None:
            if current is None:
                raise InputError(f"registry {store}: {name!r} has no current version")
            number = current
        live = "(current_stage IS NULL OR current_stage != 'Deleted_Internal')"  # MLflow's mark of a deleted one
        row = con.execute(f"SELECT version, creation_time, source, run_id FROM model_versions WHERE name = ? AND "
                          f"version = ? AND {live}", (name, number)).fetchone()
        if row is None:
            known = [v for (v,) in con.execute(f"SELECT version FROM model_versions WHERE name = ? AND {live} "
                                               "ORDER BY version", (name,))]
            raise InputError(f"registry {store}: model {name!r} has no version {number} (versions: {known or 'none'})")
        tags = dict(con.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                                (name, number)).fetchall())
    finally:
        con.close()
    record = SimpleNamespace(version=row[0], creation_timestamp=row[1], source=row[2], run_id=row[3], tags=tags)
    return name, _from_mlflow(record, current)


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
