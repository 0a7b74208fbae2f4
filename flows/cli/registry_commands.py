"""`simcse-curriculum models init | register | list | path | promote | rollback`: the model registry.

REGISTRY is the registry's folder (the embedded store: mlflow.db + artifacts/) or an MLflow server's URI
(http://127.0.0.1:5000). No Prefect here: these read and change the registry directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from dataio.errors import InputError

models_app = typer.Typer(name="models", help="The model registry: versions, the current model, promotion.",
                         no_args_is_help=True, add_completion=False)

RegistryArg = Annotated[str, typer.Argument(help="the registry's folder or an MLflow server URI")]
NameOption = Annotated[str | None, typer.Option("--name", help="the registered model (default: the only one in "
                                                               "the store)")]


def _open(registry: str, name: str | None) -> Any:
    from flows.registry.model_registry import open_registry  # at run time: the CLI starts fast

    return open_registry(registry, name)


def _warn(line: str) -> None:
    """A warning on stderr (stdout stays what the command prints: a path, a table, JSON)."""
    typer.echo(f"warning: {line}", err=True)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _table(versions: list[Any]) -> list[str]:
    """One line per version: number, parent, created, current, promoted, the deciding metric, the others."""
    decides = next((v.gate.get("metric") for v in reversed(versions) if v.gate.get("metric")), None)
    head = f"{'version':>7}  {'parent':>6}  {'created':20}  {'current':7}  {'promoted':8}  " \
           f"{(decides or 'dev') + ' (decides)':>24}  other metrics / reason"
    lines = [head]
    for v in versions:
        others = ", ".join(f"{k} {_fmt(x)}" for k, x in v.metrics.items() if k != decides)
        lines.append(f"{v.version:>7}  {_fmt(v.parent):>6}  {v.created:20}  {'*' if v.current else '':7}  "
                     f"{v.promoted:8}  {_fmt(v.metrics.get(decides) if decides else None):>24}  "
                     f"{others}{' | ' if others else ''}{v.reason}")
    return lines


@models_app.command("list")
def list_command(registry: RegistryArg, name: NameOption = None,
                 as_json: Annotated[bool, typer.Option("--json", help="one JSON list on stdout")] = False) -> None:
    """Every version: parent, created, current, promoted (and why), metrics (which one decides)."""
    reg = _open(registry, name)
    versions = reg.versions()
    if as_json:
        sys.stdout.write(json.dumps([v.as_dict() for v in versions]) + "\n")
        return
    typer.echo(f"{reg.name} in {reg.store}")
    for line in _table(versions):
        typer.echo(line)


@models_app.command("path")
def path_command(registry: RegistryArg, version: Annotated[int | None, typer.Argument(
                     help="the version (default: the current one)")] = None,
                 name: NameOption = None,
                 dest: Annotated[Path | None, typer.Option(help="where to download the files when the registry "
                                                                "keeps them on a server")] = None) -> None:
    """Print a local folder that `SentenceTransformer(path)` loads: the current version, or VERSION (its files
    checked against the sha256 recorded with the version)."""
    from flows.registry.mlflow_store import MlflowStore  # at run time: the CLI starts fast
    from flows.registry.model_registry import ModelRegistry  # at run time: the CLI starts fast
    from flows.registry.versions import read_local_version  # at run time: the CLI starts fast

    store = MlflowStore.at(registry)
    # read from the registry's own records, without MLflow (flows.registry.versions.read_local_version)
    if store.is_local:
        found, target = read_local_version(store, name, version)
        typer.echo(str(ModelRegistry(store, found).verified_path(target, warn=_warn)))
        return
    reg = _open(registry, name)
    target = reg.version(version) if version is not None else reg.current()
    if target is None:
        raise InputError(f"registry {reg.store}: {reg.name!r} has no current version")
    typer.echo(str(reg.verified_path(target, dest.resolve() if dest else None, warn=_warn)))


@models_app.command("promote")
def promote_command(registry: RegistryArg, version: Annotated[int, typer.Argument(help="the version to make current")],
                    name: NameOption = None) -> None:
    """Make VERSION the current model (a person's decision: the gate is not asked)."""
    _move_current(registry, name, lambda reg: reg.promote(version, warn=_warn))


@models_app.command("rollback")
def rollback_command(registry: RegistryArg, version: Annotated[int | None, typer.Argument(
                         help="the version to go back to (default: the current version's parent)")] = None,
                     name: NameOption = None) -> None:
    """Make the current version's parent (or VERSION) current again."""
    _move_current(registry, name, lambda reg: reg.rollback(version, warn=_warn))


def _move_current(registry: str, name: str | None, move: Callable[[Any], Any]) -> None:
    """`promote` and `rollback`: open the registry, `move(registry)` its alias, say which version is current now."""
    reg = _open(registry, name)
    before = reg.current_number()
    moved = move(reg)
    typer.echo(f"{reg.name}: current is version {moved.version} (was {before})")


@models_app.command("init")
def init_command(registry: RegistryArg,
                 model: Annotated[Path, typer.Argument(help="the model folder the registry starts from")],
                 name: Annotated[str, typer.Option("--name", help="the registered model's name")] = "simcse-encoder"
                 ) -> None:
    """Start a registry: MODEL becomes version 1 and current (nothing changes if NAME is already there)."""
    from flows.registry.mlflow_store import MlflowStore  # at run time: the CLI starts fast
    from flows.registry.model_registry import ModelRegistry  # at run time: the CLI starts fast

    reg = ModelRegistry(MlflowStore.at(registry), name)
    current = reg.ensure_started(model.resolve())
    typer.echo(f"{reg.name} in {reg.store}: current is version {current.version} ({reg.local_path(current)})")


@models_app.command("register")
def register_command(
    registry: RegistryArg,
    run_dir: Annotated[Path, typer.Argument(help="a finished run's folder (its output_dir)")],
    name: NameOption = None,
    metric: Annotated[str | None, typer.Option(help="the metric that decides, sts/<stem> or pairs/<stem> "
                                                    "(default: the run's registry.gate.metric, else its dev "
                                                    "metric)")] = None,
    min_gain: Annotated[float | None, typer.Option(help="points the candidate must gain over the version the run "
                                                        "started from (scores are x100; default: the run's "
                                                        "registry.gate.min_gain, else its eval.min_improvement)")]
    = None,
    guard: Annotated[str | None, typer.Option(help="a metric that must not fall by more than --guard-tolerance "
                                                   "(default: the run's registry.gate.guard)")] = None,
    guard_tolerance: Annotated[float | None, typer.Option(help="points the guard may fall (default: the run's "
                                                               "registry.gate.guard_tolerance, else 1)")] = None,
    parent_tolerance: Annotated[float | None, typer.Option(
        help="points the run's evaluation of the version it started from may differ from the scores recorded with "
             "that version (default: the run's registry.gate.parent_tolerance, else 0.5)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the version as JSON on stdout")] = False,
) -> None:
    """Register a finished run's best round as a new version; it becomes current only if the gate passes."""
    from flows.registry.promotion import PARENT_TOLERANCE, GateSettings  # at run time: the CLI starts fast
    from flows.registry.registration import register_run  # at run time: the CLI starts fast

    reg = _open(registry, name)
    run_gate, min_improvement = _run_gate(run_dir.resolve())
    try:
        gate = GateSettings(
            metric=metric or run_gate.get("metric"),
            min_gain=next(v for v in (min_gain, run_gate.get("min_gain"), min_improvement, 0.0) if v is not None),
            guard=guard or run_gate.get("guard"),
            guard_tolerance=next(v for v in (guard_tolerance, run_gate.get("guard_tolerance"), 1.0) if v is not None),
            parent_tolerance=next(v for v in (parent_tolerance, run_gate.get("parent_tolerance"), PARENT_TOLERANCE)
                                  if v is not None))
    except ValueError as err:
        raise InputError(f"promotion gate: {err}") from None
    version = register_run(reg, run_dir.resolve(), gate)
    if as_json:
        sys.stdout.write(json.dumps(version.as_dict()) + "\n")
        return
    state = "promoted: now current" if version.promoted == "true" else "not promoted"
    typer.echo(f"{reg.name}: version {version.version} (from version {version.parent}): {state}; {version.reason}")


def _run_gate(run_dir: Path) -> tuple[dict[str, Any], float | None]:
    """The gate a run's config names (`registry.gate`) and its `eval.min_improvement`: the defaults of `register`,
    so registering by hand decides as the run itself would have (flows.rounds.continuing.gate_settings)."""

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}, None  # register_run names the folder that is not a run
    if not isinstance(saved, dict):
        return {}, None
    gate = ((saved.get("registry") or {}).get("gate") or {}) if isinstance(saved.get("registry"), dict) else {}
    return gate, (saved.get("eval") or {}).get("min_improvement")


def register(app: typer.Typer) -> None:
    """Add `models ...` to the app."""
    app.add_typer(models_app, name="models")
