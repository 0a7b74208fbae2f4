"""Tracking a run on a team's MLflow server (issue 14): a real `mlflow server` on loopback (SQLite backend store,
artifact root in the test's folder, stopped by PID), a tiny two-round run whose `tracking.uri` names it, and what
the server then holds, read back through a fresh `MlflowClient`: the run, its params, every metric per round, the
trainer's log windows and the report; and the model registry on that server, night after night.

The run goes through flows.rounds.loop with the plain steps and the tracking hooks the curriculum flow installs (as
bench/tracking_overhead.py does), so no Prefect server is needed beside MLflow's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from loopback_servers import start_mlflow_server, stop

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported: no network


@pytest.mark.slow
def test_a_run_tracked_to_a_real_mlflow_server_arrives_with_its_params_and_metrics_per_round(tmp_path: Path,
                                                                                           tiny: str) -> None:
    from mlflow import MlflowClient

    from flows.registry.tracking import TRACKING_FILE, round_hooks, tracker_for
    from flows.rounds.loop import plain_steps, run_rounds
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.evaluation import flat_metrics
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


@pytest.mark.slow
def test_the_registry_on_a_real_mlflow_server_warm_starts_gates_and_hands_out_the_current_model(tmp_path: Path):
    """Issue 14's registry nights against a team's `mlflow server` (the embedded store has its own test,
    tests/test_flows_continuing.py): a new registry on the server starts from the base model (version 1); night 1
    registers version 2; night 2 has nothing new and is a no-op; night 3 (a new file) downloads version 2 into its
    run folder, starts from it and registers version 3 with parent 2; night 4 breaks the model (learning rate 1.0)
    and is recorded, not promoted. `models list` and `models path --dest` read the server. Artifacts go through the
    server (`mlflow-artifacts:`), so every model file this machine uses was downloaded from it."""
    import contextlib
    import io

    from sentence_transformers import SentenceTransformer
    from test_flows_continuing import run_night, settings, write_lines

    from dataio.hashing import model_folder_sha256
    from flows.cli.app import main
    from flows.registry.model_registry import open_registry
    from flows.registry.warm_start import DOWNLOADED_START
    from simcse.testing import build_tiny_model

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_lines(corpus / "a.txt", list(range(40)))
    pairs = tmp_path / "pairs.tsv"
    rows = [f"A report about the river number {k}.\tA report about the river number {k} today.\t1" for k in range(8)]
    rows += [f"A report about the river number {k}.\tBananas grow fast in warm valleys {k}.\t0" for k in range(8)]
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    server = start_mlflow_server(tmp_path, proxied_artifacts=True)  # model files travel through the server
    data = {"root": tmp_path, "corpus": corpus, "pairs": pairs, "registry": server.uri,
            "model": build_tiny_model(tmp_path / "tiny-bert", seed=0)}
    promote_all = {"path": server.uri, "name": "enc", "gate": {"min_gain": -100.0}}
    try:
        night1 = run_night(data, "n1", [], registry=promote_all)
        assert night1["registry"]["registered"]["version"] == 2

        stdout = io.StringIO()
        (tmp_path / "n2.yaml").write_text(yaml.safe_dump(settings(data, "n2", registry=promote_all)))
        with contextlib.redirect_stdout(stdout):
            assert main(["run", str(tmp_path / "n2.yaml"), "--json"]) == 0
        assert json.loads(stdout.getvalue())["noop"] is True

        write_lines(corpus / "b.txt", list(range(40, 70)))
        loads: list[str] = []
        night3 = run_night(data, "n3", loads, registry=promote_all)
        assert night3["registry"]["registered"]["version"] == 3
        reg = open_registry(server.uri, "enc")
        downloaded = tmp_path / "runs" / "n3" / DOWNLOADED_START
        assert Path(loads[0]).resolve() == downloaded.resolve(), "night 3 starts from the downloaded version 2"
        v2_copy = reg.local_path(reg.version(2), tmp_path / "v2-copy")
        assert model_folder_sha256(downloaded) == model_folder_sha256(v2_copy) != model_folder_sha256(data["model"])
        assert (reg.version(3).parent, reg.version(3).promoted, reg.current_number()) == (2, "true", 3)

        write_lines(corpus / "c.txt", list(range(70, 90)))
        night4 = run_night(data, "n4", [], training={"progress": False, "lr": 1.0, "warmup_ratio": 0.0},
                           eval={"pairs": [str(pairs)], "min_improvement": 0.5},
                           registry={"path": server.uri, "name": "enc"})
        v4 = open_registry(server.uri, "enc").version(4)
        assert night4["registry"]["registered"]["version"] == 4 and (v4.parent, v4.promoted) == (3, "false")
        assert v4.reason and open_registry(server.uri, "enc").current_number() == 3

        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["models", "list", server.uri, "--json"]) == 0
        listed = {v["version"]: v for v in json.loads(stdout.getvalue())}
        assert sorted(listed) == [1, 2, 3, 4] and [listed[v]["parent"] for v in (2, 3, 4)] == [1, 2, 3]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["models", "path", server.uri, "--dest", str(tmp_path / "current")]) == 0
        current = Path(stdout.getvalue().strip())
        assert current == (tmp_path / "current").resolve()
        assert model_folder_sha256(current) == model_folder_sha256(reg.local_path(reg.version(3), tmp_path / "v3"))
        assert SentenceTransformer(str(current), device="cpu").encode(["a sentence"]).shape[0] == 1
    finally:
        stop(server.process)
    assert server.process.poll() is not None
