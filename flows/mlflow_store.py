"""One MLflow store for runs and the model registry: a folder (the embedded default) or a team's server.

A folder holds `mlflow.db` (SQLite) and `artifacts/`. MLflow's model registry needs a database backend, and
SQLite makes every registry change (a new version, its tags, the `current` alias) one transaction, so a
process killed at any point leaves the old state or the new one, never half of each. A URI names a
running `mlflow server` (`http://127.0.0.1:5000`); runs, versions and artifacts then live where that server
keeps them. Nothing is written outside the folder or server named: experiments get an explicit artifact
location inside the folder (MLflow's own default would be `./mlruns` in the working directory).

MLflow (the `tracking` extra: mlflow-skinny, with SQLAlchemy and alembic for the SQLite store) is imported
only when a store is opened, so runs without tracking never pay for it and never need it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataio.errors import InputError
from flows.config import is_uri

DB_NAME = "mlflow.db"
ARTIFACTS = "artifacts"
_CLIENTS: dict[str, Any] = {}


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
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-") or "experiment"
        return (Path(self.location) / ARTIFACTS / safe).as_uri()

    def client(self) -> Any:
        """An `mlflow.MlflowClient` for tracking and the registry (one per store and process)."""
        if self.tracking_uri not in _CLIENTS:
            _quiet_mlflow()
            if self.is_local:
                Path(self.location).mkdir(parents=True, exist_ok=True)
            MlflowClient = import_mlflow_client()
            _quiet_mlflow()  # again: importing mlflow configures its own loggers
            _CLIENTS[self.tracking_uri] = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return _CLIENTS[self.tracking_uri]

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with its artifact location inside the store) on first use."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifact_location(name))
        except MlflowException:  # created meanwhile by another process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def __str__(self) -> str:
        return self.location


def store_for(config: Any) -> MlflowStore | None:
    """The store a run logs to: `tracking.uri`, else `<output_dir>/mlflow`; None when tracking is off."""
    if not config.tracking.enabled:
        return None
    return MlflowStore.at(config.tracking.uri or Path(config.output_dir) / "mlflow")


MISSING_MLFLOW = ("MLflow is not installed: tracking and the model registry need it; "
                  "pip install 'simcse-curriculum[tracking]' (or mlflow-skinny)")


def require_mlflow() -> None:
    """One InputError saying how to install MLflow when it is missing; found without importing it (a run's
    check before anything is written, `flows.validate`, must stay fast)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise InputError(MISSING_MLFLOW)


def import_mlflow_client() -> Any:
    """`mlflow.MlflowClient`, or one InputError saying how to install it (MLflow is an optional extra)."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise InputError(MISSING_MLFLOW) from None
    return MlflowClient
