"""`simcse-curriculum run | serve | demo`: the flows from the command line.

Prefect is imported only after the config is read, because Prefect fixes its settings (PREFECT_HOME,
logging) on import: a run with no PREFECT_HOME or PREFECT_API_URL of the user's keeps Prefect's database
and results in `<output_dir>/.prefect` and talks to the ephemeral API (no server to start).

Output: the result (a few lines, or with `--json` one JSON object) is the only thing on stdout; logs and
progress go to stderr. `--log-level` sets what the logs show (INFO: the run's own lines; DEBUG: Prefect's
too); `--quiet` is `--log-level WARNING`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.options import (
    JsonOption,
    LogLevelOption,
    QuietOption,
    config_overrides,
    configure_logging,
    print_check,
)
from flows.orchestration.prefect_env import configure_library_caches, configure_prefect_home, start_line
from flows.orchestration.server_guard import guard_ephemeral_server
from flows.run.interrupts import stop_on_signals
from flows.run.output_folder import OutputFolder
from flows.run.progress import said_if_slow, say
from flows.run.run_log import attach_run_log

FLOWS = ("curriculum", "mine", "train", "evaluate")


def _plain(value: Any) -> Any:
    """`value` as plain JSON types (paths become strings, NaN and infinities null); TypeError if it has none."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def result_json(result: dict[str, Any]) -> str:
    """One line of JSON: every key of a flow's result whose value is JSON-able (the others are left out)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        try:
            out[str(key)] = _plain(value)
        except TypeError:
            continue
    return json.dumps(out)


def _report_line(summary: dict[str, Any]) -> None:
    if summary.get("noop"):  # a registry run with nothing new (flows.rounds.continuing)
        typer.echo(f"no-op: {summary.get('reason')}")
        typer.echo(f"run folder: {summary.get('run_dir')}")
        typer.echo(f"model to use: {summary.get('model_to_use')} (version {summary.get('current_version')})")
        return
    done = summary.get("rounds_completed") or []
    typer.echo(f"rounds completed: {len(done)} of {summary.get('rounds')}")
    typer.echo(f"run folder: {summary.get('run_dir')}")
    typer.echo(f"report: {summary.get('report')}")
    selection = summary.get("selection")
    if selection:  # the run's answer: which model to use (the starting model when no round beat it)
        typer.echo(f"model to use: {summary.get('model_to_use')}")  # a path; selection.json's is the folder's
        typer.echo(f"  {selection['note']}")
    registered = (summary.get("registry") or {}).get("registered")
    if registered:
        state = "promoted: now the current model" if registered["promoted"] is True else "not promoted"
        typer.echo(f"registered: version {registered['version']} of {registered['name']} (from version "
                   f"{registered['parent']}): {state}; {registered['reason']}")


@contextlib.contextmanager
def _run_environment(run_dir: Path) -> Iterator[None]:
    """Around a flow run from the command line: library caches in the run folder, the run's log file, and an
    ephemeral Prefect server that dies with this process and is out of reach of the terminal's Ctrl-C (the
    command's `stop_on_signals` stops the run; flows.run.interrupts)."""
    configure_library_caches(run_dir)
    # Prefect configures its logging when `prefect.main` is imported (a bare `import prefect` is lazy), and skips
    # the console handler if the root logger already has one of ours: so Prefect first, then the run log.
    import prefect.main  # noqa: F401

    attach_run_log(run_dir)
    guard_ephemeral_server()
    yield


def _run_flow(flows_module: Any, flow: str, cfg: Any, round_: int, model: str | None) -> dict[str, Any]:
    if flow == "curriculum":
        return flows_module.curriculum_flow(cfg)
    if flow == "mine":
        return flows_module.mine_flow(cfg, round_=round_, model=model)
    if flow == "train":
        return flows_module.train_flow(cfg, round_=round_, model=model)
    return flows_module.evaluate_flow(cfg, model=model)


