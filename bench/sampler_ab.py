"""Sampler A/B: `TripletSampler.draw` of two code checkouts on one mined round, interleaved, alone on the machine.

`bench.sampler_throughput` builds its 1M-row round inside each run, so two runs of it compare code *and* a freshly
built round, page cache and process state; its run-to-run spread at batch 128 is large. This bench builds the round
once (with this checkout's code), then times each checkout's sampler on that same round in a fresh process
(`PYTHONPATH` = the checkout), pair after pair, alternating which goes first:

    python -m bench.sampler_ab --code /tmp/old-checkout --code . [--pairs 9] [--seconds 6] [--json out.json]

The timed code uses only what every checkout since issue 4 has (`curriculum.TripletSampler`,
`curriculum_mixture`, `curriculum.state.Plan`, `dataio.triplets.read_manifest`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import machine
from bench.sampler_throughput import build_round

_CHILD = """
import json, sys, time
from pathlib import Path
from curriculum import TripletSampler, curriculum_mixture
from curriculum.state import Plan
from dataio.triplets import read_manifest
root, seconds, sizes = Path(sys.argv[1]), float(sys.argv[2]), [int(b) for b in sys.argv[3:]]
mixture = curriculum_mixture(read_manifest(root, 0).difficulties(), 1.0)
plan = Plan(round=0, stage=0, competence=1.0, mixture=mixture, alpha={b: 1.0 for b in mixture})
rates = {}
for bs in sizes:
    sampler = TripletSampler(root, 0, batch_size=bs, seed=0)
    for _ in range(20):
        sampler.draw(plan)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            sampler.draw(plan)
        n += 50
    rates[bs] = n / (time.perf_counter() - start)
print(json.dumps(rates))
"""


def time_checkout(code: Path, root: Path, seconds: float, sizes: list[int]) -> dict[int, float]:
    """Batches/s per batch size of the sampler in `code`, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(seconds), *map(str, sizes)], cwd=code,
                         env=env, check=True, capture_output=True, text=True).stdout
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, action="append", required=True,
                        help="a checkout to time (give it twice or more; the first is the baseline)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per batch size and process")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if len(args.code) < 2:
        parser.error("give --code at least twice")
    codes = [c.resolve() for c in args.code]
    print(f"machine: {machine.text()}")
    runs: dict[str, list[dict[int, float]]] = {str(c): [] for c in codes}
    with tempfile.TemporaryDirectory(prefix="sampler-ab-") as tmp:
        print(f"round: {args.rows:,} rows from {build_round(Path(tmp), args.rows)}")
        for i in range(args.pairs):
            order = codes if i % 2 == 0 else codes[::-1]  # alternate who goes first
            for code in order:
                rates = time_checkout(code, Path(tmp), args.seconds, args.batch_sizes)
                runs[str(code)].append(rates)
                print(f"pair {i + 1}: {code}: " + ", ".join(f"b{b} {r:,.0f}/s" for b, r in rates.items()), flush=True)
    base = str(codes[0])
    summary = {}
    for code, rates in runs.items():
        for b in args.batch_sizes:
            values = [r[b] for r in rates]
            ratios = [r[b] / q[b] for r, q in zip(rates, runs[base])]
            summary[f"{code} b{b}"] = {"mean": statistics.mean(values), "min": min(values), "max": max(values),
                                       "ratio_to_first_mean": statistics.mean(ratios),
                                       "pairs_faster_than_first": sum(x > 1 for x in ratios)}
            print(f"{code} b{b}: mean {statistics.mean(values):,.0f}/s (min {min(values):,.0f}, max "
                  f"{max(values):,.0f}); vs {base}: {statistics.mean(ratios):.3f}x, faster in "
                  f"{sum(x > 1 for x in ratios)} of {len(ratios)} pairs")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.describe(), "runs": runs, "summary": summary},
                                        indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
