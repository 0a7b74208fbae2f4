"""One night of a scheduled deployment (`serve`, `deploy`, `prefect.yaml`), without Prefect's scheduler: the run
in the folder flows.run.scheduled_folders chooses (a crashed night is resumed), `finished.json` when the flow has
returned, then retention; and the flow run's name.

Flow runs of the scheduled flow are named `<config file stem>-<scheduled start, UTC>`, e.g.
`domain_unlabeled-2026-11-27T0200Z` (`scheduled_run_name`).

`force` (the flow's parameter: `prefect deployment run NAME -p force=true`, or the UI's "Custom run") makes a
registry run go ahead when nothing is new, as `run --force` does; otherwise such a night is a recorded no-op.

`retention: {keep: N}` in the config prunes the older runs of `output_dir` once a night has finished
(`apply_retention`, flows.registry.retention).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dataio.atomic import atomic_write_json
from dataio.errors import InputError
from flows.orchestration.prefect_env import turn_off_telemetry
from flows.registry.retention import apply_prune, human, plan_prune
from flows.run.config import RunConfig, forced, load_config
from flows.run.rundir import RunDir
from flows.run.scheduled_folders import FINISHED, night_config, scheduled_run_folder

_log = logging.getLogger("flows")

# What the command line sets for a run (flows.cli.app.main); a worker starts the flow without it.
RUN_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_scheduled(config: str | os.PathLike, when: datetime | None, run: Callable[[RunConfig], dict[str, Any]],
                  force: bool = False) -> dict[str, Any]:
    """One scheduled run of the config file `config` due at `when`: `run(config)` (the curriculum flow) in the
    folder `scheduled_run_folder` chooses, then `finished.json`. `force`: run even when nothing is new
    (`flows.run.config.forced`). What the scheduled flow does, without Prefect."""
    set_run_environment()
    cfg = load_config(config)
    if force:
        cfg = forced(cfg)
    with scheduled_run_folder(cfg, when) as folder:
        summary = run(night_config(cfg, folder.path))
        mark_finished(folder.path, summary, folder.resumed)
        RunDir(folder.path).drop_spent_optimizer(cfg.rounds)  # finished: nothing resumes from it
    out = {**summary, "resumed": folder.resumed}
    if cfg.retention is not None:
        out["retention"] = apply_retention(Path(cfg.output_dir), cfg.retention.keep)
    return out


def apply_retention(root: Path, keep: int) -> dict[str, Any]:
    """Prune the runs in `root` (the config's `retention.keep`) after a scheduled run finished. The night's work
    is done and recorded by then, so a prune that fails is a warning, never a failed run: nothing it would
    have removed is needed, and `simcse-curriculum prune` can finish it by hand."""
    try:
        plan = apply_prune(plan_prune(root, keep))
    except (InputError, OSError) as exc:
        _log.warning("retention (keep %d) did not prune %s: %s; run `simcse-curriculum prune %s --keep %d` by hand",
                    keep, root, exc, root, keep)
        return {"keep": keep, "error": str(exc)}
    _log.info("retention (keep %d): removed %s in %d items from %d older runs of %s", keep, human(plan.bytes),
             len(plan.removals), len(plan.pruned_runs), root)
    return {"keep": keep, "pruned_runs": [p.name for p in plan.pruned_runs], "bytes": plan.bytes,
            "in_use": [p.name for p in plan.in_use], "notes": plan.notes}


def mark_finished(folder: Path, summary: dict[str, Any], resumed: bool) -> None:
    """Write `<folder>/finished.json`: the scheduled flow returned, so the next run starts a new folder."""
    from prefect.runtime import deployment, flow_run  # Prefect: only where a flow runs

    atomic_write_json(folder / FINISHED, {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "flow_run_id": flow_run.id, "flow_run_name": flow_run.name, "deployment": deployment.name,
        "resumed": resumed, "rounds_completed": summary.get("rounds_completed"),
    })


def scheduled_run_name() -> str:
    """`<config file stem>-<scheduled start, UTC to the minute>`: the flow-run name of a scheduled run.

    Called by Prefect when the run starts (the `flow_run_name` of the scheduled flow)."""
    from prefect.runtime import flow_run  # Prefect: only where a flow runs

    config = (flow_run.parameters or {}).get("config")
    name = Path(str(config)).stem if config else "simcse-curriculum"
    when = flow_run.scheduled_start_time
    moment = when.astimezone(timezone.utc) if when is not None else datetime.now(timezone.utc)
    return f"{name}-{moment:%Y-%m-%dT%H%MZ}"


def set_run_environment() -> None:
    """Outside the command line (a worker's flow process), the same defaults the CLI sets; the user's win.
    Telemetry goes off for the processes the run starts and for Prefect's client from here on (Prefect was
    imported before the flow began, so a worker's own settings decide its start-up)."""
    for key, value in RUN_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    turn_off_telemetry()
