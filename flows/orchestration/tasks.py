"""Prefect tasks: thin wrappers that add orchestration (retries, caches, tags, logs) to the plain step functions
(`flows.run.inputs`, `flows.rounds.mine_step`, `flows.rounds.schedule_step`, `flows.rounds.train_step`,
`flows.rounds.records`).

- Retries only for transient faults (I/O hiccups, lost connections); bad input (`InputError`, a config
  or state error) fails at once, since running it again cannot help.
- Cache keys are content fingerprints (model folder bytes, input file bytes, settings), never the flow
  run id, so a resumed or repeated run reuses finished work and a changed input never hits a stale entry.
  A task whose output file has gone is re-run (`refresh_cache`), see `bind_tasks`.
- Results are persisted as JSON under `<run>/.prefect/results` (no pickles to load on resume).
- Tasks that hold the accelerator carry the tag `gpu`: `prefect concurrency-limit create gpu 1` makes
  concurrent flow runs take turns on it (on a real server; tags are inert on the ephemeral API).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE, CachePolicy

from flows.rounds.mine_step import mine_round
from flows.rounds.records import finish_round
from flows.rounds.report import build_report
from flows.rounds.schedule_step import schedule_round
from flows.rounds.train_step import train_round
from flows.run.config import OPERATIONAL_MINING, RunConfig
from flows.run.fingerprint import combine, model_fingerprint
from flows.run.inputs import evaluate_model, prepare_inputs
from flows.run.progress import forwarded
from flows.run.rundir import RunDir
from flows.run.step_records import Evaluation, MinedRound, RoundPlan, RunInputs, StepRecord, TrainedRound

GPU_TAG = "gpu"
CACHE_VERSION = "flows-cache-v2"  # bump when a task's output format changes, to drop old entries (v2: records)


@contextlib.contextmanager
def run_logging() -> Iterator[None]:
    """For the block, the step functions' lines (the `flows` logger) are this flow or task run's: Prefect's logger
    for the run shows them on the terminal and sends them to the run's logs in the UI. The steps themselves log
    with Python's logging and know nothing of Prefect."""
    with forwarded(("flows",), get_run_logger()):
        yield


def is_transient(exc: BaseException | None) -> bool:
    """Faults worth retrying: the same call may succeed a moment later."""
    if exc is None or isinstance(exc, ValueError):  # InputError, ConfigError, StateError are ValueErrors
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False  # a missing or forbidden path will still be missing or forbidden
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return False  # a full disk or a read-only file system waits for a person, not for 5 s
    return isinstance(exc, (OSError, ConnectionError, TimeoutError))


def _retry_transient(task_: Any, task_run: Any, state: Any) -> bool:
    exc = getattr(state, "data", None)
    return is_transient(exc if isinstance(exc, BaseException) else None)


def _key(kind: str, *parts: Any) -> str:
    return combine(CACHE_VERSION, kind, *parts)


def _evaluate_key(_ctx: Any, inputs: dict[str, Any]) -> str:
    config: RunConfig = inputs["config"]
    return _key("evaluate", model_fingerprint(inputs["model_path"]), inputs["inputs"].eval_fingerprint,
                config.model.model_dump(mode="json", exclude={"name_or_path"}), config.eval.dev_metric)


def _mine_key(_ctx: Any, inputs: dict[str, Any]) -> str:
    config: RunConfig = inputs["config"]
    mining = config.mining.model_dump(mode="json", exclude=set(OPERATIONAL_MINING))  # shards: the same triplets
    return _key("mine", model_fingerprint(inputs["model_path"]), inputs["inputs"].fingerprint, mining,
                config.model.model_dump(mode="json", exclude={"name_or_path"}), config.seed, inputs["round_"],
                str(inputs["run_root"]))


def _train_key(_ctx: Any, inputs: dict[str, Any]) -> str:
    config: RunConfig = inputs["config"]
    plan: RoundPlan = inputs["plan"]
    return _key("train", model_fingerprint(inputs["model_path"]), plan.manifest_sha256,
                plan.state, config.training.model_dump(mode="json", exclude_unset=True),
                config.model.model_dump(mode="json", exclude={"name_or_path"}), config.steps_per_round,
                config.batch_size, config.seed, inputs["round_"], str(inputs["run_root"]))


def _step(body: Callable[..., Any]) -> Callable[..., Any]:
    """A task body: its step's log lines go to the task run's log (`run_logging`), and its record carries the
    body's wall time (`StepRecord.task_seconds`; a dict: its key), so the flow can measure Prefect's overhead.
    The signature is the body's (`functools.wraps`): Prefect reads the parameters from it."""
    @functools.wraps(body)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        with run_logging():
            result = body(*args, **kwargs)
        seconds = time.perf_counter() - start
        if isinstance(result, StepRecord):
            return result.with_task_seconds(seconds)
        result["task_seconds"] = seconds
        return result

    return timed


