"""The `simcse-curriculum` command line.

Each package contributes its commands through a `register(app)` function, so the libraries stay free of
Prefect and this module only wires them together. Exit codes: 0 done, 1 an internal error (a traceback),
2 bad input or usage, 130 / 143 a run stopped by Ctrl-C / SIGTERM (one line with the command that resumes it,
flows.run.interrupts). Bad input (`InputError`, an invalid config), usage errors (an unknown command or
option, a missing argument, a bad option value), a folder in use by another command, a full disk and a
read-only or forbidden folder are one line on stderr, never a traceback; a config with several problems gets
one `error:` line for each (file, line, key), all at once.

Every command's help ends with example command lines (`EXAMPLES`, or the epilog its module gives it), and
shell completion is on (`simcse-curriculum --install-completion`).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from pydantic import ValidationError

from dataio.errors import UserError
from dataio.folder_lock import locked_folders
from dataio.os_faults import describe_os_fault
from flows.orchestration.prefect_env import turn_off_telemetry
from flows.run import interrupts

PROG = "simcse-curriculum"
COMMAND_MODULES = ("simcse.cli", "mining.cli", "flows.cli.setup_commands", "flows.cli.commands",
                   "flows.cli.registry_commands", "flows.cli.deploy_commands", "flows.cli.retention_commands")

app = typer.Typer(
    name=PROG,
    help="Curriculum hard-negative mining for SimCSE sentence encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def examples(*lines: str) -> str:
    """A help epilog of example command lines, one a line under "Examples:" (escaped where typer reads Rich
    markup, so `pip install 'simcse-curriculum[teacher]'` keeps its brackets)."""
    text = "\n".join(["Examples:", *(f"  {line}" for line in lines)])
    if app.rich_markup_mode == "rich":
        from rich.markup import escape  # rich: only in typer's rich mode

        text = escape(text)
    return text


# Each command's examples (the command path, as typed, -> 1 to 3 lines), unless its module gives an epilog.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "mine": ("simcse-curriculum mine --corpus corpus.txt --nli nli.csv --out triplets/",
             "simcse-curriculum mine --corpus corpus.txt --out triplets/ --round 1 --model runs/r0/model --json",
             "simcse-curriculum mine --corpus corpus.txt --out triplets/ --exclude-pairs false_negatives.csv"),
    "inspect": ("simcse-curriculum inspect triplets/ --plots plots/", "simcse-curriculum inspect triplets/ --json",
                "simcse-curriculum inspect triplets/ --html triplets.html"),
    "triplets upgrade": ("simcse-curriculum triplets upgrade triplets/", "simcse-curriculum triplets upgrade runs/old"),
    "evaluate": ("simcse-curriculum evaluate runs/sup/model --sts stsb/dev.tsv",
                 "simcse-curriculum evaluate MODEL --sts stsb/dev.tsv --pairs twitter/dev_pairs.tsv --json"),
    "train": ("simcse-curriculum train --unsup sentences.txt --out runs/unsup --steps 150",
              "simcse-curriculum train --nli nli.csv --out runs/sup --max-length 32 --eval-sts stsb/dev.tsv --json"),
    "teacher install": ("pip install 'simcse-curriculum[teacher]' && simcse-curriculum teacher install "
                        "--out models/all-mpnet-base-v2",),
    "run": ("simcse-curriculum run my.yaml --dry-run", "simcse-curriculum run my.yaml",
            "simcse-curriculum run configs/demo.yaml --json --quiet"),
    "serve": ('simcse-curriculum serve configs/domain_unlabeled.yaml --cron "0 2 * * *"',
              "simcse-curriculum serve my.yaml --interval 3600 --name hourly"),
    "demo": ("simcse-curriculum demo", "simcse-curriculum demo --json --quiet"),
    "init": ("simcse-curriculum init tweets.csv pairs.csv dev_pairs.csv --out my.yaml",),
    "validate": ("simcse-curriculum validate my.yaml", "simcse-curriculum validate my.yaml --json"),
    "deploy": ('simcse-curriculum deploy my.yaml --pool simcse-curriculum --cron "0 2 * * *" '
               "--timezone Europe/Paris",),
    "prune": ("simcse-curriculum prune runs/nightly --keep 7 --dry-run",
              "simcse-curriculum prune runs/nightly --keep 7"),
    "models list": ("simcse-curriculum models list registry/", "simcse-curriculum models list registry/ --json"),
    "models path": ("simcse-curriculum models path registry/", "simcse-curriculum models path registry/ 3"),
    "models promote": ("simcse-curriculum models promote registry/ 3",),
    "models rollback": ("simcse-curriculum models rollback registry/", "simcse-curriculum models rollback registry/ 2"),
    "models init": ("simcse-curriculum models init registry/ runs/first/rounds/0/model",),
    "models register": ("simcse-curriculum models register registry/ runs/domain",
                        "simcse-curriculum models register registry/ runs/domain --guard sts/dev --guard-tolerance 1"),
}


def _add_examples(typer_app: typer.Typer, prefix: str = "") -> None:
    """Give each registered command without an epilog its `EXAMPLES` (sub-apps included)."""
    for info in typer_app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        lines = EXAMPLES.get(f"{prefix}{name}")
        if lines and not info.epilog:
            info.epilog = examples(*lines)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _add_examples(group.typer_instance, f"{prefix}{group.name or group.typer_instance.info.name} ")


_add_examples(app)


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
    show_version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_print_version,
                                               help="Print the version and exit.")] = False,
) -> None:
    """Curriculum hard-negative mining for SimCSE sentence encoders."""


def _input_error_types() -> tuple[type[BaseException], ...]:
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
        from typer._click import exceptions as vendored  # optional: which click this typer raises differs by version

        errors.append(vendored.ClickException)  # its Exit and Abort are typer.Exit and typer.Abort
    except ImportError:
        pass
    try:
        import click  # optional: which click this typer raises differs by version

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
    stopped by a signal exits 128 + its number with one line (flows.run.interrupts)."""
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
    turn_off_telemetry()  # before any command imports Prefect or MLflow, for this process and those it starts
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    input_errors = _input_error_types()
    command_line_errors, aborts = _command_line_error_types()
    try:
        rc = app(args=argv, prog_name=PROG, standalone_mode=False)  # typer.Exit(code) is returned, not raised
    except input_errors as exc:
        problems = getattr(exc, "problems", None)  # dataio.errors.InputErrors: every problem of a config at once
        return _fail(exc, "\nerror: ".join(_one_line(p) for p in problems) if problems else _one_line(str(exc)))
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
        line = describe_os_fault(exc, locked_folders())  # a full disk, a read-only or forbidden folder
        if line is None:
            raise  # an internal error: the traceback is the report
        return _fail(exc, line)
    return rc if isinstance(rc, int) else 0


def _fail(exc: BaseException, line: str) -> int:
    """Print `error: <line>` on stderr (the traceback goes to the run's log, when one is open); exit code 2."""
    print(f"error: {line}", file=sys.stderr)
    run_log = sys.modules.get("flows.run.run_log")
    if run_log is not None:
        run_log.record_failure(exc, line)
    return 2


if __name__ == "__main__":
    sys.exit(main())