def _print_result(flow: str, result: dict[str, Any], cfg: Any, round_: int, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(result_json(result) + "\n")
    elif flow == "curriculum":
        _report_line(result)
    elif flow == "mine":
        typer.echo(f"mined round {round_}: {sum(b.get('rows', 0) for b in result['bands'].values())} triplets "
                   f"in {Path(cfg.output_dir) / 'triplets'}")
    elif flow == "train":
        typer.echo(f"trained round {round_}: model in {Path(cfg.output_dir) / result['model']}")
    else:
        typer.echo(json.dumps(result["evaluation"]))
    sys.stdout.flush()


def _nothing_new(cfg: Any, config: Path, as_json: bool) -> bool:
    """A registry run with nothing new (flows.rounds.continuing): record the no-op, print it; True when it was one."""
    from flows.rounds.continuing import check_nothing_new, record_noop  # at run time: the CLI starts fast

    started = time.perf_counter()
    check = check_nothing_new(cfg)
    if check.reason is None:
        return False
    with OutputFolder(cfg.output_dir, f"simcse-curriculum run {config}"):
        summary = record_noop(cfg, check, started)
    _print_result("curriculum", summary, cfg, 0, as_json)
    return True


def run_command(
    config: Annotated[Path, typer.Argument(help="the run's YAML config (see configs/)")],
    flow: Annotated[str, typer.Option(help=f"which flow: {', '.join(FLOWS)}")] = "curriculum",
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="override output_dir")] = None,
    rounds: Annotated[int | None, typer.Option(help="override rounds")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="override steps_per_round")] = None,
    round_: Annotated[int, typer.Option("--round", help="mine/train flows: which round")] = 0,
    model: Annotated[str | None, typer.Option(help="mine/train/evaluate flows: model folder to use")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run",
        help="check every file and setting, estimate time and disk from a short calibration, write nothing",
    )] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="a run with a registry: run even when its current model has seen every input "
                        "(= registry.force; otherwise such a run is a recorded no-op)")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Run (or resume) a curriculum run: re-running the same command continues where it stopped."""
    from flows.rounds.estimate import estimate_run  # at run time: the CLI starts fast
    from flows.rounds.validate import check_run  # at run time: the CLI starts fast
    from flows.run.config import forced, load_config  # at run time: the CLI starts fast

    if flow not in FLOWS:
        raise typer.BadParameter(f"unknown flow {flow!r}; expected one of {', '.join(FLOWS)}", param_hint="--flow")
    configure_logging(quiet, log_level)
    cfg = load_config(config, config_overrides(output_dir, rounds, steps))
    if force:
        if cfg.registry is None:
            raise typer.BadParameter("applies to a run whose config names a registry (registry.path)",
                                     param_hint="--force")

        cfg = forced(cfg)
    if cfg.retention is not None:  # a run folder, not a folder of runs: nothing to prune here
        beside = "" if output_dir is not None else (
            f"; this run writes into {cfg.output_dir} itself, where scheduled runs keep their folders: give it "
            f"an --output-dir of its own")
        typer.echo(f"note: retention.keep applies to scheduled runs (serve, deploy); `run` prunes nothing (prune "
                   f"a folder of runs with `simcse-curriculum prune DIR --keep {cfg.retention.keep}`){beside}",
                   err=True)

    if flow == "curriculum" and cfg.registry is not None and not dry_run:
        with said_if_slow(f"registry {cfg.registry.path}: has its current version seen every input?"):
            nothing_new = _nothing_new(cfg, config, as_json)
        if nothing_new:
            return  # recorded as a no-op in seconds: no input check, no Prefect
    # Every file, column and label, before the run folder or Prefect is touched.
    with said_if_slow("checking the config and every input file (columns, labels, rows) before anything is "
                      "written"):
        check = check_run(cfg)
    if dry_run:
        print_check(check, as_json, estimate_run(check))
        return
    # Ctrl-C or SIGTERM from here on: one line with the command that resumes, exit 130 / 143 (flows.run.interrupts).
    with stop_on_signals(f"simcse-curriculum run {config}"), \
            OutputFolder(cfg.output_dir, f"simcse-curriculum run {config}"):  # ours only, one command at a time

        say(start_line(configure_prefect_home(cfg.output_dir)))
        with _run_environment(cfg.output_dir):
            # Prefect: imported after its home and logging are set
            from flows.orchestration import curriculum_flow as flows_module

            result = _run_flow(flows_module, flow, cfg, round_, model)
    _print_result(flow, result, cfg, round_, as_json)

def serve_command(
    config: Annotated[Path, typer.Argument(help="the run's YAML config")],
    cron: Annotated[str | None, typer.Option(help='a cron schedule, e.g. "0 2 * * *" (02:00 every day)')] = None,
    interval: Annotated[float | None, typer.Option(help="or: run every this many seconds")] = None,
    name: Annotated[str, typer.Option(help="the deployment's name")] = "scheduled",
    timezone: Annotated[str | None, typer.Option(help="time zone of the cron schedule (default UTC)")] = None,
    limit: Annotated[int, typer.Option(help="most runs at once (1: a late run waits for the one before)")] = 1,
    quiet: QuietOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Serve the curriculum flow as a Prefect deployment on a schedule (needs a Prefect server).

    Each scheduled run writes into `<output_dir>/<scheduled start time>/`, or resumes the latest such folder
    when its run did not finish. Start a server first:
    `prefect server start --host 127.0.0.1` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
    """
    from flows.run.config import load_config  # at run time: the CLI starts fast

    if (cron is None) == (interval is None):
        raise typer.BadParameter("give exactly one of --cron or --interval")
    configure_logging(quiet, log_level)
    cfg = load_config(config)
    # No PREFECT_HOME in the output folder: serving needs the user's own Prefect server (and profile), and a
    # refused serve must leave nothing there.
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL  # Prefect: only where a flow runs

    if not PREFECT_API_URL.value():
        typer.echo("Cannot schedule flows on an ephemeral server: schedules need a Prefect server.\n"
                   "  prefect server start --host 127.0.0.1 &\n"
                   "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
                   f"  simcse-curriculum serve {config} "
                   f"{'--cron ' + repr(cron) if cron else f'--interval {interval:g}'}",
                   err=True)
        raise typer.Exit(2)
    from flows.orchestration.curriculum_flow import scheduled_flow  # Prefect: only where a flow runs

    schedule: dict[str, Any] = {"cron": cron} if cron else {"interval": interval}
    if timezone and cron:
        from prefect.schedules import Cron  # Prefect: only where a flow runs

        schedule = {"schedule": Cron(cron, timezone=timezone)}
    if not quiet:
        when = f"cron {cron}" if cron else f"every {interval:g} s"
        typer.echo(f"serving deployment '{scheduled_flow.name}/{name}' ({when}); "
                   f"runs write into {cfg.output_dir}/<start time>/. Ctrl-C stops.", err=True)
    scheduled_flow.serve(name=name, parameters={"config": str(Path(config).resolve())},
                         entrypoint_type=EntrypointType.MODULE_PATH, print_starting_message=False, limit=limit,
                         **schedule)

