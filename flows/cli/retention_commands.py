"""`simcse-curriculum prune OUTPUT_DIR --keep N [--dry-run] [--json]`: retention (flows.registry.retention)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add `prune` to the app."""

    @app.command("prune")
    def prune_command(
        output_dir: Annotated[Path, typer.Argument(help="the folder that holds the runs (a scheduled deployment's "
                                                        "output_dir)")],
        keep: Annotated[int, typer.Option("--keep", help="how many of the latest runs that trained to keep whole")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be removed, with sizes; remove "
                                                                "nothing")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    ) -> None:
        """Keep the last N runs and every promoted version; free older runs' triplets, caches and other models."""
        from flows.registry.retention import apply_prune, human, plan_prune  # at run time: the CLI starts fast

        plan = plan_prune(output_dir, keep)
        if not dry_run:
            plan = apply_prune(plan)
        if as_json:
            sys.stdout.write(json.dumps({"dry_run": dry_run, **plan.as_dict()}) + "\n")
            return
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"{verb} {human(plan.bytes)} in {len(plan.removals)} items from {len(plan.pruned_runs)} runs "
                   f"of {plan.folder}; kept whole: {', '.join(p.name for p in plan.kept) or 'none'}")
        for removal in plan.removals:
            typer.echo(f"  {human(removal.bytes):>9}  {removal.path.relative_to(plan.folder)}  ({removal.why})")
        for run in plan.in_use:
            typer.echo(f"  in use, left alone: {run.name}")
        for note in plan.notes:
            typer.echo(f"  note: {note}")
