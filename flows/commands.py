"""`simcse-curriculum run | serve | demo`: the flows from the command line.

Prefect is imported only after the config is read, because Prefect fixes its settings (PREFECT_HOME)
on import: a run with no PREFECT_HOME or PREFECT_API_URL of the user's keeps Prefect's database and
results in `<output_dir>/.prefect` and talks to the ephemeral API (no server to start).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

FLOWS = ("curriculum", "mine", "train", "evaluate")


def _overrides(output_dir: Optional[Path], rounds: Optional[int], steps: Optional[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if output_dir is not None:
        out["output_dir"] = str(output_dir.resolve())
    if rounds is not None:
        out["rounds"] = rounds
    if steps is not None:
        out["steps_per_round"] = steps
    return out


@contextlib.contextmanager
def _exit_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so exit handlers run and Prefect's ephemeral server stops with us.

    During a flow Prefect handles SIGTERM itself (the run is marked crashed), then restores the previous
    handler and re-sends the signal; with Python's default handler the process would die at once and
    leave the ephemeral API's server process behind.
    """
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_line(summary: dict[str, Any]) -> None:
    done = summary.get("rounds_completed") or []
    typer.echo(f"rounds completed: {len(done)} of {summary.get('rounds')}")
    typer.echo(f"run folder: {summary.get('run_dir')}")
    typer.echo(f"report: {summary.get('report')}")


def _run_flow(flows_module: Any, flow: str, cfg: Any, round_: int, model: Optional[str]) -> None:
    if flow == "curriculum":
        _report_line(flows_module.curriculum_flow(cfg))
    elif flow == "mine":
        result = flows_module.mine_flow(cfg, round_=round_, model=model)
        typer.echo(f"mined round {round_}: {sum(b.get('rows', 0) for b in result['bands'].values())} triplets "
                   f"in {Path(cfg.output_dir) / 'triplets'}")
    elif flow == "train":
        result = flows_module.train_flow(cfg, round_=round_, model=model)
        typer.echo(f"trained round {round_}: model in {result['model']}")
    else:
        import json

        result = flows_module.evaluate_flow(cfg, model=model)
        typer.echo(json.dumps(result["evaluation"]))


def register(app: typer.Typer) -> None:
    """Add `run`, `serve` and `demo` to the app."""

    @app.command("run")
    def run_command(
        config: Path = typer.Argument(..., help="the run's YAML config (see configs/)"),
        flow: str = typer.Option("curriculum", help=f"which flow: {', '.join(FLOWS)}"),
        output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="override output_dir"),
        rounds: Optional[int] = typer.Option(None, help="override rounds"),
        steps: Optional[int] = typer.Option(None, "--steps", help="override steps_per_round"),
        round_: int = typer.Option(0, "--round", help="mine/train flows: which round"),
        model: Optional[str] = typer.Option(None, help="mine/train/evaluate flows: model folder to use"),
    ) -> None:
        """Run (or resume) a curriculum run: re-running the same command continues where it stopped."""
        from flows.config import load_config
        from flows.prefect_env import configure_prefect_home

        if flow not in FLOWS:
            raise typer.BadParameter(f"unknown flow {flow!r}; expected one of {', '.join(FLOWS)}")
        cfg = load_config(config, _overrides(output_dir, rounds, steps))
        configure_prefect_home(cfg.output_dir)
        from flows import curriculum_flow as flows_module

        with _exit_cleanly_on_sigterm():
            _run_flow(flows_module, flow, cfg, round_, model)

    @app.command("serve")
    def serve_command(
        config: Path = typer.Argument(..., help="the run's YAML config"),
        cron: Optional[str] = typer.Option(None, help='a cron schedule, e.g. "0 2 * * *" (02:00 every day)'),
        interval: Optional[float] = typer.Option(None, help="or: run every this many seconds"),
        name: str = typer.Option("scheduled", help="the deployment's name"),
        timezone: Optional[str] = typer.Option(None, help="time zone of the cron schedule (default UTC)"),
        limit: int = typer.Option(1, help="most runs at once (1: a late run waits for the one before)"),
    ) -> None:
        """Serve the curriculum flow as a Prefect deployment on a schedule (needs a Prefect server).

        Each scheduled run writes into `<output_dir>/<scheduled start time>/`. Start a server first:
        `prefect server start --host 127.0.0.1` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
        """
        from flows.config import load_config
        from flows.prefect_env import configure_prefect_home

        if (cron is None) == (interval is None):
            raise typer.BadParameter("give exactly one of --cron or --interval")
        cfg = load_config(config)
        if not os.environ.get("PREFECT_API_URL"):
            configure_prefect_home(cfg.output_dir)
        from prefect.deployments.runner import EntrypointType
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            typer.echo("Cannot schedule flows on an ephemeral server: schedules need a Prefect server.\n"
                       "  prefect server start --host 127.0.0.1 &\n"
                       "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
                       f"  simcse-curriculum serve {config} {'--cron ' + repr(cron) if cron else f'--interval {interval:g}'}",
                       err=True)
            raise SystemExit(2)  # flows.cli.main drops typer.Exit codes (standalone_mode=False)
        from flows.curriculum_flow import scheduled_flow

        schedule: dict[str, Any] = {"cron": cron} if cron else {"interval": interval}
        if timezone and cron:
            from prefect.schedules import Cron

            schedule = {"schedule": Cron(cron, timezone=timezone)}
        typer.echo(f"serving deployment '{scheduled_flow.name}/{name}' ({'cron ' + cron if cron else f'every {interval:g} s'}); "
                   f"runs write into {cfg.output_dir}/<start time>/. Ctrl-C stops.")
        scheduled_flow.serve(name=name, parameters={"config": str(Path(config).resolve())},
                             entrypoint_type=EntrypointType.MODULE_PATH, print_starting_message=False, limit=limit,
                             **schedule)

    @app.command("demo")
    def demo_command(
        output_dir: Path = typer.Option(Path("runs/demo"), "--output-dir", help="where the run goes"),
        rounds: Optional[int] = typer.Option(None, help="override the demo's 3 rounds"),
        steps: Optional[int] = typer.Option(None, "--steps", help="override the demo's 40 steps per round"),
    ) -> None:
        """The full curriculum flow on a built-in corpus (Python docstrings), offline; prints the report path."""
        from flows.demo import demo_config
        from flows.prefect_env import configure_prefect_home

        overrides = {k: v for k, v in (("rounds", rounds), ("steps_per_round", steps)) if v is not None}
        cfg = demo_config(output_dir.resolve(), **overrides)
        configure_prefect_home(cfg.output_dir)
        typer.echo(f"demo: {cfg.rounds} rounds x {cfg.steps_per_round} steps on Python docstrings, "
                   f"output in {cfg.output_dir} (Prefect starts in ~10-20 s)", err=True)
        from flows.curriculum_flow import curriculum_flow

        with _exit_cleanly_on_sigterm():
            summary = curriculum_flow(cfg)
        _report_line(summary)
        sys.stdout.flush()