def demo_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="where the run goes")] = Path("runs/demo"),
    rounds: Annotated[int | None, typer.Option(help="override the demo's 3 rounds")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="override the demo's 20 steps per round")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """The full curriculum flow on a built-in corpus (Python docstrings), offline; prints the report path."""
    from flows.cli.demo import demo_config  # at run time: the CLI starts fast

    configure_logging(quiet, log_level)
    overrides = {k: v for k, v in (("rounds", rounds), ("steps_per_round", steps)) if v is not None}
    cfg = demo_config(output_dir.resolve(), **overrides)
    with stop_on_signals(f"simcse-curriculum demo --output-dir {cfg.output_dir}"), \
            OutputFolder(cfg.output_dir, "simcse-curriculum demo"):
        configure_prefect_home(cfg.output_dir)
        if not quiet:
            typer.echo(f"demo: {cfg.rounds} rounds x {cfg.steps_per_round} steps on Python docstrings, "
                       f"output in {cfg.output_dir} (Prefect starts in ~10-20 s)", err=True)
        with _run_environment(cfg.output_dir):
            from flows.orchestration.curriculum_flow import curriculum_flow  # Prefect: only where a flow runs

            summary = curriculum_flow(cfg)
    _print_result("curriculum", summary, cfg, 0, as_json)


def register(app: typer.Typer) -> None:
    """Add `run`, `serve` and `demo` to the app."""
    app.command("run")(run_command)
    app.command("serve")(serve_command)
    app.command("demo")(demo_command)
