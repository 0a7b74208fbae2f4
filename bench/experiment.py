"""The curriculum experiment (issue 10): does moving from easy to hard negatives beat a fixed choice?

Pre-registered in docs/experiment.md: two starts (the tuned all-MiniLM-L6-v2 and a weak start), two settings
(General: NLI -> STS-B; Domain: unlabeled Twitter -> Twitter pairs), the arms of configs/experiment/arms/,
paired by seed (every arm of a seed sees the same anchors in the same order), at a size from
configs/experiment/sizes.yaml. Each arm x seed is one process (`run-one`); `run` keeps `--workers` of them
busy (one torch thread each: on this 2-core machine two single-thread workers train 1.35x faster than one
with two threads), resumes what is finished, and writes the results section of docs/results.md.

    python -m bench.experiment run --size smoke --out /tmp/exp-smoke --results /tmp/exp-smoke/results.md
    python -m bench.experiment run --size main --workers 2          # runs/experiment/main -> docs/results.md
    python -m bench.experiment status --size main
    python -m bench.experiment report --size main                   # rebuild the section from the results

`run` options: `--starts`, `--settings`, `--arms`, `--seeds` (comma-separated subsets), `--out`, `--results`,
`--deadline-min M` (start no job after M minutes; rerun the same command to finish), `--keep-models`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import REPO, child_options, machine, module_command
from bench import experiment_design as design
from bench.experiment_arm import result_path, run_arm

DEFAULT_RESULTS = REPO / "docs" / "results.md"
log = logging.getLogger("experiment")


def _split(value: str | None, cast: Any = str) -> list[Any] | None:
    return [cast(v) for v in value.split(",")] if value else None


def plan_of(args: argparse.Namespace, size: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return design.planned_runs(size, starts=_split(args.starts), settings=_split(args.settings),
                               arms=_split(args.arms), seeds=_split(args.seeds, int))


def out_of(args: argparse.Namespace, size: dict[str, Any]) -> Path:
    return Path(args.out or REPO / "runs" / "experiment" / size["name"]).resolve()


def prepare_shared(size: dict[str, Any], out: Path, plan: list[tuple[str, str, str, int]]) -> None:
    """Inputs every worker reads, made once before any worker starts: the weak start, the data subsamples and
    the Twitter split (`SettingContext` would otherwise make them concurrently)."""
    for start in sorted({p[0] for p in plan}):
        design.start_model(start, out)
    for setting in sorted({p[1] for p in plan}):
        design.prepare_setting(setting, size, out)


def run_experiment(args: argparse.Namespace) -> int:
    size = design.load_size(args.size)
    out = out_of(args, size)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_of(args, size)
    prepare_shared(size, out, plan)
    todo = [p for p in plan if not result_path(out, *p).is_file()]
    log.info("size %s: %d runs planned, %d to do, %d workers, into %s", size["name"], len(plan), len(todo),
             args.workers, out)
    started = time.perf_counter()
    # a run stopped before its end still says what it is
    write_run_meta(out, size, 0.0, [], [], starting=True, threads=args.threads)
    deadline = started + args.deadline_min * 60 if args.deadline_min else None
    running: list[tuple[subprocess.Popen, tuple[str, str, str, int], Path]] = []
    failed: list[str] = []
    skipped: list[str] = []
    (out / "logs").mkdir(exist_ok=True)
    while todo or running:
        while todo and len(running) < args.workers:
            job = todo.pop(0)
            if deadline is not None and time.perf_counter() > deadline:
                skipped.append("/".join(map(str, job)))
                continue
            log_path = out / "logs" / f"{'-'.join(map(str, job))}.log"
            cmd = worker_command(size["name"], out, job, args.threads, args.keep_models)
            handle = open(log_path, "w")  # noqa: SIM115 - closed when the worker ends
            running.append((subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, **child_options()), job,
                            log_path))
            log.info("started %s", "/".join(map(str, job)))
        time.sleep(2)
        for proc, job, log_path in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, job, log_path))
            if proc.returncode != 0:
                failed.append("/".join(map(str, job)))
                log.error("FAILED %s (exit %d): see %s", "/".join(map(str, job)), proc.returncode, log_path)
            else:
                log.info("finished %s", "/".join(map(str, job)))
    write_run_meta(out, size, time.perf_counter() - started, skipped, failed, threads=args.threads)
    write_results(out, size, Path(args.results) if args.results else DEFAULT_RESULTS)
    if skipped:
        log.warning("deadline reached: %d runs not started; rerun the same command to finish them", len(skipped))
    return 1 if failed else 0


def worker_command(size: str, out: Path, job: tuple[str, str, str, int], threads: int, keep_models: bool) -> list[str]:
    """One job's `run-one` worker, `python -m bench.experiment` of this checkout (started with `child_options()`,
    so a harness launched from a snapshot worktree runs that snapshot's code in its workers too)."""
    return module_command("bench.experiment", "run-one", "--size", size, "--out", str(out.resolve()),
                          "--start", job[0], "--setting", job[1], "--arm", job[2], "--seed", str(job[3]),
                          "--threads", str(threads), *(["--keep-models"] if keep_models else []))


