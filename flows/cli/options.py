"""What the run, setup and deploy commands share: their logging options, the config overrides they take from
the command line, and the printout of a config check (`validate` and `run --dry-run`). No Prefect here: it is
imported only after the config is read (flows.cli.commands)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.orchestration.prefect_env import configure_prefect_logging


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (the run's summary) on stdout and "
                                                         "nothing else; logs stay on stderr.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr (and the "
                                                                 "result on stdout); = --log-level WARNING.")]
LogLevelOption = Annotated[LogLevel | None, typer.Option(
    "--log-level", case_sensitive=False, show_default=False,
    help="Log lines shown on stderr (default INFO: the run's own progress; DEBUG adds Prefect's own lines).")]


def configure_logging(quiet: bool, log_level: LogLevel | None) -> None:
    """Before Prefect is imported: the level its console shows (see flows.orchestration.prefect_env)."""
    if quiet and log_level is not None:
        raise typer.BadParameter("give --quiet or --log-level, not both (--quiet is --log-level WARNING)")
    configure_prefect_logging("WARNING" if quiet else log_level.value if log_level is not None else None)


def config_overrides(output_dir: Path | None, rounds: int | None, steps: int | None) -> dict[str, Any]:
    """The config keys a command's --output-dir, --rounds and --steps replace."""
    out: dict[str, Any] = {}
    if output_dir is not None:
        out["output_dir"] = str(output_dir.resolve())
    if rounds is not None:
        out["rounds"] = rounds
    if steps is not None:
        out["steps_per_round"] = steps
    return out


def print_check(check: Any, as_json: bool, estimate: Any = None) -> None:
    """The check's summary (and the estimate) on stdout, its warnings on stderr."""
    if as_json:
        payload: dict[str, Any] = {"ok": True, **check.summary()}
        if estimate is not None:
            payload["estimate"] = estimate.as_dict()
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        source = check.config.source
        typer.echo(f"config OK: {source}" if source else "config OK")
        for line in check.lines():
            typer.echo(f"  {line}")
        for note in check.notes:
            typer.echo(f"  note: {note}")
        if estimate is not None:
            for line in estimate.lines():
                typer.echo(line)
    sys.stdout.flush()
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
