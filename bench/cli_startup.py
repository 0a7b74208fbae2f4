"""What a command line call costs before it does anything: `simcse-curriculum --help` and `models path REGISTRY`
(the call a serving script makes to find the current model), each in a fresh Python process, against the
strongest thing a user could call instead for the second: MLflow's own client asked for the version behind the
`current` alias and its download URI (`MlflowClient.get_model_version_by_alias`, `get_model_version_download_uri`).

Each command runs `--repeats` times, in turn, in fresh processes; printed per command: the median CPU seconds
(user + system of the child) and wall seconds, and what it imported of torch, MLflow, Prefect and pyarrow. The last
line is `models_path_vs_mlflow_client` (CPU ratio, ours / MLflow's). The registry is built first in a temporary
folder from a tiny random BERT (its size does not matter: neither command reads the weights).

    python -m bench.cli_startup --repeats 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import child_options, machine

PROBE = ("import sys; print(' '.join(m for m in ('torch', 'mlflow', 'prefect', 'pyarrow') if m in sys.modules), "
         "file=sys.stderr)")


def _registry(folder: Path) -> Path:
    from flows.registry.mlflow_store import MlflowStore
    from flows.registry.model_registry import ModelRegistry
    from simcse.testing import build_tiny_model

    model = build_tiny_model(folder / "model", seed=0)
    ModelRegistry(MlflowStore.at(folder / "registry"), "enc").ensure_started(model)
    return folder / "registry"


def _commands(registry: Path) -> dict[str, list[str]]:
    ours = f"import sys; from flows.cli.app import main; rc = main(sys.argv[1:]); {PROBE}; sys.exit(rc)"
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    mlflow = (f"from mlflow import MlflowClient; c = MlflowClient(tracking_uri={uri!r}, registry_uri={uri!r}); "
              "v = c.get_model_version_by_alias('enc', 'current'); "
              f"print(c.get_model_version_download_uri('enc', v.version)); {PROBE}")
    return {"--help": [sys.executable, "-c", ours, "--help"],
            "models path": [sys.executable, "-c", ours, "models", "path", str(registry)],
            "mlflow client": [sys.executable, "-c", mlflow]}


def _once(command: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **child_options())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    imported = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return cpu, wall, imported


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        commands = _commands(_registry(Path(tmp)))
        samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load touches every command
            for name, command in commands.items():
                samples[name].append(_once(command))
    result: dict[str, Any] = {"machine": machine.describe(), "repeats": args.repeats, "commands": {}}
    for name, runs in samples.items():
        cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        result["commands"][name] = {"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
                                    "imports": runs[-1][2] or "none of torch, mlflow, prefect, pyarrow"}
        print(f"{name:28} cpu {cpu:6.2f} s   wall {wall:6.2f} s   imports: {result['commands'][name]['imports']}")
    ratio = result["commands"]["models path"]["cpu_seconds"] / result["commands"]["mlflow client"]["cpu_seconds"]
    result["models_path_vs_mlflow_client"] = round(ratio, 3)
    print(machine.text(result["machine"]))
    print(json.dumps({"models_path_vs_mlflow_client": result["models_path_vs_mlflow_client"]}))
    return result


if __name__ == "__main__":
    main()
