"""The `simcse-curriculum` command line.

Each package contributes its commands through a `register(app)` function, so the libraries stay free of
Prefect and this module only wires them together. Bad input (`InputError`, an invalid config) becomes one
line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

COMMAND_MODULES = ("simcse.cli", "mining.cli", "flows.commands")

app = typer.Typer(
    name="simcse-curriculum",
    help="Curriculum hard-negative mining for SimCSE sentence encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _input_error_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from simcse.errors import InputError

    types: list[type[BaseException]] = [InputError, ValidationError]
    from curriculum.errors import CurriculumError

    types.append(CurriculumError)  # config, triplet data and state errors are all user-fixable
    return tuple(types)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning bad input into exit code 2 with a one-line message."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    errors = _input_error_types()
    try:
        rc = app(args=argv, standalone_mode=False)  # a typer.Exit(code) is returned, not raised, here
    except errors as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: no such file or folder; check the path", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
