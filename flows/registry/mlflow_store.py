"""One MLflow store for runs and the model registry: a folder (the embedded default) or a team's server.

A folder holds `mlflow.db` (SQLite) and `artifacts/`. MLflow's model registry needs a database backend, and
SQLite makes every registry change (a new version, its tags, the `current` alias) one transaction, so a
process killed at any point leaves the old state or the new one, never half of each. A URI names a
running `mlflow server` (`http://127.0.0.1:5000`); runs, versions and artifacts then live where that server
keeps them. Nothing is written outside the folder or server named: experiments get an explicit artifact
location inside the folder (MLflow's own default would be `./mlruns` in the working directory).

A folder can be moved, copied or restored from a backup and serves its own files. MLflow's SQLite store keeps
absolute URIs: each experiment's artifact location, each run's artifact URI, each model version's source and
storage location, each logged model's artifact location (`create_experiment` resolves a relative location
against the working directory; there is no API to change any of them: mlflow/mlflow#3144, #8226). Every
experiment made here is given `<folder>/artifacts/<name>`, so the folder a store was made in can be read off its
experiments: when a store is opened in another folder, its URIs under the old folder are rewritten to the same
paths under the folder it is in now, in one SQLite transaction, before MLflow reads them (`relocate`). A store
whose records cannot be rewritten (a read-only copy) is refused in one line; no store ever writes new artifacts
outside its folder (`experiment_id` refuses an experiment whose artifact location is elsewhere).

MLflow (the `tracking` extra: mlflow-skinny, with SQLAlchemy and alembic for the SQLite store) is imported
only when a store is opened, so runs without tracking never pay for it and never need it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dataio.errors import InputError
from flows.run.locations import is_uri

DB_NAME = "mlflow.db"
ARTIFACTS = "artifacts"
_CLIENTS: dict[str, Any] = {}
_SOUND: set[tuple[str, int, int, bool]] = set()  # store databases found whole (path, size, mtime, need_records)
_log = logging.getLogger("flows")
# Where MLflow's SQLite store keeps absolute URIs: (table, its columns that hold one).
LOCATION_COLUMNS = (("experiments", ("artifact_location",)), ("runs", ("artifact_uri",)),
                    ("model_versions", ("source", "storage_location")), ("logged_models", ("artifact_location",)))


def _quiet_mlflow() -> None:
    """No telemetry (no network beyond the store) and none of MLflow's or alembic's INFO lines on stderr."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class MlflowStore:
    """Where runs are logged and models registered: `location` is a folder path or a server URI."""

    location: str

    @classmethod
    def at(cls, location: str | os.PathLike) -> MlflowStore:
        text = str(location)
        return cls(text if is_uri(text) else str(Path(text).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        return not is_uri(self.location)

    @property
    def folder(self) -> Path | None:
        return Path(self.location) if self.is_local else None

    @property
    def tracking_uri(self) -> str:
        if self.is_local:
            return f"sqlite:///{Path(self.location) / DB_NAME}"
        return self.location.rstrip("/")

    def artifact_location(self, experiment: str) -> str | None:
        """Where an experiment's run artifacts go: inside the folder; a server decides for itself."""
        if not self.is_local:
            return None
        return (Path(self.location) / ARTIFACTS / artifact_folder_name(experiment)).as_uri()

    def inside(self, uri: str) -> bool:
        """Whether `uri` (a `file:` URI or a path) names something inside this store's folder (a local store)."""
        path = local_path(uri)
        return self.is_local and path is not None and path.is_absolute() and path.is_relative_to(self.location)

    def client(self) -> Any:
        """An `mlflow.MlflowClient` for tracking and the registry (one per store and process); a local store whose
        database is damaged is refused (`check_database`), and one that was moved or copied here is made to name
        its own files first (`relocate`)."""
        if self.tracking_uri not in _CLIENTS:
            _quiet_mlflow()
            if self.is_local:
                Path(self.location).mkdir(parents=True, exist_ok=True)
                check_database(Path(self.location))  # damaged: one line, before MLflow writes a schema into it
                relocate(Path(self.location))
            MlflowClient = import_mlflow_client()
            _quiet_mlflow()  # again: importing mlflow configures its own loggers
            _CLIENTS[self.tracking_uri] = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return _CLIENTS[self.tracking_uri]

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with its artifact location inside the store) on first use."""
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name, artifact_location=self.artifact_location(name))
            except MlflowException:  # created meanwhile by another process
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if self.is_local and not self.inside(found.artifact_location):
            raise InputError(f"experiment {name!r} keeps its artifacts in {found.artifact_location}, outside this "
                             "store's folder, and new runs would write there; use a store folder of its own (or "
                             "give the experiment another name)", path=self.location)
        return found.experiment_id

    def __str__(self) -> str:
        return self.location


def artifact_folder_name(experiment: str) -> str:
    """The folder under `<store>/artifacts/` that holds an experiment's runs."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-") or "experiment"


def local_path(uri: str | None) -> Path | None:
    """The path a `file:` URI (or a plain path) names; None for remote artifacts (and for None)."""
    if uri is None:
        return None
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


SQLITE_HEADER = b"SQLite format 3\x00"


def database_problem(db: Path, need_records: bool = False) -> str | None:
    """What is wrong with the store database `db` (an existing file), found without writing to it; None when it is
    a whole SQLite database (and, with `need_records`, holds MLflow's tables).

    MLflow opens any file as SQLite and, finding no tables, writes its schema into it: an empty (0-byte) or
    damaged `mlflow.db` was turned into a new, empty store by a read, or failed deep inside SQLAlchemy with a
    traceback of a hundred lines naming no file. Checked here: the file's header, its length against the page
    count the header records (a truncated copy), and SQLite's `quick_check` (every page of every table and index
    read once: milliseconds for a registry, 0.6 s for a 190 MB database on a busy 2-core machine; once per
    process and file)."""

    size = db.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)"
    with open(db, "rb") as handle:
        head = handle.read(100)
    if not head.startswith(SQLITE_HEADER) or len(head) < 100:
        return "it is not an SQLite database (garbage or a foreign file)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    wal = db.with_name(db.name + "-wal").exists()
    # The header's page count holds when its change counter (bytes 24-27) equals bytes 92-95 (SQLite's rule).
    if not wal and head[24:28] == head[92:96] and pages and size < pages * page_size:
        return f"it is truncated ({size} of its {pages * page_size} bytes)"
    mode = "rw" if os.access(db, os.W_OK) else "ro"  # rw opens an existing file only; a hot journal is rolled back
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode={mode}", uri=True, timeout=60)
        try:
            found = con.execute("PRAGMA quick_check(1)").fetchone()
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError) and ("locked" in str(err) or "unable to open" in str(err)):
            return None  # busy (another process writes) or not readable: not damage; MLflow's open says what it is
        return f"it is damaged ({err})"
    if found is None or found[0] != "ok":
        return f"it is damaged ({found[0] if found else 'quick_check gave no answer'})"
    if need_records and not {"experiments", "registered_models"} <= tables:
        return "it holds no MLflow records (no experiments or registered_models table)"
    return None