def run_one(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    run_arm(Path(args.out), args.size, args.start, args.setting, args.arm, args.seed, keep_models=args.keep_models)
    return 0


def write_run_meta(out: Path, size: dict[str, Any], wall: float, skipped: list[str], failed: list[str], *,
                   starting: bool = False, threads: int | None = None) -> None:
    """`run_meta.json`: the commands (each distinct one, e.g. a sequential seed extension), machine (with the
    workers' torch threads) and wall time over every invocation. Written when an invocation starts (counted,
    `finished: null` while it runs) and again when it ends (its wall time added)."""
    from dataio.atomic import atomic_write_json

    path = out / "run_meta.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "bench.experiment", *sys.argv[1:]])
    commands = previous.get("commands") or ([previous["command"]] if previous.get("command") else [])
    atomic_write_json(path, {
        "size": size, "command": command, "commands": commands + ([command] if command not in commands else []),
        "machine": machine.describe(threads=threads, torch=True),
        "wall_seconds": wall + previous.get("wall_seconds", 0.0),
        "invocations": previous.get("invocations", 0) + (1 if starting else 0), "skipped": skipped,
        "failed": failed, "started": previous.get("started") or now, "finished": None if starting else now})


def write_results(out: Path, size: dict[str, Any], results_md: Path) -> Path:
    """The size's results section: the curriculum experiment's analysis, or the judge experiment's
    (`report: judge` in sizes.yaml), each between its own markers."""
    if size.get("report") == "judge-general":
        from bench import judge_report

        return judge_report.write_general(out, size, results_md)
    if size.get("report") == "judge-corpus":
        from bench import judge_corpus_report

        return judge_corpus_report.write(out, size, results_md)
    if size.get("report") == "judge":
        from bench import judge_report as report
    else:
        from bench import experiment_report as report

    return report.write(out, size, results_md)


def status(args: argparse.Namespace) -> int:
    size = design.load_size(args.size)
    out = out_of(args, size)
    plan = plan_of(args, size)
    done = [p for p in plan if result_path(out, *p).is_file()]
    print(f"{len(done)} of {len(plan)} runs finished in {out}")
    by_seed: dict[int, int] = {}
    for p in done:
        by_seed[p[3]] = by_seed.get(p[3], 0) + 1
    per_seed = len(plan) // max(1, len(size["seeds"]))
    for seed in size["seeds"]:
        print(f"  seed {seed}: {by_seed.get(seed, 0)} of {per_seed}")
    return 0


def run_pilot(args: argparse.Namespace) -> int:
    """`pilot`: one arm x seed on the selection set only, with mining parameters set on the command line."""
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    size = design.load_size(args.size)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    result = run_arm(out_of(args, size), args.size, args.start, args.setting, args.arm, args.seed,
                     pilot={"tag": args.tag, "mining_params": overrides})
    curve = ", ".join(f"step {c['step']}: {c['dev']:.2f}" for c in result["curve"])
    print(f"{args.arm}-{args.tag} seed {args.seed}: base {result['base']['dev']:.2f}; {curve}; selected round "
          f"{result['selected']['round']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "status", "report"):
        p = sub.add_parser(name)
        p.add_argument("--size", required=True, help="smoke or main (configs/experiment/sizes.yaml)")
        p.add_argument("--out", help="working folder (default runs/experiment/<size>)")
        p.add_argument("--results", help=f"markdown file the section goes into (default {DEFAULT_RESULTS})")
        p.add_argument("--starts")
        p.add_argument("--settings")
        p.add_argument("--arms")
        p.add_argument("--seeds")
        if name == "run":
            p.add_argument("--workers", type=int, default=2)
            p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
            p.add_argument("--deadline-min", type=float)
            p.add_argument("--keep-models", action="store_true")
    one = sub.add_parser("run-one", help="one start x setting x arm x seed (what `run` starts per job)")
    for key in ("--size", "--out", "--start", "--setting", "--arm"):
        one.add_argument(key, required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--keep-models", action="store_true")
    pilot = sub.add_parser("pilot", help="one arm x seed before registration: the selection set only, mining "
                                         "parameters overridden (--set KEY=VALUE), under <out>/pilot/")
    for key in ("--size", "--start", "--setting", "--arm", "--tag"):
        pilot.add_argument(key, required=True)
    pilot.add_argument("--out", help="working folder (default runs/experiment/<size>)")
    pilot.add_argument("--seed", type=int, default=0)
    pilot.add_argument("--threads", type=int, default=1)
    pilot.add_argument("--set", action="append", default=[], help="a mining parameter, KEY=VALUE (YAML value)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("flows", "mining", "simcse", "curriculum", "faiss"):
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    from dataio.errors import InputError

    try:
        if args.command == "run":
            return run_experiment(args)
        if args.command == "run-one":
            return run_one(args)
        if args.command == "pilot":
            return run_pilot(args)
        if args.command == "status":
            return status(args)
        size = design.load_size(args.size)
        print(write_results(out_of(args, size), size, Path(args.results) if args.results else DEFAULT_RESULTS))
        return 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
