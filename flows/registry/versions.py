"""A registered version as this package reads it: the tags it writes on an MLflow model version (see
flows.registry.model_registry for what each means), the `Version` record built from them, the check of a version's
files against their recorded sha256, and `read_local_version`: a registry folder's version read from MLflow's own
records with sqlite3, for `models path`, without importing MLflow or the registry's writing side.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dataio.errors import InputError
from dataio.hashing import model_folder_hashes, model_folder_sha256
from flows.registry.mlflow_store import DB_NAME, MlflowStore, check_database, local_path, relocate

CURRENT = "current"
MODEL_ARTIFACT = "model"
TAG = "simcse."
PROMOTING = TAG + "promoting"
MODEL_SHA256 = TAG + "model_sha256"
FILES_SHA256 = TAG + "files_sha256"
EVAL_KEYS = TAG + "eval_keys"
MAX_MANIFEST = 5000  # characters: the tag-value limit of older MLflow servers; beyond it only the folder's hash
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


def promotion_intent(tags: dict[str, str]) -> dict[str, Any] | None:
    """What a promotion recorded before it moved the alias (`simcse.promoting`), or None."""
    try:
        value = json.loads(tags[PROMOTING]) if tags.get(PROMOTING) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def version_from_record(mv: Any, current: int | None) -> Version:
    tags = dict(mv.tags or {})
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    is_current = int(mv.version) == current
    promoted, reason = tags.get(TAG + "promoted", "false"), tags.get(TAG + "reason", "")
    if is_current:
        # The alias moved in one transaction and is the truth; the marks written after it may be lost to a kill.
        promoted = "true"
        reason = str((promotion_intent(tags) or {}).get("reason") or reason)
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
    return name, version_from_record(record, current)


