"""`simcse-curriculum deploy`: register the scheduled flow on a Prefect process work pool, so that
`prefect worker start --pool NAME` runs it, the way Prefect teams run their other flows.

What a deployment gets (the same as the repository's `prefect.yaml`, for teams that use `prefect deploy`):

- the flow `simcse-curriculum-scheduled` (`flows.orchestration.curriculum_flow.scheduled_flow`) by its module path, so
a worker
  with this package installed runs it, whatever its working folder; the config's absolute path as the
  parameter `config`;
- a cron schedule (or an interval), in a time zone;
- **at most one run at a time** (deployment concurrency limit 1, collision strategy ENQUEUE). A run that comes
  due while the previous one still runs waits for it (Prefect shows it as `AwaitingConcurrencySlot`) and
  then runs. ENQUEUE rather than CANCEL_NEW because each night builds on the folder and the model the night
  before left: a late night is worth running once the slot frees (it resumes or starts after the previous
  one, never beside it), a manual `prefect deployment run` during a scheduled run is queued instead of
  silently cancelled, and a queued night with nothing left to do costs only Prefect's start-up. (A worker that
  died holding the slot gives it back when the slot's lease expires, 5 minutes by default.);
- tags `simcse-curriculum`, `config:<config file stem>`, `data:<corpus>` (the corpus file as `folder/stem`, or
  the built-in corpus's name), which every flow run of the deployment carries;
- flow runs named `<config file stem>-<scheduled start, UTC>` (`flows.orchestration.scheduled_runs.scheduled_run_name`);
- optional environment variables for the flow's process (`--env KEY=VALUE`, the work pool's job variables).

The work pool is created (type `process`, Prefect's default job template) when it does not exist; a pool of
another type is refused. Where each run writes and how a crashed night is resumed: `flows.orchestration.scheduled_runs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dataio.errors import InputError
from dataio.table_files import table_stem
from flows.run.config import RunConfig

POOL_TYPE = "process"
PRODUCT_TAG = "simcse-curriculum"
FLOW_ENTRYPOINT = "flows.orchestration.curriculum_flow.scheduled_flow"


def data_name(config: RunConfig) -> str:
    """A short name for what the run learns from: the built-in corpus's name, or the corpus (else NLI, else
    pairs) file as `parent folder/stem` (`twitter/unlabeled`)."""
    data = config.data
    if data.builtin:
        return data.builtin
    entry = data.corpus or data.nli or data.pairs
    if entry is None:  # pragma: no cover - the config's own validation requires one of them
        return "unknown"
    path = Path(entry.path)
    stem = path.name if path.is_dir() else table_stem(path)
    return f"{path.parent.name}/{stem}" if path.parent.name else stem


def deployment_tags(config: RunConfig, config_path: str | Path) -> list[str]:
    """The tags of a deployment of `config`, carried by each of its flow runs."""
    return [PRODUCT_TAG, f"config:{Path(config_path).stem}", f"data:{data_name(config)}"]


@dataclass
class Deployed:
    """What `deploy` registered."""

    deployment: str  # flow name / deployment name
    deployment_id: str
    work_pool: str
    work_pool_created: bool
    schedule: str
    timezone: str | None
    concurrency_limit: int
    collision_strategy: str
    tags: list[str]
    parameters: dict[str, Any]
    job_variables: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_schedule(cron: str | None, interval: float | None, timezone: str | None) -> Any:
    """The deployment's schedule; InputError (one line) for a bad cron string, time zone or interval."""
    from prefect.schedules import Cron, Interval  # Prefect: only where a flow runs

    if (cron is None) == (interval is None):
        raise InputError("give exactly one of --cron or --interval")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"--timezone: unknown time zone {timezone!r}; use an IANA name such as "
                             f"Europe/Paris or UTC") from None
    if cron is not None:
        try:
            return Cron(cron, timezone=timezone)
        except ValueError as exc:
            raise InputError(f"--cron: {exc}; five fields, e.g. \"0 2 * * *\" for 02:00 every day") from None
    if interval is None or interval <= 0:
        raise InputError("--interval: give a number of seconds above 0")
    return Interval(interval, timezone=timezone)


def ensure_process_pool(client: Any, name: str) -> bool:
    """The process work pool `name`, created with Prefect's default job template when missing (True then).
    InputError when a pool of that name has another type."""
    from prefect.client.schemas.actions import WorkPoolCreate  # Prefect: only where a flow runs
    from prefect.exceptions import ObjectNotFound  # Prefect: only where a flow runs
    from prefect.workers.process import ProcessWorker  # Prefect: only where a flow runs

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE,
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        return True
    if pool.type != POOL_TYPE:
        raise InputError(f"work pool {name!r} is of type {pool.type!r}; deploy registers on a process pool "
                         f"(the run needs this package and the run folders' disk): name another --pool")
    return False


def deploy_scheduled(config_path: str | Path, config: RunConfig, pool: str, *, cron: str | None = None,
                     interval: float | None = None, timezone: str | None = None, name: str | None = None,
                     env: dict[str, str] | None = None) -> Deployed:
    """Create or update the deployment of `config` (read from `config_path`) on the process pool `pool`.

    Needs a Prefect server (PREFECT_API_URL); the caller checks the config's inputs first."""
    from prefect.client.orchestration import get_client  # Prefect: only where a flow runs

    # Prefect: only where a flow runs
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType  # Prefect: only where a flow runs

    from flows.orchestration.curriculum_flow import scheduled_flow  # Prefect: only where a flow runs

    config_path = Path(config_path).resolve()
    schedule = make_schedule(cron, interval, timezone)
    name = name or config_path.stem
    tags = deployment_tags(config, config_path)
    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    job_variables = {"env": dict(env)} if env else {}
    with get_client(sync_client=True) as client:
        created = ensure_process_pool(client, pool)
    deployment = scheduled_flow.to_deployment(
        name=name, schedule=schedule, concurrency_limit=limit, parameters={"config": str(config_path)}, tags=tags,
        description=f"simcse-curriculum {config_path.name}: one curriculum run per scheduled time in "
                    f"{config.output_dir}/<start time>/; a run that did not finish is resumed by the next",
        entrypoint_type=EntrypointType.MODULE_PATH, work_pool_name=pool, job_variables=job_variables)
    deployment_id = deployment.apply(work_pool_name=pool)
    return Deployed(deployment=f"{scheduled_flow.name}/{name}", deployment_id=str(deployment_id), work_pool=pool,
                    work_pool_created=created, schedule=f"cron {cron}" if cron else f"every {interval:g} s",
                    timezone=timezone, concurrency_limit=1, collision_strategy=limit.collision_strategy.value,
                    tags=tags, parameters={"config": str(config_path)}, job_variables=job_variables)