def check_database(folder: Path, need_records: bool = False) -> None:
    """One InputError naming `<folder>/mlflow.db` and the way out when it is damaged, empty, or (`need_records`: a
    command that only reads) holds no MLflow records; nothing is written (see `database_problem`). A folder with no
    `mlflow.db` passes: a store that writes creates it."""
    db = folder / DB_NAME
    if not db.is_file():
        return
    stat = db.stat()
    key = (str(db), stat.st_size, stat.st_mtime_ns, need_records)
    if key in _SOUND:  # checked in this process already (a run's check, then its tracker), unchanged since
        return
    problem = database_problem(db, need_records)
    if problem is None:
        _SOUND.add(key)
    else:
        raise InputError(f"this MLflow store's database cannot be used: {problem}; restore {DB_NAME} from a backup, "
                         f"or move it aside (mv {db} {db}.damaged) to start a new, empty store", path=db)


def _old_folders(con: Any, folder: Path) -> list[Path]:
    """The folders this store was made or used in before, read off its experiments: each experiment this module
    made has its artifacts in `<that folder>/artifacts/<name>`."""
    found: set[Path] = set()
    for name, location in con.execute("SELECT name, artifact_location FROM experiments"):
        path = local_path(location)
        if path is not None and path.is_absolute() and path.parent.name == ARTIFACTS and name is not None \
                and path.name == artifact_folder_name(name) and path.parent.parent != folder:
            found.add(path.parent.parent)
    return sorted(found)


