"""Prefect's overhead per curriculum round: flow wall time vs time spent inside the task bodies.

Runs the demo's curriculum flow (the built-in docstring corpus, the offline MiniLM) into a fresh folder
with its own Prefect home (ephemeral API), then reads the per-round timings the flow records:
`wall` = the round as the flow saw it (task calls included), `tasks` = the sum of the task bodies' own
wall times (mine, schedule, train, evaluate, finish, report), `prefect` = the difference (orchestration:
task-run creation, state changes, cache-key computation, result persistence, logging). Also reports the
ephemeral API's start-up (once per process). Target: prefect <= 5% of a round.

    python -m bench.prefect_overhead                   # the demo as `make demo` runs it
    python -m bench.prefect_overhead --rounds 2 --steps 10   # a short check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="default: the demo's")
    parser.add_argument("--steps", type=int, default=None, help="steps per round; default: the demo's")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()

    out = (args.output_dir or Path(tempfile.mkdtemp(prefix="prefect-overhead-"))).resolve()
    process_start = time.perf_counter()
    from flows.cli.demo import demo_config
    from flows.orchestration.prefect_env import configure_prefect_home, exit_cleanly_on_sigterm

    overrides = {k: v for k, v in (("rounds", args.rounds), ("steps_per_round", args.steps)) if v is not None}
    config = demo_config(out, **overrides)
    configure_prefect_home(config.output_dir)
    from flows.orchestration.curriculum_flow import curriculum_flow

    call = time.perf_counter()
    with exit_cleanly_on_sigterm():  # a stopped benchmark also stops Prefect's ephemeral server
        summary = curriculum_flow(config)
    total = time.perf_counter() - call
    timings = json.loads((out / "timings.json").read_text())
    startup = total - summary["flow_seconds"]

    print(f"run folder: {out}")
    print(f"machine (at the end): {machine.text()}")
    print(f"ephemeral API start + flow-run creation: {startup:.1f} s (once per process)")
    print(f"whole flow: {summary['flow_seconds']:.1f} s; process up to the flow call: {call - process_start:.1f} s")
    print()
    header = f"{'round':>5} {'wall s':>8} {'tasks s':>8} {'prefect s':>9} {'prefect %':>9}   task bodies (s)"
    print(header)
    print("-" * len(header))
    shares = []
    for t in timings:
        share = 100.0 * t["prefect_seconds"] / t["wall_seconds"]
        shares.append(share)
        bodies = ", ".join(f"{k} {v:.1f}" for k, v in t["tasks"].items())
        print(f"{t['round']:>5} {t['wall_seconds']:>8.1f} {t['task_seconds']:>8.1f} {t['prefect_seconds']:>9.2f} "
              f"{share:>8.1f}%   {bodies}")
    mean_wall = sum(t["wall_seconds"] for t in timings) / len(timings)
    mean_prefect = sum(t["prefect_seconds"] for t in timings) / len(timings)
    print()
    print(f"mean per round: {mean_wall:.1f} s wall, {mean_prefect:.2f} s in Prefect")
    print(f"prefect_overhead_per_round: {100.0 * mean_prefect / mean_wall:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
