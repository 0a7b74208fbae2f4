"""Consecutive nights of the shipped domain config on a Twitter corpus that grows (issue 14): what a team's
registry holds after each night, and what MLflow tracking costs per round.

The unlabeled Twitter corpus (`<data_dir>/twitter/unlabeled.txt`) is cut into `--slices` contiguous slices;
night k finds slices 1..k in a corpus folder (one file per slice, as a team's export grows). Every night runs
`configs/domain_unlabeled.yaml` unchanged except for where it reads and writes: the corpus folder, a registry
(gate: the config's dev metric and margin, guard STS-B dev within 1 point) and MLflow tracking into the
working folder, each night in its own run folder, through flows.rounds.continuing with the plain steps and the
flow's tracking hooks (what the scheduled flow runs, less Prefect, whose own cost bench/prefect_overhead.py
measures). Since 2026-12-08 that config needs the offline teacher (README, "A stronger teacher"); the nights in
docs/results.md ran the in-batch config that is now `configs/domain_no_teacher.yaml` (`--config`).

The Twitter dev pairs are split by source headline (bench/experiment_data.py): the *select* half is the dev
metric (rounds, gate), the *report* half only reports, so the set that decides is never the set that reports.

    python -m bench.twitter_nights --out runs/twitter-nights            # 3 nights; rerun to resume
    python -m bench.twitter_nights --out runs/twitter-nights --results docs/results.md

Printed and written (`<out>/nights.json`, and a section of `--results` between markers): per night the rows
seen and new, the version registered (parent, promoted or why not), the current version after the night and its
scores, the night's wall time, and the seconds inside the tracking calls per round and per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import REPO, machine
from bench.experiment_data import split_twitter_dev
from bench.experiment_report import write_section
from bench.tracking_overhead import CallTimer, tracked_steps

START_MARKER = "<!-- twitter-nights:start -->"
END_MARKER = "<!-- twitter-nights:end -->"
REGISTERED_NAME = "twitter-encoder"


def slice_corpus(src: Path, folder: Path, slices: int, limit: int | None = None) -> list[Path]:
    """Cut `src` (one sentence per line; its first `limit` lines) into `slices` contiguous files `part-<k>.txt`
    under `folder` (once)."""
    from dataio.atomic import atomic_write_text

    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:limit]
    size = -(-len(lines) // slices)
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        path = folder / f"part-{k + 1}.txt"
        if not path.is_file():
            atomic_write_text(path, "".join(lines[k * size:(k + 1) * size]))
        paths.append(path)
    return paths


def dev_halves(out: Path) -> dict[str, Path]:
    """The Twitter dev pairs split by headline: `select.tsv` (the dev metric) and `report.tsv` (reports only)."""
    from dataio.tables import data_dir

    folder = out / "dev"
    paths = {half: folder / f"{half}.tsv" for half in ("select", "report")}
    if not all(p.is_file() for p in paths.values()):
        for half, written in split_twitter_dev(data_dir() / "twitter" / "dev_pairs.tsv", folder / "split").items():
            shutil.copyfile(written, paths[half])
    return paths


def night_config(config: Path, out: Path, night: int, dev: dict[str, Path], steps: int | None = None) -> Any:
    from flows.run.config import load_config

    return load_config(config, {**({"steps_per_round": steps} if steps else {}),
        "output_dir": str(out / "runs" / f"night-{night}"),
        "data.corpus": {"path": str(out / "corpus")},
        "eval.pairs": [str(dev["select"]), str(dev["report"])],
        "eval.dev_metric": "pairs/select",
        "training.progress": False,  # a log, not a terminal
        "registry": {"path": str(out / "registry"), "name": REGISTERED_NAME, "gate": {"guard": "sts/dev"}},
        "tracking": {"enabled": True, "uri": str(out / "mlflow"), "experiment": "twitter-nights"},
    })


def run_night(config: Any, timer: Any) -> dict[str, Any]:
    from flows.rounds.continuing import run_continuing

    wall = time.perf_counter()
    summary = run_continuing(config, tracked_steps)
    summary["night_seconds"] = time.perf_counter() - wall
    summary["tracking_calls"] = timer.take()
    return summary


def current_scores(out: Path) -> dict[str, Any]:
    """The registry's current version after a night, and its scores (version 1, the start model: night 1's
    baseline evaluation)."""
    from flows.registry.model_registry import open_registry
    from simcse.evaluation import flat_metrics

    registry = open_registry(str(out / "registry"), REGISTERED_NAME)
    current = registry.current()
    assert current is not None
    if current.version == 1:
        base = json.loads((out / "runs" / "night-1" / "base_metrics.json").read_text(encoding="utf-8"))
        metrics = flat_metrics(base["evaluation"])
    else:
        metrics = current.metrics
    return {"version": current.version, "metrics": metrics}


def candidate_scores(out: Path, version: int | None) -> dict[str, float]:
    """The scores of the version a night registered (its best round by the dev metric), promoted or not."""
    from flows.registry.model_registry import open_registry

    if version is None:
        return {}
    return open_registry(str(out / "registry"), REGISTERED_NAME).version(version).metrics


def night_row(night: int, summary: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    registry = summary.get("registry") or {}
    registered = registry.get("registered") or {}
    rounds = [t["wall_seconds"] for t in summary.get("timings") or []]
    calls = summary.get("tracking_calls") or {}
    per_round = (calls.get("log_round", 0.0) + calls.get("log_files", 0.0)) / max(1, len(rounds))
    return {
        "night": night, "noop": bool(summary.get("noop")), "rows": registry.get("rows"),
        "new_rows": registry.get("new_rows"), "registered": registered.get("version"),
        "parent": registered.get("parent"), "promoted": registered.get("promoted"), "reason": registered.get("reason"),
        "current": current["version"], "current_metrics": current["metrics"],
        "night_minutes": summary["night_seconds"] / 60, "round_seconds": statistics.fmean(rounds) if rounds else None,
        "tracking_seconds_per_round": per_round,
        "tracking_share_of_round": per_round / statistics.fmean(rounds) if rounds else None,
        "tracking_seconds_per_run": sum(calls.get(k, 0.0) for k in ("start", "log_inputs", "log_base", "finish")),
    }


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _scores(m: dict[str, float]) -> str:
    return " / ".join(_fmt(m.get(k)) for k in ("pairs/select", "pairs/report", "sts/dev")) if m else "–"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [START_MARKER, f"## {len(rows)} nights of the shipped domain config (issue 14)", "",
             f"- Command: `{meta['command']}`; machine: {machine.text(meta['machine'])}; {meta['finished']}.",
             f"- `{meta['config']}` as shipped, on `twitter/unlabeled.txt` cut into {meta['slices']} contiguous "
             f"slices ({meta['lines']:,} lines), one more file in the corpus folder each night; registry gate: "
             "`pairs/select` must gain more than `eval.min_improvement` over the parent, STS-B dev may fall at most "
             "1 point. AP select decides, AP report only reports (Twitter dev pairs split by headline).", "",
             "| night | rows (new) | registered (parent) | promoted | its AP select / report / STS-B dev | "
             "current after | its AP select / report / STS-B dev | night (min) | round (s) | "
             "tracking per round (s, share) | tracking per run (s) |",
             "|---|---|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        # `promoted` is a boolean; nights recorded before it was held the tag's string
        promoted = "no-op" if r["noop"] else ("yes" if r["promoted"] in (True, "true") else f"no: {r['reason']}")
        lines.append(
            f"| {r['night']} | {r['rows'] or '–'} ({r['new_rows'] if r['new_rows'] is not None else '–'}) | "
            f"{r['registered'] or '–'} ({r['parent'] or '–'}) | {promoted} | "
            f"{_scores(r.get('candidate_metrics') or {})} | {r['current']} | {_scores(r['current_metrics'])} | "
            f"{_fmt(r['night_minutes'], 1)} | {_fmt(r['round_seconds'], 1)} | "
            f"{_fmt(r['tracking_seconds_per_round'])} ({_fmt(100 * (r['tracking_share_of_round'] or 0), 1)} %) | "
            f"{_fmt(r['tracking_seconds_per_run'])} |")
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "domain_unlabeled.yaml"))
    parser.add_argument("--out", default=str(REPO / "runs" / "twitter-nights"))
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", help="a markdown file to write the section into (between markers)")
    parser.add_argument("--lines", type=int, help="a quick check: only the corpus's first N lines")
    parser.add_argument("--steps", type=int, help="a quick check: steps_per_round instead of the config's")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    from dataio.atomic import atomic_write_json
    from dataio.tables import data_dir

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    src = data_dir() / "twitter" / "unlabeled.txt"
    parts = slice_corpus(src, out / "slices", args.slices, args.lines)
    dev = dev_halves(out)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    timer = CallTimer()
    timer.install()
    rows = []
    for night, part in enumerate(parts, start=1):
        record = out / "runs" / f"night-{night}.json"
        if record.is_file():  # a finished night (rerunning resumes after the last one)
            row = json.loads(record.read_text(encoding="utf-8"))
            row.setdefault("candidate_metrics", candidate_scores(out, row.get("registered")))
            rows.append(row)
            continue
        if not (out / "corpus" / part.name).is_file():
            shutil.copyfile(part, out / "corpus" / part.name)
        summary = run_night(night_config(Path(args.config), out, night, dev, args.steps), timer)
        row = night_row(night, summary, current_scores(out))
        row["candidate_metrics"] = candidate_scores(out, row["registered"])
        atomic_write_json(record, row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"command": " ".join(["python -m bench.twitter_nights", *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine.describe(),
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": os.path.relpath(args.config, REPO), "slices": args.slices,
            "lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in parts)}
    (out / "nights.json").write_text(json.dumps({"meta": meta, "nights": rows}, indent=1) + "\n", encoding="utf-8")
    section = render(rows, meta)
    print(section)
    if args.results:
        write_section(Path(args.results), section, START_MARKER, END_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
