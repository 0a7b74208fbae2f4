"""`simcse-curriculum init | validate`: a domain team's first steps, before any run (no Prefect here).

`init FILES... --out CONFIG` writes a commented config from the files' columns (`flows.rounds.scaffold`);
`validate CONFIG` checks every file, column, label and setting of a config without writing anything
(`flows.rounds.validate`), as `run --dry-run` does before it estimates the run's cost (`flows.rounds.estimate`).
The result goes to stdout; warnings to stderr (`warning: ...`); bad input is one line, exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.options import config_overrides, print_check


def register(app: typer.Typer) -> None:
    """Add `init` and `validate` to the app."""

    @app.command("init")
    def init_command(
        files: Annotated[list[str], typer.Argument(
            help="the team's files (.csv with , ; tab or |, .tsv, .jsonl, .json records, each optionally .gz, "
                 ".parquet, .txt, or a folder of them); a role is read from each file's columns, or given as "
                 "ROLE=PATH with ROLE corpus, pairs, nli, sts or eval-pairs", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="the config file to write")],
        output_dir: Annotated[str | None, typer.Option(
            "--output-dir", help="the run folder the config names (default: runs/<config name>, beside it)")] = None,
        model: Annotated[str, typer.Option(help="the base model: a folder, or the offline default")] =
            "all-MiniLM-L6-v2",
        force: Annotated[bool, typer.Option("--force", help="overwrite an existing config file")] = False,
        teacher: Annotated[str | None, typer.Option(
            "--teacher", help="a teacher folder the run uses to judge mined pairs (default: one found beside the "
                              "config, in models/all-mpnet-base-v2, is offered commented out)")] = None,
        columns: Annotated[list[str] | None, typer.Option(
            "--columns", help="the file columns to read, as a config's columns: KEY=COLUMN[,KEY=COLUMN...] or "
                              "'{KEY: COLUMN, ...}' with the keys text, id, domain (corpus), anchor, positive, "
                              "label (pairs), negative (NLI), sentence1, sentence2, score (STS) or label "
                              "(evaluation pairs); each applies to the files holding that column; repeatable",
            show_default=False)] = None,
    ) -> None:
        """Write a commented run config from a team's files (corpus, pairs, evaluation sets) that runs as is."""
        from flows.rounds.scaffold import scaffold  # at run time: the CLI starts fast

        path, roles, check = scaffold(files, out, output_dir=output_dir, model=model, force=force, teacher=teacher,
                                      columns=columns or ())
        typer.echo(f"wrote {path}")
        for role in roles:
            mapped = ", ".join(f"{k}={v}" for k, v in role.columns.items())
            typer.echo(f"  {role.role} {role.path}: {mapped} ({role.why})")
        choices = [c for role in roles for c in role.choices]
        if choices:
            typer.echo(f"choices (each also a comment in {path.name}, where it is changed):")
            for choice in choices:
                typer.echo(f"  {choice.line()}")
        typer.echo(f"next: simcse-curriculum run {path} --dry-run   (checks, and estimates time and disk)")
        for warning in check.warnings:
            typer.echo(f"warning: {warning}", err=True)

    @app.command("validate")
    def validate_command(
        config: Annotated[Path, typer.Argument(help="the run's YAML config")],
        output_dir: Annotated[Path | None, typer.Option("--output-dir", help="override output_dir")] = None,
        rounds: Annotated[int | None, typer.Option(help="override rounds")] = None,
        steps: Annotated[int | None, typer.Option("--steps", help="override steps_per_round")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the check as one JSON object")] = False,
    ) -> None:
        """Check a run config and every file it reads (columns, labels, rows), writing nothing."""
        from flows.rounds.validate import check_run  # at run time: the CLI starts fast
        from flows.run.config import load_config  # at run time: the CLI starts fast

        cfg = load_config(config, config_overrides(output_dir, rounds, steps))
        print_check(check_run(cfg), as_json)
