"""The `simcse-curriculum` command line (typer): `run`, `serve`, `demo`, `init`, `validate`, `deploy`, `models`,
`prune`. The top room: it may import every other."""

from flows.cli.app import main

__all__ = ["main"]
