"""The run directory: where every file of a run lives, and what marks each step done.

Layout (DESIGN.md section 3):
    <run>/config.yaml              the resolved settings the run started with
    <run>/state.json               the curriculum state (curriculum.CurriculumState)
    <run>/base_metrics.json        the base model's evaluation
    <run>/triplets/round=<r>/...   mined Parquet (dataio.triplets); the round's manifest marks it mined
    <run>/rounds/<r>/train/        the trainer's checkpoint while round r trains
    <run>/rounds/<r>/model/        the model after round r (SentenceTransformer folder, safetensors)
    <run>/rounds/<r>/optimizer/    the optimizer state the next round continues from (the latest round only;
                                   a finished night drops it: `drop_spent_optimizer`)
    <run>/rounds/<r>/metrics.json  round r's results; written last, it marks the round complete
    <run>/plots/*.png, report.md   regenerated from the files above after every round
    <run>/selection.json           the model to use: the best by the dev metric, the starting model included
    <run>/finished.json            a scheduled run's flow returned (flows.run.scheduled_folders): the next starts anew
    <run>/warm_start.json          the registry version a continuing run started from (flows.registry.warm_start)
    <run>/registered.json          the version a continuing run registered (flows.rounds.continuing)
    <run>/cache/                   embeddings cache (mining)
    <run>/data/                    the built-in corpus, when the config asks for it
    <run>/.prefect/                Prefect's database and persisted task results (unless PREFECT_HOME is set)

Every file is written under a temporary name and renamed, so a killed run leaves either the old file or
the complete new one; a step counts as done only when its marker exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataio.atomic import atomic_write_json, atomic_write_text
from dataio.errors import InputError
from dataio.hashing import model_folder_sha256
from dataio.triplet_layout import manifest_path
from flows.run.config import OPERATIONAL_MINING, OPERATIONAL_SECTIONS, OPERATIONAL_TEACHER, RunConfig
from flows.run.config_yaml import read_yaml

# Files of a continuing (registry) run, named here so the steps that write and read them share one name.
START_FILE = "warm_start.json"
REGISTERED_FILE = "registered.json"

# Keys that may change when a run is continued: where it is tracked, how mining is spread over processes, where the
# teacher's vectors are kept (`rounds` may not: it sets the length of the learning-rate and curriculum schedules, so
# a longer run is a new run, which may start from this one's model).
RESUMABLE_CHANGES: tuple[str, ...] = OPERATIONAL_SECTIONS + tuple(f"mining.{key}" for key in OPERATIONAL_MINING) \
    + tuple(f"teacher.{key}" for key in OPERATIONAL_TEACHER)


def recorded_model(r: int) -> str:
    """Round r's model as the run's records name it: relative to the run folder (`rounds/<r>/model`), so a run
    folder that is moved, copied or restored elsewhere names its own models. Records written before named the
    absolute path; readers take a round's model from its round, never from that path."""
    return f"rounds/{r}/model"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def base_metrics_path(self) -> Path:
        return self.root / "base_metrics.json"

    @property
    def teacher_metrics_path(self) -> Path:
        """The teacher's evaluation on the run's dev sets: the ceiling the report reads the student against."""
        return self.root / "teacher_metrics.json"

    @property
    def triplets(self) -> Path:
        return self.root / "triplets"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def report_path(self) -> Path:
        return self.root / "report.md"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def prefect_results(self) -> Path:
        return self.root / ".prefect" / "results"

    def round_dir(self, r: int) -> Path:
        return self.root / "rounds" / str(r)

    def model_dir(self, r: int) -> Path:
        return self.root / recorded_model(r)

    def train_dir(self, r: int) -> Path:
        return self.round_dir(r) / "train"

    def optimizer_dir(self, r: int) -> Path:
        """The optimizer's state after round r, which round r + 1 continues from (kept for the last round only)."""
        return self.round_dir(r) / "optimizer"

    def drop_spent_optimizer(self, rounds: int) -> int:
        """Remove the last round's optimizer state once all `rounds` of the run are complete; returns the bytes
        freed (0: nothing removed). It is kept only for the next round to continue from, and a finished run has
        no next round (`rounds` is fixed: a longer run is a new run, whose optimizer starts afresh), nor does
        training a round again use it (`retrain_from` needs the state of the round before). Called when a night
        has finished (flows.orchestration.scheduled_runs, flows.rounds.continuing); a plain run keeps it until
        `prune`."""
        folder = self.optimizer_dir(rounds - 1)
        if rounds < 1 or not folder.is_dir() or not all(self.round_complete(r) for r in range(rounds)):
            return 0
        size = sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())
        shutil.rmtree(folder)
        logging.getLogger("flows").info("round %d's optimizer state removed (%.1f MB): the night is finished and no "
                                        "round continues from it", rounds - 1, size / 1e6)
        return size

    def metrics_path(self, r: int) -> Path:
        return self.round_dir(r) / "metrics.json"

    def manifest_path(self, r: int) -> Path:
        return manifest_path(self.triplets, r)

    # ---------------------------------------------------------------------------------- progress
    def round_complete(self, r: int) -> bool:
        return self.metrics_path(r).is_file()

    def train_result_path(self, r: int) -> Path:
        """What round r's training returned (steps, train accuracy, ...): written once its model is in place."""
        return self.round_dir(r) / "train_result.json"

    def round_trained(self, r: int) -> bool:
        """Round r's training is done: its model and the training's result are written."""
        return self.model_complete(r) and self.train_result_path(r).is_file()

    def retrain_from(self, r: int) -> int:
        """The first round to delete (with every later one) so that round r can be trained again: r when it is
        round 0 or the optimizer state it continues from is still there, else the round before, and so on
        (a round's optimizer state is kept only while it is the last round trained)."""
        while r > 0 and not self.optimizer_dir(r - 1).is_dir():
            r -= 1
        return r

    def model_complete(self, r: int) -> bool:
        """A model folder exists only once fully written (`SimCSEEncoder.save` swaps it in whole, via
        `dataio.atomic.atomic_dir`)."""
        return (self.model_dir(r) / "config.json").is_file() or (self.model_dir(r) / "modules.json").is_file()

    def model_sha256(self, r: int) -> str:
        """SHA-256 of round r's model files, the card left out (`dataio.hashing.model_folder_sha256`)."""
        return model_folder_sha256(self.model_dir(r))

    def check_model(self, r: int) -> None:
        """Round r's model is there and is the one its round wrote (sha256 in `metrics.json`); a missing or
        changed model stops the run in one line."""
        if not self.model_complete(r):
            raise InputError(f"round {r}'s model is missing, though metrics.json marks the round complete: restore "
                             f"the folder, or {self.retrain_advice(r)}", path=self.model_dir(r))
        recorded = self.read_metrics(r).get("model_sha256")
        if recorded is not None and recorded != self.model_sha256(r):
            raise InputError(f"round {r}'s model changed on disk since the round finished (its files' sha256 "
                             f"differs from metrics.json): restore the folder, or {self.retrain_advice(r)}",
                             path=self.model_dir(r))

    def retrain_advice(self, r: int) -> str:
        """How to train round r again when its model or record is lost: from the first round whose predecessor's
        optimizer state is still there (`retrain_from`; a round's optimizer state is kept only while it is the
        last round trained), or a new run from the previous round's model."""
        first = self.retrain_from(r)
        advice = f"delete {self.round_dir(first)} and every later round to train them again"
        if r > first:
            advice += (f" (round {r} continues round {r - 1}'s optimizer state, kept only until round {r} trained), "
                       f"or start a new run from {self.model_dir(r - 1)} (model.name_or_path)")
        return advice

    def completed_rounds(self) -> list[int]:
        rounds_root = self.root / "rounds"
        if not rounds_root.is_dir():
            return []
        return sorted(int(p.name) for p in rounds_root.iterdir()
                      if p.name.isdigit() and self.round_complete(int(p.name)))

    def read_metrics(self, r: int) -> dict[str, Any]:
        return json.loads(self.metrics_path(r).read_text(encoding="utf-8"))

    def read_base_metrics(self) -> dict[str, Any] | None:
        if not self.base_metrics_path.is_file():
            return None
        return json.loads(self.base_metrics_path.read_text(encoding="utf-8"))

    # ---------------------------------------------------------------------------------- claiming
    def claim(self, config: RunConfig) -> None:
        """Record the config, or check that a run already here used the same settings.

        A different config in the same folder would mix two runs' rounds; that is refused with the keys
        that differ, so the user picks a new output_dir (or deletes the old run) knowingly.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.check_claim(config)
        atomic_write_text(self.config_path, config.to_yaml())

    def check_claim(self, config: RunConfig) -> None:
        """The refusal of `claim`, without writing: InputError when the run recorded here used other settings (or
        its config.yaml is unreadable). `run --dry-run` and `validate` ask it too, so they refuse what `run` does
        with the same line."""
        changed = self.changed_settings(config)
        if changed:
            hint = ""
            if "rounds" in changed or "steps_per_round" in changed:
                hint = (" (rounds and steps_per_round set the length of the learning-rate and curriculum "
                        "schedules; to train further, start a new run whose model.name_or_path is this run's "
                        "last model)")
            raise InputError(f"this run folder holds a run with different settings ({', '.join(changed[:6])}); "
                             f"use another output_dir or delete {self.root} to start over{hint}",
                             path=self.config_path)

    def changed_settings(self, config: RunConfig) -> list[str]:
        """The keys whose values differ between the run recorded here and `config` (those a resumed run may
        change left out); [] when there is no recorded run. InputError when the recorded config is unreadable."""
        if not self.config_path.is_file():
            return []
        try:
            previous = read_yaml(self.config_path)[0] or {}
        except InputError:
            previous = None
        if not isinstance(previous, dict):
            raise InputError("the saved config of this run is unreadable; pick another output_dir, or restore "
                             "this run's config.yaml to resume it", path=self.config_path)
        # A registry run's model is the version it started from, recorded here (flows.registry.warm_start), not the
        # config's model.name_or_path (which names only what a new registry starts from).
        started = ("model.name_or_path",) if config.registry is not None and previous.get("registry") else ()
        return _changed_keys(previous, config.model_dump(mode="json"),
                             ignore=RESUMABLE_CHANGES + ("output_dir",) + started)


def _changed_keys(old: Any, new: Any, ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if dotted in ignore:
                continue
            out.extend(_changed_keys(old.get(key), new.get(key), ignore, dotted))
        return out
    return [] if old == new else [prefix or "(top level)"]


def remove_stale_temporaries(folder: Path) -> int:
    """Delete `.name.*.tmp` leftovers of a killed write under `folder`; returns how many were removed."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.rglob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)


RECORD_SHA256 = "record_sha256"


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of a record's content as JSON (keys sorted, its own `record_sha256` left out): what a round's
    metrics.json seals itself with, so an edit is found on the next resume."""
    body = json.loads(json.dumps({k: v for k, v in record.items() if k != RECORD_SHA256}, default=str))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its `record_sha256`."""
    return {**record, RECORD_SHA256: record_digest(record)}


def jsonable(obj: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays become floats and lists; NaN becomes None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
