"""bench/teacher_vectors.py end to end on a tiny random teacher (the real measurement encodes thousands of tweets
with all-mpnet-base-v2): each night encodes only its new slice through the store, the whole pool without it, and
the judge decides alike both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_nights_through_the_store_encode_only_the_new_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from bench import teacher_vectors
    from simcse.testing import build_tiny_model

    data = tmp_path / "data"
    (data / "twitter").mkdir(parents=True)
    (data / "twitter" / "unlabeled.txt").write_text(
        "".join(f"tweet {i} about topic {i % 9} and item {i * 31 % 97}\n" for i in range(60)), encoding="utf-8")
    monkeypatch.setenv("SIMCSE_DATA_DIR", str(data))
    teacher = build_tiny_model(tmp_path / "teacher", seed=1)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(teacher), "max_length": 24},
        "data": {"corpus": str(data / "twitter" / "unlabeled.txt")}, "teacher": {"path": str(teacher)},
        "mining": {"bands": ["random"], "params": {"mined_positives": True, "positive_min_score": 0.95,
                                                   "max_score": None}}}), encoding="utf-8")
    assert teacher_vectors.main(["--config", str(config), "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    rows = json.loads((tmp_path / "out" / "teacher_vectors.json").read_text(encoding="utf-8"))["nights"]
    assert [(r["pool"], r["per_run_encoded"], r["store_encoded"]) for r in rows] == [(20, 20, 20), (40, 40, 20),
                                                                                      (60, 60, 20)]
    assert all(r["mined_per_run"] == r["mined_store"] == r["mined_same"] for r in rows), rows
    assert rows[-1]["mined_per_run"] > 0, "the judge paired some tweets"
    assert rows[0]["max_abs_difference"] == 0.0
    # A rerun resumes after the recorded nights, with their store: the last pool again encodes nothing.
    night_3 = (tmp_path / "out" / "night-3.json").stat().st_mtime_ns
    assert teacher_vectors.main(["--config", str(config), "--out", str(tmp_path / "out"), "--threads", "1",
                                 "--again"]) == 0
    assert (tmp_path / "out" / "night-3.json").stat().st_mtime_ns == night_3, "recorded nights are not run again"
    meta = json.loads((tmp_path / "out" / "teacher_vectors.json").read_text(encoding="utf-8"))["meta"]
    assert meta["again"]["pool"] == 60 and meta["again"]["store_encoded"] == 0