def _moved(value: Any, old: list[Path], folder: Path) -> str | None:
    """`value` (a URI or a path) with an old folder of the store replaced by `folder`; None when it names none."""
    path = local_path(value) if isinstance(value, str) else None
    if path is None or not path.is_absolute() or path.is_relative_to(folder):  # a copy inside the original
        return None
    for root in old:
        if path.is_relative_to(root):
            new = folder / path.relative_to(root)
            return new.as_uri() if value.startswith("file:") else str(new)
    return None


def relocate(folder: Path) -> int:
    """Make a store that was moved, copied or restored into `folder` name its own files: every URI of its records
    under a folder it was made or used in before now names the same path under `folder` (one SQLite transaction,
    so a kill leaves all old or all new). Returns how many values changed (0: the store was not moved).

    Only paths under the store's own old folders change: a URI elsewhere (a team's artifact server, a folder the
    store never held) is left as it is. When the records cannot be written (a read-only copy), the store is
    refused: reading it would serve the old folder's files, and writing it would write there."""

    db = folder / DB_NAME
    if not db.is_file():
        return 0
    con = sqlite3.connect(str(db), timeout=60, isolation_level=None)
    old: list[Path] = []
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        old = _old_folders(con, folder) if "experiments" in tables else []
        if not old:
            return 0
        con.execute("BEGIN IMMEDIATE")  # then read again: another process may have rewritten it meanwhile
        old = _old_folders(con, folder)
        changed = 0
        for table, wanted in LOCATION_COLUMNS:
            if table not in tables:
                continue
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            columns = [c for c in wanted if c in have]
            if not columns:
                continue
            for rowid, *values in con.execute(f"SELECT rowid, {', '.join(columns)} FROM {table}").fetchall():
                updates = {c: new for c, v in zip(columns, values) if (new := _moved(v, old, folder)) is not None}
                if updates:
                    assignments = ", ".join(f"{c} = ?" for c in updates)
                    con.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", [*updates.values(), rowid])
                    changed += len(updates)
        con.execute("COMMIT")
    except sqlite3.Error as err:
        if con.in_transaction:
            con.execute("ROLLBACK")
        was = f" from {old[0]}" if old else ""
        raise InputError(f"this MLflow store was moved or copied here{was}, and its records, which name the files "
                         f"of the folder it was in, cannot be updated to name its own ({err}); make the folder and "
                         f"{DB_NAME} writable, then rerun", path=folder) from None
    finally:
        con.close()
    if changed:
        _log.warning("%s: this MLflow store was moved or copied here from %s; its %d file locations now name the "
                     "files in this folder", folder, ", ".join(map(str, old)), changed)
    return changed


def store_for(config: Any) -> MlflowStore | None:
    """The store a run logs to: `tracking.uri`; else the registry's (`registry.path`), so that the version a run
    registers is linked to the run it trained in, its metrics, report and plots (one store for both: each night's
    `<output_dir>/mlflow` held runs that no version named); else `<output_dir>/mlflow`. None when tracking is off."""
    if not config.tracking.enabled:
        return None
    if config.tracking.uri:
        return MlflowStore.at(config.tracking.uri)
    if getattr(config, "registry", None) is not None:
        return MlflowStore.at(config.registry.path)
    return MlflowStore.at(Path(config.output_dir) / "mlflow")


MISSING_MLFLOW = ("MLflow is not installed: tracking and the model registry need it; "
                  "pip install 'simcse-curriculum[tracking]' (or mlflow-skinny)")


def require_mlflow() -> None:
    """One InputError saying how to install MLflow when it is missing; found without importing it (a run's
    check before anything is written, `flows.rounds.validate`, must stay fast)."""

    if importlib.util.find_spec("mlflow") is None:
        raise InputError(MISSING_MLFLOW)


def import_mlflow_client() -> Any:
    """`mlflow.MlflowClient`, or one InputError saying how to install it (MLflow is an optional extra)."""
    try:
        from mlflow import MlflowClient  # MLflow: only when a store is used (the optional `tracking` extra)
    except ImportError:
        raise InputError(MISSING_MLFLOW) from None
    return MlflowClient