def _step_task(name: str, cache_key: Callable[..., str] | None = None) -> Callable[[Callable[..., Any]], Any]:
    """A Prefect task around a step body (`_step`): retried on transient faults only; with `cache_key`, its JSON
    result is kept under that content key (a resumed or repeated run reuses it), else never cached."""
    policy = CachePolicy.from_cache_key_fn(cache_key) if cache_key is not None else NO_CACHE
    options: dict[str, Any] = {"persist_result": True, "result_serializer": "json"} if cache_key is not None else {}

    def wrap(body: Callable[..., Any]) -> Any:
        return task(name=name, cache_policy=policy, retries=2, retry_delay_seconds=5,
                    retry_condition_fn=_retry_transient, **options)(_step(body))

    return wrap


@_step_task("prepare-inputs")
def prepare_inputs_task(config: RunConfig, run_root: Path) -> RunInputs:
    """Resolve the input files (building the built-in corpus if asked) and fingerprint them."""
    return prepare_inputs(config, RunDir(Path(run_root)))


@_step_task("evaluate", _evaluate_key)
def evaluate_task(model_path: str, inputs: RunInputs, config: RunConfig) -> Evaluation:
    return evaluate_model(model_path, inputs, config)


@_step_task("mine", _mine_key)
def mine_task(model_path: str, inputs: RunInputs, config: RunConfig, run_root: Path,
              round_: int) -> MinedRound:
    return mine_round(model_path, inputs, config, RunDir(Path(run_root)), round_)


@_step_task("schedule")
def schedule_task(config: RunConfig, run_root: Path, round_: int) -> RoundPlan:
    """Open the round in the curriculum (mixture and alpha from the measured band difficulties)."""
    return schedule_round(config, RunDir(Path(run_root)), round_)


@_step_task("train", _train_key)
def train_task(model_path: str, plan: RoundPlan, config: RunConfig, run_root: Path,
               round_: int) -> TrainedRound:
    return train_round(model_path, plan, config, RunDir(Path(run_root)), round_)


@_step_task("finish-round")
def finish_round_task(config: RunConfig, run_root: Path, round_: int, mined: MinedRound,
                      trained: TrainedRound, evaluated: Evaluation) -> dict[str, Any]:
    """Close the round in the curriculum (advance or hold), write state.json and metrics.json."""
    return finish_round(config, RunDir(Path(run_root)), round_, mined, trained, evaluated)


@_step_task("report")
def report_task(run_root: Path) -> dict[str, Any]:
    return {"report": str(build_report(Path(run_root)))}


@dataclass(frozen=True)
class BoundTasks:
    """The tasks with their results stored (and cache entries kept) under one run directory."""

    prepare: Any
    evaluate: Any
    mine: Any
    schedule: Any
    train: Any
    finish: Any
    report: Any


def gpu_limit_exists() -> bool:
    """Whether the Prefect API has a concurrency limit on the `gpu` tag.

    A tagged task run acquires a slot per tag through the API even when no limit exists, which was most of a
    demo round's orchestration time (docs/benchmarks.md, "Prefect overhead"). So the accelerator tasks
    carry the tag only when a limit makes it mean something. When the answer is unknown, tag (the limit
    is the safe side).
    """
    from prefect.client.orchestration import get_client  # Prefect: only where a flow runs
    from prefect.exceptions import ObjectNotFound  # Prefect: only where a flow runs

    try:
        with get_client(sync_client=True) as client:
            for read in (lambda: client.read_global_concurrency_limit_by_name(f"tag:{GPU_TAG}"),
                         lambda: client.read_concurrency_limit_by_tag(GPU_TAG)):
                try:
                    read()
                    return True
                except ObjectNotFound:
                    continue
    except Exception:  # noqa: BLE001 - an API we cannot ask: keep the tag
        return True
    return False


def bind_tasks(run: RunDir, gpu_tag: bool | None = None) -> BoundTasks:
    """The tasks with the run's result storage; mine, train and evaluate tagged `gpu` when a concurrency
    limit on that tag exists (`gpu_tag` None: ask the API once)."""
    storage = Path(run.prefect_results)  # a Path: Prefect uses a local file system there, no block to save
    tags = {GPU_TAG} if (gpu_limit_exists() if gpu_tag is None else gpu_tag) else set()

    def bind(t: Any, accelerator: bool = False) -> Any:
        return t.with_options(result_storage=storage, tags=tags if accelerator else set())

    return BoundTasks(prepare=prepare_inputs_task, evaluate=bind(evaluate_task, True),
                      mine=bind(mine_task, True), schedule=schedule_task, train=bind(train_task, True),
                      finish=finish_round_task, report=report_task)
