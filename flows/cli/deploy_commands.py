"""`simcse-curriculum deploy CONFIG --pool NAME --cron "0 2 * * *"`: a scheduled deployment on a process work
pool (flows.orchestration.deploy), which `prefect worker start --pool NAME` runs. Checks the config's inputs as
`validate`
does before anything is registered; needs a Prefect server (PREFECT_API_URL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.options import LogLevelOption, QuietOption, configure_logging

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (what was registered) on stdout.")]


def _env_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        out[key.strip()] = value
    return out


def register(app: typer.Typer) -> None:
    """Add `deploy` to the app."""

    @app.command("deploy")
    def deploy_command(
        config: Annotated[Path, typer.Argument(help="the run's YAML config")],
        pool: Annotated[str, typer.Option(help="the process work pool (created when missing); run it with "
                                               "`prefect worker start --pool NAME`")],
        cron: Annotated[str | None, typer.Option(help='a cron schedule, e.g. "0 2 * * *" (02:00 every day)')] = None,
        interval: Annotated[float | None, typer.Option(help="or: run every this many seconds")] = None,
        timezone: Annotated[str | None, typer.Option(help="time zone of the schedule, e.g. Europe/Paris "
                                                         "(default UTC)")] = None,
        name: Annotated[str | None, typer.Option(help="the deployment's name (default: the config file's "
                                                     "stem)")] = None,
        env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the flow's process (repeatable), "
                                                          "e.g. CUDA_VISIBLE_DEVICES=0")] = None,
        as_json: JsonOption = False,
        quiet: QuietOption = False,
        log_level: LogLevelOption = None,
    ) -> None:
        """Register CONFIG as a scheduled deployment on a Prefect process work pool (needs a Prefect server).

        Runs never overlap (one at a time; a run due meanwhile waits), and a run that did not finish is
        resumed by the next one. Each run writes into `<output_dir>/<scheduled start time>/`.
        """
        from flows.orchestration.deploy import deploy_scheduled, make_schedule  # at run time: the CLI starts fast
        from flows.rounds.validate import check_run  # at run time: the CLI starts fast
        from flows.run.config import load_config  # at run time: the CLI starts fast
        from flows.run.scheduled_folders import manual_run_warning  # at run time: the CLI starts fast

        if (cron is None) == (interval is None):
            raise typer.BadParameter("give exactly one of --cron or --interval")
        env_vars = _env_pairs(env)
        configure_logging(quiet, log_level)
        make_schedule(cron, interval, timezone)  # a typo in the schedule: one line, before the inputs are read
        from prefect.settings import PREFECT_API_URL  # Prefect: only where a flow runs

        if not PREFECT_API_URL.value():
            typer.echo("Cannot deploy to an ephemeral server: deployments need a Prefect server.\n"
                       "  prefect server start --host 127.0.0.1 &\n"
                       "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
                       f"  simcse-curriculum deploy {config} --pool {pool} "
                       f"{'--cron ' + repr(cron) if cron else f'--interval {interval:g}'}",
                       err=True)
            raise typer.Exit(2)
        cfg = load_config(config)

        if (warning := manual_run_warning(cfg, scheduled=True)) is not None:
            typer.echo(f"warning: {warning}", err=True)
        # Every input, read as a run reads it, before anything is registered: a night should not fail on a typo.
        # The check looks at a folder that does not exist: the runs' folders are created below output_dir.
        check_run(cfg.model_copy(update={"output_dir": Path(cfg.output_dir) / ".deploy-check"}))
        done = deploy_scheduled(config, cfg, pool, cron=cron, interval=interval, timezone=timezone, name=name,
                                env=env_vars)
        if as_json:
            sys.stdout.write(json.dumps(done.as_dict()) + "\n")
            return
        typer.echo(f"deployment: {done.deployment} ({done.deployment_id})")
        typer.echo(f"work pool: {done.work_pool} (process{', created' if done.work_pool_created else ''})")
        typer.echo(f"schedule: {done.schedule} ({done.timezone or 'UTC'}); one run at a time, a run due meanwhile "
                   f"waits")
        typer.echo(f"tags: {', '.join(done.tags)}")
        typer.echo(f"runs write into: {cfg.output_dir}/<scheduled start>/ (an unfinished one is resumed)")
        typer.echo(f"start a worker: prefect worker start --pool {done.work_pool}")
        typer.echo(f"run it now: prefect deployment run '{done.deployment}'")
