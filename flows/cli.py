"""The `simcse-curriculum` command line.

Each package contributes its commands through a `register(app)` function, so the libraries stay free of
Prefect and this module only wires them together. Exit codes: 0 done, 1 an internal error (a traceback),
2 bad input or usage, 130 / 143 a run stopped by Ctrl-C / SIGTERM (one line with the command that resumes it,
flows.interrupts). Bad input (`InputError`, an invalid config), usage errors (an unknown command or
option, a missing argument, a bad option value), a folder in use by another command, a full disk and a
read-only or forbidden folder are one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from flows import interrupts

PROG = "simcse-curriculum"
COMMAND_MODULES = ("simcse.cli", "mining.cli", "flows.setup_commands", "flows.commands", "flows.registry_commands",
                   "flows.deploy_commands", "flows.retention_commands")

app = typer.Typer(
    name=PROG,
    help="Curriculum hard-negative mining for SimCSE sentence encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def package_version() -> str:
    try:
        return version(PROG)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {package_version()}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print the version and exit.")] = False,
) -> None:
    """Curriculum hard-negative mining for SimCSE sentence encoders."""


def _input_error_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from dataio.errors import UserError

    # Every error of ours a user can fix (input, config, triplet folder, curriculum state) is a UserError;
    # pydantic's own ValidationError (a model built from user values outside a config file) is one too.
    return UserError, ValidationError


def _command_line_error_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(errors with a message and an exit code, aborts) of typer's own click and of click itself.

    Typer >= 0.29 raises a vendored copy of click's exceptions; older typers raise click's.
    """
    errors: list[type[BaseException]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    try:
        from typer._click import exceptions as vendored

        errors.append(vendored.ClickException)  # its Exit and Abort are typer.Exit and typer.Abort
    except ImportError:
        pass
    try:
        import click

        errors.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(errors), tuple(aborts)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_command_line_error(exc: BaseException) -> int:
    """One line on stderr (`error: ...; see 'simcse-curriculum run --help'`); the exception's exit code."""
    code = int(getattr(exc, "exit_code", 1))
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help was printed, as click does; exit 2
        message = exc.format_message()  # type: ignore[attr-defined]
        if message.strip():  # plain click puts the help in the message; rich typer has printed it already
            print(message, file=sys.stderr)
        return code
    message = _one_line(exc.format_message()).rstrip(".")  # type: ignore[attr-defined]
    if message and message[0].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    hint = f"; see '{ctx.command_path} --help'" if code == 2 and ctx is not None else ""
    print(f"error: {message}{hint}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app; bad input and usage errors exit 2 with a one-line message; a run
    stopped by a signal exits 128 + its number with one line (flows.interrupts)."""
    interrupts.record_command(shlex.join([PROG, *(sys.argv[1:] if argv is None else argv)]))
    try:
        rc = _main(argv)
    except BaseException as exc:
        signum = interrupts.stopped_by(exc)
        if signum is None:
            raise
        return interrupts.announce(signum)
    signum = interrupts.received()
    # typer returns 130 for a KeyboardInterrupt; SystemExit(143) comes back as 143
    return interrupts.announce(signum) if signum is not None and rc != 0 else rc


def _main(argv: list[str] | None) -> int:
    from flows.prefect_env import turn_off_telemetry

    turn_off_telemetry()  # before any command imports Prefect or MLflow, for this process and those it starts
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    input_errors = _input_error_types()
    command_line_errors, aborts = _command_line_error_types()
    try:
        rc = app(args=argv, prog_name=PROG, standalone_mode=False)  # typer.Exit(code) is returned, not raised
    except input_errors as exc:
        return _fail(exc, _one_line(str(exc)))
    except FileNotFoundError as exc:
        return _fail(exc, f"{exc.filename}: no such file or folder; check the path")
    except command_line_errors as exc:
        return _show_command_line_error(exc)
    except aborts:
        if interrupts.received() is None:  # else main prints the stop's own line
            print("aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        from dataio.folder_lock import locked_folders
        from dataio.os_faults import describe_os_fault

        line = describe_os_fault(exc, locked_folders())  # a full disk, a read-only or forbidden folder
        if line is None:
            raise  # an internal error: the traceback is the report
        return _fail(exc, line)
    return rc if isinstance(rc, int) else 0


def _fail(exc: BaseException, line: str) -> int:
    """Print `error: <line>` on stderr (the traceback goes to the run's log, when one is open); exit code 2."""
    print(f"error: {line}", file=sys.stderr)
    run_log = sys.modules.get("flows.run_log")
    if run_log is not None:
        run_log.record_failure(exc, line)
    return 2


if __name__ == "__main__":
    sys.exit(main())
