"""bench.sampler_ab: one round, each checkout timed in its own process, pairs alternating, a summary against the
first checkout. Tiny round and windows: the numbers mean nothing, the plumbing is what is tested."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import REPO, sampler_ab


def test_sampler_ab_times_each_checkout_on_one_round_and_summarises_against_the_first(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["sampler_ab", "--code", str(REPO), "--code", str(REPO), "--rows", "4000",
                                      "--pairs", "2", "--seconds", "0.05", "--batch-sizes", "16", "--json", str(out)])
    sampler_ab.main()
    record = json.loads(out.read_text(encoding="utf-8"))
    (runs,) = record["runs"].values()  # the same checkout twice: one key, four timed processes
    assert len(runs) == 4 and all(r["16"] > 0 for r in runs)
    summary = record["summary"][f"{REPO.resolve()} b16"]
    assert summary["min"] <= summary["mean"] <= summary["max"]


def test_the_timed_child_reports_batches_per_second_per_batch_size(tmp_path: Path) -> None:
    from bench.sampler_throughput import build_round

    build_round(tmp_path, 4000)
    rates = sampler_ab.time_checkout(Path(REPO), tmp_path, 0.05, [16, 32])
    assert set(rates) == {16, 32} and all(v > 0 for v in rates.values())
