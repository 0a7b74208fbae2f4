"""Tracking a run on a team's MLflow server (issue 14): a real `mlflow server` on loopback (SQLite backend store,
artifact root in the test's folder, stopped by PID), a tiny two-round run whose `tracking.uri` names it, and what
the server then holds, read back through a fresh `MlflowClient`: the run, its params, every metric per round, the
trainer's log windows and the report.

The run goes through flows.loop with the plain steps and the tracking hooks the curriculum flow installs (as
bench/tracking_overhead.py does), so no Prefect server is needed beside MLflow's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from loopback_servers import start_mlflow_server, stop

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported: no network


@pytest.mark.slow
def test_a_run_tracked_to_a_real_mlflow_server_arrives_with_its_params_and_metrics_per_round(tmp_path: Path,
                                                                                           tiny: str) -> None:
    from mlflow import MlflowClient

    from flows.config import config_from_mapping
    from flows.loop import plain_steps, run_rounds
    from flows.promotion import flat_metrics
    from flows.rundir import RunDir
    from flows.tracking import TRACKING_FILE, round_hooks, tracker_for
    from simcse.testing import torch_threads

    server = start_mlflow_server(tmp_path)
    try:
        config = config_from_mapping({
            "output_dir": str(tmp_path / "run"), "seed": 3, "rounds": 2, "steps_per_round": 2, "batch_size": 8,
            "model": {"name_or_path": tiny, "pooling": "mean", "max_length": 16},
            "data": {"builtin": "python_docstrings", "builtin_max_sentences": 100},
            "mining": {"bands": ["random", "nearest_neighbour"], "params": {"range_max": 10}},
            "training": {"progress": False, "log_every": 1},
            "tracking": {"enabled": True, "uri": server.uri, "experiment": "team-runs"},
        })
        run = RunDir(Path(config.output_dir))
        hooks = round_hooks(tracker_for(config, run), config)
        with torch_threads(1):
            summary = run_rounds(config, run, dataclasses.replace(plain_steps(config, run), **hooks))
        assert summary["rounds_completed"] == [0, 1]

        client = MlflowClient(tracking_uri=server.uri)  # a new client: only what the server holds
        experiment = client.get_experiment_by_name("team-runs")
        assert experiment is not None
        [tracked] = client.search_runs([experiment.experiment_id])
        assert tracked.info.run_id == json.loads((run.root / TRACKING_FILE).read_text())["run_id"]
        assert tracked.info.status == "FINISHED" and tracked.data.tags["simcse.run_dir"] == str(run.root)
        assert tracked.data.tags["simcse.config_fingerprint"] == config.fingerprint()

        params = tracked.data.params
        assert (params["rounds"], params["steps_per_round"], params["batch_size"]) == ("2", "2", "8")
        assert params["model.name_or_path"] == tiny and params["tracking.uri"] == server.uri

        # Every score per round: step 0 the starting model, step r + 1 round r, as the run recorded them.
        recorded = [flat_metrics(run.read_base_metrics()["evaluation"])] + \
            [flat_metrics(run.read_metrics(r)["evaluation"]) for r in (0, 1)]
        assert recorded[0], "the run evaluated nothing"
        for name in recorded[0]:
            history = client.get_metric_history(tracked.info.run_id, name)
            assert sorted((m.step, m.value) for m in history) == \
                [(step, pytest.approx(values[name])) for step, values in enumerate(recorded)], name
        competence = client.get_metric_history(tracked.info.run_id, "competence")
        assert sorted(m.step for m in competence) == [1, 2]
        assert sorted(m.step for m in client.get_metric_history(tracked.info.run_id, "train/loss")) == [1, 2, 3, 4]

        artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
        assert {"report.md", "config.yaml", "base_metrics.json"} <= artifacts, artifacts
        assert any((server.root / "artifacts").rglob("report.md")), "artifacts go where the server keeps them"
    finally:
        stop(server.process)
    assert server.process.poll() is not None
