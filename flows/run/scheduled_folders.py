"""Where a scheduled run writes, so that a night that crashed is finished by the next one. No Prefect here: `validate`
reads it too; the scheduled flow itself is flows.orchestration.scheduled_runs.

A deployment (`serve`, `deploy`, `prefect.yaml`) runs the same config night after night. Each run writes into
`<output_dir>/<scheduled start, e.g. 20261127T020000Z>/`, and writes `finished.json` there when the flow has
returned. The next scheduled run looks at the latest such folder first:

- **not finished** (the process was killed: OOM, a reboot, a worker stopped; or the run failed): the run resumes
  it, exactly as `simcse-curriculum run` resumes a folder (finished rounds are skipped, a half-trained round
  continues from its checkpoint), and marks it finished at the end. Only the latest folder is resumed, so a
  night that was left behind is never picked up weeks later;
- **not finished, but with other settings** (the YAML was edited since) or **in use** by another command: it
  is left as it is, with a warning, and the run starts a new folder;
- **finished**, or no folder yet: a new folder, named by the run's scheduled start (`-2`, `-3`, ... when two
  runs share a second).

Why a marker rather than "every round is complete": what follows the last round (the report, tracking's last
logs) is part of the run too, and a run killed there must be finished by the next one. A folder written before
the marker existed is resumed once, which skips its rounds and only rebuilds its report.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dataio.folder_lock import FolderInUse, lock_folder
from flows.run.config import RunConfig
from flows.run.output_folder import BOOKKEEPING, RUN_CONFIG, is_run_config
from flows.run.rundir import RunDir

FINISHED = "finished.json"
TEACHER_VECTORS = "teacher_vectors"  # <output_dir>/teacher_vectors: the teacher's vectors, kept across the nights
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_FOLDER = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
_log = logging.getLogger("flows")


def stamp(when: datetime | None) -> str:
    """A scheduled start as a folder name (UTC); now when unknown."""
    moment = when.astimezone(timezone.utc) if when is not None else datetime.now(timezone.utc)
    return moment.strftime(STAMP_FORMAT)


def scheduled_folders(root: Path) -> list[Path]:
    """The scheduled runs' folders under `root`, oldest first (by name: the scheduled start, then the suffix)."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _FOLDER.match(path.name)
        if match and path.is_dir():
            found.append((match.group(1), int(match.group(2) or 1), path))
    return [path for *_, path in sorted(found)]


def is_finished(folder: Path) -> bool:
    return (folder / FINISHED).is_file()


@dataclass(frozen=True)
class ScheduledFolder:
    """The folder a scheduled run writes, and whether it resumes an earlier run's."""

    path: Path
    resumed: bool


def _new_folder(root: Path, when: datetime | None) -> Path:
    base = stamp(when)
    path, n = root / base, 1
    while path.exists():
        n += 1
        path = root / f"{base}-{n}"
    return path


def _why_not_resumed(folder: Path, config: RunConfig) -> str | None:
    """Why the unfinished `folder` cannot be continued with `config`, or None when it can."""
    if not is_run_config(folder / RUN_CONFIG):
        if all(p.name in BOOKKEEPING for p in folder.iterdir()):
            return None  # killed before the run recorded its config: nothing in it yet
        return "it holds no run's config.yaml"
    run_config = night_config(config, folder)
    changed = RunDir(folder).changed_settings(run_config)
    if changed:
        return (f"it was started with other settings ({', '.join(changed[:6])}); the config was edited since, "
                f"so it is left as it is")
    return None


@contextlib.contextmanager
def scheduled_run_folder(config: RunConfig, when: datetime | None) -> Iterator[ScheduledFolder]:
    """Choose the folder of a scheduled run of `config` due at `when` (see the module's docstring).

    A folder that is resumed stays locked (`dataio.folder_lock`) for the block, so a second run choosing at the
    same moment starts its own folder instead of failing on the lock.
    """
    root = Path(config.output_dir)
    folders = scheduled_folders(root)
    latest = folders[-1] if folders else None
    if latest is not None and not is_finished(latest):
        reason = _why_not_resumed(latest, config)
        with contextlib.ExitStack() as held:
            if reason is None:
                try:
                    held.enter_context(lock_folder(latest, "a scheduled simcse-curriculum run"))
                except FolderInUse as exc:
                    reason = str(exc)
            if reason is None:
                _log.info("%s: an earlier scheduled run did not finish; resuming it (finished rounds are kept)",
                         latest)
                yield ScheduledFolder(latest, resumed=True)
                return
        _log.warning("%s did not finish and is not resumed: %s; this run starts a new folder", latest, reason)
    yield ScheduledFolder(_new_folder(root, when), resumed=False)


def manual_run_warning(config: RunConfig, scheduled: bool = False) -> str | None:
    """A warning when `output_dir`, the folder whose subfolders scheduled runs write (`scheduled`: a deployment
    says so; else `retention` in the config, or such folders there), itself holds a run made by
    `simcse-curriculum run`; None otherwise. Said by `validate` (and `run`, which checks the same) and `deploy`."""
    root = Path(config.output_dir)
    if not is_run_config(root / RUN_CONFIG):
        return None
    if not (scheduled or config.retention is not None or scheduled_folders(root)):
        return None  # a run folder, resumed by `run`: nothing scheduled writes here
    return (f"{root} holds a run made by `simcse-curriculum run` ({RUN_CONFIG}, rounds/), and scheduled runs write "
            f"their folders beside it (<output_dir>/<start time>/): retention leaves that run as it is, and while a "
            f"`run` of {root} is running no scheduled run can start there (the folder is held); give runs by hand "
            f"an --output-dir of their own, and move this one out to keep output_dir a folder of scheduled runs")


def night_config(config: RunConfig, folder: Path) -> RunConfig:
    """`config` as the scheduled run in `folder` runs it: written there, and with a teacher, its vectors kept by text
    in `<output_dir>/teacher_vectors` across the nights (unless `teacher.vectors` names a folder), so a night encodes
    with the teacher only the texts no earlier night did."""
    night = config.model_copy(update={"output_dir": folder})
    if config.teacher is not None and config.teacher.vectors is None:
        vectors = str(Path(config.output_dir) / TEACHER_VECTORS)
        night = night.model_copy(update={"teacher": config.teacher.model_copy(update={"vectors": vectors})})
    return night
