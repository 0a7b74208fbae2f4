"""What MLflow tracking costs a run: the same tiny curriculum run with and without it, several repeats.

Each repeat runs the curriculum loop twice in one process (flows.rounds.loop.run_rounds with the plain step
functions and the tracking hooks the curriculum flow installs; no Prefect, whose own cost
bench/prefect_overhead.py measures), once with `tracking.enabled` and once without, alternating which goes
first (ABBA), each into a fresh run folder; the tracked runs share one MLflow store (as a team's runs do).
Printed per mode: the flow's wall time, the rounds' wall time, and for tracked runs the time inside the
tracking calls (opening the MLflow run and logging params and the base metrics; per round: metrics, the
trainer's log windows, report and plots).
Also printed once: importing MLflow and creating a new store (its SQLite schema), costs a process and a
store pay once. The last lines are `tracking_seconds_per_round`, `tracking_share_of_round` and
`tracking_seconds_per_run`.

    python -m bench.tracking_overhead --repeats 3 --rounds 2 --steps 6     # tiny random BERT, built-in corpus
    python -m bench.tracking_overhead --model all-MiniLM-L6-v2 --steps 20  # demo-sized rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine


def _settings(out: Path, model: str, rounds: int, steps: int, tracked: bool, store: Path) -> dict[str, Any]:
    tiny = Path(model).is_dir()
    return {
        "output_dir": str(out), "seed": 3, "rounds": rounds, "steps_per_round": steps, "batch_size": 8 if tiny else 32,
        "model": {"name_or_path": model, "max_length": 24 if tiny else 32, **({"pooling": "mean"} if tiny else {})},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 200 if tiny else 2000},
        "mining": {"bands": ["random", "nearest_neighbour"], "params": {"range_max": 20}},
        "training": {"progress": False, "log_every": 1},
        "tracking": {"enabled": tracked, "uri": str(store), "experiment": "overhead"},
    }


class CallTimer:
    """Wraps RunTracker's methods to add up the seconds spent in them, per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def install(self) -> None:
        from flows.registry import tracking
        for name in ("start", "log_inputs", "log_base", "log_round", "log_files", "finish"):
            original = getattr(tracking.RunTracker, name)

            def timed(self_: Any, *args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return __original(self_, *args, **kwargs)
                finally:
                    self.seconds[__name] = self.seconds.get(__name, 0.0) + time.perf_counter() - start

            setattr(tracking.RunTracker, name, timed)

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


def tracked_steps(config: Any) -> Any:
    """The round steps of a run as the flow runs it, less Prefect: the plain steps plus the flow's tracking hooks."""
    import dataclasses

    from flows.registry.tracking import round_hooks, tracker_for
    from flows.rounds.loop import plain_steps
    from flows.run.rundir import RunDir

    run = RunDir(config.output_dir)
    return dataclasses.replace(plain_steps(config, run), **round_hooks(tracker_for(config, run), config))


def run_loop(config: Any) -> dict[str, Any]:
    """One curriculum run as the flow runs it, less Prefect (`tracked_steps`)."""
    from flows.rounds.loop import run_rounds
    from flows.run.rundir import RunDir

    return run_rounds(config, RunDir(config.output_dir), tracked_steps(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default=None,
                        help="a model folder or all-MiniLM-L6-v2 (default: a tiny random BERT)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix="tracking-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        from simcse.testing import build_tiny_model

        model = str(build_tiny_model(out / "tiny-bert"))
    elif model == "all-MiniLM-L6-v2":
        from simcse.model import default_model_path

        model = str(default_model_path())

    start = time.perf_counter()
    from flows.registry.mlflow_store import MlflowStore

    store = MlflowStore.at(out / "mlflow")
    store.client()
    imported = time.perf_counter() - start
    start = time.perf_counter()
    store.experiment_id("overhead")  # creates the SQLite schema
    created = time.perf_counter() - start
    print(f"once per process: import mlflow + client {imported:.2f} s; once per store: create it {created:.2f} s",
          flush=True)

    timer = CallTimer()
    timer.install()
    from flows.run.config import config_from_mapping

    results: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    run_loop(config_from_mapping(_settings(out / "warmup", model, 1, 1, False, out / "mlflow")))
    for repeat in range(args.repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for tracked in order:
            run_dir = out / f"run-{repeat}-{'on' if tracked else 'off'}"
            cfg = config_from_mapping(_settings(run_dir, model, args.rounds, args.steps, tracked, out / "mlflow"))
            summary = run_loop(cfg)
            calls = timer.take()
            rounds = [t["wall_seconds"] for t in summary["timings"]]
            row = {"repeat": repeat, "tracked": tracked, "flow_seconds": summary["flow_seconds"],
                   "round_seconds": statistics.mean(rounds), "calls": calls,
                   "per_round": (calls.get("log_round", 0) + calls.get("log_files", 0)) / len(rounds),
                   "per_run": sum(calls.get(k, 0) for k in ("start", "log_inputs", "log_base", "finish"))}
            results[tracked].append(row)
            print(json.dumps(row), flush=True)

    on, off = results[True], results[False]
    per_round = statistics.mean(r["per_round"] for r in on)
    round_wall = statistics.mean(r["round_seconds"] for r in on + off)
    flow_diff = statistics.mean(r["flow_seconds"] for r in on) - statistics.mean(r["flow_seconds"] for r in off)
    print(f"flow wall time: tracked {statistics.mean(r['flow_seconds'] for r in on):.2f} s, untracked "
          f"{statistics.mean(r['flow_seconds'] for r in off):.2f} s (difference {flow_diff:+.2f} s over "
          f"{args.rounds} rounds)")
    print(f"machine (at the end): {machine.text()}")
    print(f"tracking_seconds_per_round: {per_round:.3f}")
    print(f"tracking_share_of_round: {100 * per_round / round_wall:.2f}% (round wall {round_wall:.2f} s)")
    print(f"tracking_seconds_per_run: {statistics.mean(r['per_run'] for r in on):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
