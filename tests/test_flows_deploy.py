"""Scheduled deployments on a work pool (`simcse-curriculum deploy`, `prefect.yaml`) and the folder each scheduled
run writes (flows.orchestration.scheduled_runs): the latest unfinished run is resumed, never run beside or started over.

The server test starts a real `prefect server start` and a real `prefect worker start --pool ...` on loopback
(own PREFECT_HOME, stopped by PID in a finally), deploys a tiny run, triggers two runs (both complete, one after
the other: the second waits for the concurrency slot), kills the third run's flow process during its second
round, and sees the fourth run finish that folder without redoing its first round.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback_servers import REPO, env_without_api, start_prefect_server, stop, tail, write_tiny_run_config

from flows.orchestration.deploy import FLOW_ENTRYPOINT, deployment_tags
from flows.run.config import config_from_mapping, load_config
from flows.run.rundir import RunDir
from flows.run.scheduled_folders import FINISHED, is_finished, scheduled_folders, scheduled_run_folder

WHEN = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)


def _config(root: Path, **changes: Any):
    data = {"output_dir": str(root), "rounds": 2, "steps_per_round": 2, "batch_size": 8,
            "data": {"builtin": "python_docstrings", "builtin_max_sentences": 100}, **changes}
    return config_from_mapping(data)


def _started_run(root: Path, name: str, config) -> Path:
    """A scheduled run's folder as a run leaves it: its config claimed (and no finished.json)."""
    folder = root / name
    RunDir(folder).claim(config.model_copy(update={"output_dir": folder}))
    return folder


# ------------------------------------------------------------------------------------------ the run folder
def test_the_latest_unfinished_run_is_resumed_and_a_finished_one_is_not(tmp_path: Path) -> None:
    root = tmp_path / "nightly"
    config = _config(root)
    with scheduled_run_folder(config, WHEN) as first:
        assert first.path == root / "20261127T020000Z" and not first.resumed
    old = _started_run(root, "20261125T020000Z", config)
    (old / FINISHED).write_text("{}")
    unfinished = _started_run(root, "20261126T020000Z", config)
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.path == unfinished and chosen.resumed
    (unfinished / FINISHED).write_text("{}")
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.path == root / "20261127T020000Z" and not chosen.resumed


def test_only_the_latest_folder_is_resumed(tmp_path: Path) -> None:
    root = tmp_path / "nightly"
    config = _config(root)
    _started_run(root, "20261125T020000Z", config)  # left behind long ago
    latest = _started_run(root, "20261126T020000Z", config)
    (latest / FINISHED).write_text("{}")
    with scheduled_run_folder(config, WHEN) as chosen:
        assert not chosen.resumed and chosen.path == root / "20261127T020000Z"


def test_a_folder_killed_before_its_run_began_is_used_and_a_foreign_one_is_not(tmp_path: Path) -> None:
    root = tmp_path / "nightly"
    config = _config(root)
    empty = root / "20261126T020000Z"
    empty.mkdir(parents=True)
    (empty / ".simcse-curriculum.lock").write_text("{}")  # left by a process killed before it claimed the folder
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.path == empty and chosen.resumed
    (empty / "notes.txt").write_text("a person's file")
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.path == root / "20261127T020000Z" and not chosen.resumed


def test_a_run_due_in_the_same_second_gets_its_own_folder(tmp_path: Path) -> None:
    root = tmp_path / "nightly"
    config = _config(root)
    for n in ("", "-2", "-3", "-4", "-5", "-6", "-7", "-8", "-9", "-10"):
        folder = _started_run(root, f"20261127T020000Z{n}", config)
        (folder / FINISHED).write_text("{}")
    assert scheduled_folders(root)[-1].name == "20261127T020000Z-10"  # by number, not as text
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.path == root / "20261127T020000Z-11" and not chosen.resumed


def test_an_unfinished_run_with_other_settings_is_left_as_it_is(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "nightly"
    unfinished = _started_run(root, "20261126T020000Z", _config(root))
    edited = _config(root, seed=7)
    with caplog.at_level(logging.WARNING, logger="flows"), scheduled_run_folder(edited, WHEN) as chosen:
        assert chosen.path == root / "20261127T020000Z" and not chosen.resumed
    assert "other settings (seed)" in caplog.text and str(unfinished) in caplog.text
    assert not is_finished(unfinished) and (unfinished / "config.yaml").is_file()


def test_an_unfinished_run_in_use_by_another_process_is_not_taken_over(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "nightly"
    config = _config(root)
    busy = _started_run(root, "20261126T020000Z", config)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dataio.folder_lock import lock_folder\n"
                               f"with lock_folder({str(busy)!r}, 'simcse-curriculum run x.yaml'):\n"
                               "    print('held', flush=True); sys.stdin.read()"],
        cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.WARNING, logger="flows"), scheduled_run_folder(config, WHEN) as chosen:
            assert chosen.path == root / "20261127T020000Z" and not chosen.resumed
        assert "in use by 'simcse-curriculum run x.yaml'" in caplog.text
    finally:
        holder.communicate("", timeout=30)
    with scheduled_run_folder(config, WHEN) as chosen:  # released: resumed again
        assert chosen.path == busy and chosen.resumed


def test_a_resumed_folder_stays_locked_while_the_run_writes_it(tmp_path: Path) -> None:
    from dataio.folder_lock import held_folders

    root = tmp_path / "nightly"
    config = _config(root)
    unfinished = _started_run(root, "20261126T020000Z", config)
    with scheduled_run_folder(config, WHEN) as chosen:
        assert chosen.resumed and unfinished.resolve() in held_folders()
    assert unfinished.resolve() not in held_folders()


def test_the_finished_record_and_the_run_name_outside_a_flow_run(tmp_path: Path) -> None:
    from flows.orchestration.scheduled_runs import mark_finished, scheduled_run_name

    mark_finished(tmp_path, {"rounds_completed": [0, 1]}, resumed=True)
    record = json.loads((tmp_path / FINISHED).read_text())
    assert record["resumed"] is True and record["rounds_completed"] == [0, 1] and record["flow_run_id"] is None
    assert is_finished(tmp_path)
    assert re.fullmatch(r"simcse-curriculum-\d{4}-\d{2}-\d{2}T\d{4}Z", scheduled_run_name())


# ------------------------------------------------------------------------------------------ prefect.yaml
def test_prefect_yaml_deploys_what_the_deploy_command_does() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    assert spec["build"] is None and spec["push"] is None and "pull" not in spec
    names = [d["name"] for d in spec["deployments"]]
    assert names == ["domain_unlabeled", "demo"]
    for deployment in spec["deployments"]:
        config_path = REPO / deployment["parameters"]["config"]
        assert config_path.is_file(), config_path
        assert deployment["entrypoint"] == FLOW_ENTRYPOINT
        assert deployment["tags"] == deployment_tags(load_config(config_path), config_path)
        assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert deployment["work_pool"]["name"] == "simcse-curriculum"
        assert [s.get("cron") for s in deployment["schedules"]] and all(s.get("timezone") for s in
                                                                         deployment["schedules"])


# ------------------------------------------------------------------------------------------ the command
def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_deploy_refuses_the_ephemeral_api_and_a_bad_schedule(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"),
                                      "data": {"builtin": "python_docstrings"}}))
    env = env_without_api()
    proc = _cli(["deploy", str(config), "--pool", "p", "--cron", "0 2 * * *"], env)
    assert proc.returncode == 2, proc.stderr
    assert "Cannot deploy to an ephemeral server" in proc.stderr and "PREFECT_API_URL" in proc.stderr
    proc = _cli(["deploy", str(config), "--pool", "p", "--cron", "0 2 * *"], env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --cron: Invalid cron string"), proc.stderr
    proc = _cli(["deploy", str(config), "--pool", "p", "--cron", "0 2 * * *", "--timezone", "Mars/Base"], env)
    assert proc.returncode == 2 and "unknown time zone 'Mars/Base'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ a real server + worker
def _api(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST `body`) on the server's REST API. A busy server's 503 / 429 (its SQLite database locked by
    the runs' writes) is retried, as Prefect's own client does."""
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(8):
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or attempt == 7:
                raise
        time.sleep(1 + attempt)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.server
@pytest.mark.slow
def test_a_deployment_on_a_process_worker_runs_one_night_at_a_time_and_resumes_a_killed_one(tmp_path: Path) -> None:
    import psutil

    from simcse.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-bert")
    out = tmp_path / "nightly-runs"
    config = write_tiny_run_config(tmp_path / "nightly.yaml", out=out, model=model, rounds=2, steps_per_round=6)
    server = start_prefect_server(tmp_path, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                                  server_env={"PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2"})
    api, logs = server.api, server.logs
    worker = None
    try:
        client_env = server.client_env

        # --- a config whose corpus is missing is refused before anything is registered
        broken = tmp_path / "broken.yaml"
        broken.write_text(yaml.safe_dump({"output_dir": str(out), "data": {"corpus": str(tmp_path / "none.txt")}}))
        proc = _cli(["deploy", str(broken), "--pool", "simcse-curriculum", "--cron", "0 2 * * *"], client_env)
        assert proc.returncode == 2 and "none.txt" in proc.stderr and proc.stderr.startswith("error:"), proc.stderr
        assert _api(f"{api}/deployments/filter", {}) == []
        assert "simcse-curriculum" not in {p["name"] for p in _api(f"{api}/work_pools/filter", {})}

        # --- deploy: the pool is created, the deployment carries the schedule, the limit, tags and parameters
        proc = _cli(["deploy", str(config), "--pool", "simcse-curriculum", "--cron", "0 2 * * *", "--timezone",
                     "Europe/Paris", "--name", "test-nightly", "--env", "OMP_NUM_THREADS=1", "--json"], client_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        deployed = json.loads(proc.stdout)
        assert deployed["work_pool_created"] is True
        pool = _api(f"{api}/work_pools/simcse-curriculum")
        assert pool["type"] == "process"
        deployment = _api(f"{api}/deployments/{deployed['deployment_id']}")
        assert deployment["name"] == "test-nightly" and deployment["entrypoint"] == FLOW_ENTRYPOINT
        assert deployment["work_pool_name"] == "simcse-curriculum"
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        schedule = deployment["schedules"][0]["schedule"]
        assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Europe/Paris"
        tags = {"simcse-curriculum", "config:nightly", "data:python_docstrings"}
        assert set(deployment["tags"]) == tags
        assert deployment["parameters"] == {"config": str(config.resolve())}
        assert deployment["job_variables"] == {"env": {"OMP_NUM_THREADS": "1"}}

        # --- a worker on the pool (the real CLI), polling every second
        worker_env = {**client_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
        with open(logs / "worker.log", "w") as worker_log:
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool",
                                       "simcse-curriculum"], env=worker_env, cwd=str(tmp_path),
                                      start_new_session=True, stdout=worker_log, stderr=subprocess.STDOUT)

        def trigger() -> dict[str, Any]:
            return _api(f"{api}/deployments/{deployed['deployment_id']}/create_flow_run", {})

        def wait(ids: list[str], timeout: float = 900) -> list[dict[str, Any]]:
            deadline = time.monotonic() + timeout
            while True:
                assert worker.poll() is None, tail(logs / "worker.log")
                runs = [_api(f"{api}/flow_runs/{i}") for i in ids]
                if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs):
                    return runs
                assert time.monotonic() < deadline, (
                    f"{[(r['name'], r['state_name']) for r in runs]}\n{tail(logs / 'worker.log')}")
                time.sleep(1)

        def check_name_and_tags(run: dict[str, Any]) -> None:
            expected = _time(run["expected_start_time"]).astimezone(timezone.utc)
            assert run["name"] == f"nightly-{expected:%Y-%m-%dT%H%MZ}", run["name"]
            assert tags <= set(run["tags"]), run["tags"]

        # --- two runs triggered together: both complete, the second only after the first ended
        first, second = trigger(), trigger()
        runs = wait([first["id"], second["id"]])
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], tail(logs / "worker.log")
        earlier, later = sorted(runs, key=lambda r: _time(r["start_time"]))
        assert _time(later["start_time"]) >= _time(earlier["end_time"]), (earlier, later)
        waited = _api(f"{api}/flow_run_states/?flow_run_id={later['id']}")
        assert "AwaitingConcurrencySlot" in {s["name"] for s in waited}, [s["name"] for s in waited]
        for run in runs:
            check_name_and_tags(run)
        folders = scheduled_folders(out)
        assert len(folders) == 2 and all(is_finished(f) for f in folders), folders
        assert all(RunDir(f).completed_rounds() == [0, 1] for f in folders)
        finished_by = {json.loads((f / FINISHED).read_text())["flow_run_id"] for f in folders}
        assert finished_by == {first["id"], second["id"]}

        # --- a third run killed (SIGKILL of its flow process) once its first round is complete
        third = trigger()
        deadline = time.monotonic() + 300
        while True:
            new = [f for f in scheduled_folders(out) if f not in folders]
            if new and RunDir(new[0]).round_complete(0):
                break
            assert time.monotonic() < deadline, tail(logs / "worker.log")
            time.sleep(0.1)
        killed = []
        for child in psutil.Process(worker.pid).children(recursive=True):
            try:
                if child.environ().get("PREFECT__FLOW_RUN_ID") == third["id"]:
                    child.send_signal(signal.SIGKILL)
                    killed.append(child.pid)
            except psutil.Error:
                continue
        assert killed, "the third run's flow process was not found among the worker's children"
        [crashed] = wait([third["id"]], timeout=180)
        assert crashed["state_type"] in ("CRASHED", "FAILED"), crashed["state_type"]
        run_dir = RunDir(new[0])
        assert not is_finished(run_dir.root)
        assert run_dir.completed_rounds() == [0], "the kill came after round 1 had finished; nothing to resume"
        round0 = run_dir.metrics_path(0)
        round0_before = (round0.read_bytes(), round0.stat().st_mtime_ns)
        model0 = run_dir.model_dir(0) / "model.safetensors"
        model0_before = model0.stat().st_mtime_ns

        # --- the next run finishes that folder: round 0 is not redone, round 1 is, and no new folder is started
        fourth = trigger()
        [resumed] = wait([fourth["id"]])
        assert resumed["state_type"] == "COMPLETED", tail(logs / "worker.log")
        check_name_and_tags(resumed)
        assert scheduled_folders(out) == [*folders, run_dir.root]
        record = json.loads((run_dir.root / FINISHED).read_text())
        assert record["flow_run_id"] == fourth["id"] and record["resumed"] is True
        assert record["rounds_completed"] == [0, 1] and run_dir.completed_rounds() == [0, 1]
        assert (round0.read_bytes(), round0.stat().st_mtime_ns) == round0_before, "round 0 was trained again"
        assert model0.stat().st_mtime_ns == model0_before
        stop(worker)

        # --- prefect.yaml, as a team deploys it: `prefect deploy` from the repository's root
        proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "domain_unlabeled"],
                              env=client_env, cwd=str(REPO), capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        [from_yaml] = _api(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["domain_unlabeled"]}}})
        assert from_yaml["entrypoint"] == FLOW_ENTRYPOINT and from_yaml["work_pool_name"] == "simcse-curriculum"
        assert from_yaml["global_concurrency_limit"]["limit"] == 1
        assert from_yaml["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert from_yaml["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert set(from_yaml["tags"]) == {"simcse-curriculum", "config:domain_unlabeled", "data:twitter/unlabeled"}
        assert from_yaml["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    finally:
        stop(worker)
        stop(server.process)
    assert server.process.poll() is not None and (worker is None or worker.poll() is not None)


# ------------------------------------------------------------------------------------------ a finished night
def test_a_finished_night_drops_its_last_optimizer_state_and_an_unfinished_one_keeps_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The last round's optimizer state is kept for the next round to continue from; a finished night has none, so
    it is removed once the night is marked finished (each was ~173 MB of a MiniLM run's folder, kept forever). A
    night that stopped before it finished keeps it: the next night resumes from it."""
    from flows.orchestration.scheduled_runs import run_scheduled

    root = tmp_path / "nightly"
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(root), "rounds": 2, "steps_per_round": 2, "batch_size": 8,
                                      "data": {"builtin": "python_docstrings", "builtin_max_sentences": 100}}))

    def night(complete: int):
        def run(cfg: Any) -> dict[str, Any]:  # what the curriculum leaves: models, records, the last optimizer state
            folder = RunDir(Path(cfg.output_dir))
            folder.claim(cfg)
            for r in range(complete):
                folder.model_dir(r).mkdir(parents=True)
                (folder.model_dir(r) / "config.json").write_text("{}")
                folder.metrics_path(r).write_text("{}")
            folder.optimizer_dir(complete - 1).mkdir()
            (folder.optimizer_dir(complete - 1) / "optimizer.pt").write_bytes(b"z" * 3000)
            if complete < cfg.rounds:
                raise RuntimeError("killed during round 1")
            return {"rounds_completed": list(range(complete))}
        return run

    with pytest.raises(RuntimeError, match="killed"):
        run_scheduled(config, WHEN, night(1))
    (stopped,) = scheduled_folders(root)
    assert (stopped / "rounds/0/optimizer/optimizer.pt").is_file(), "round 1 continues from it when resumed"
    assert RunDir(stopped).drop_spent_optimizer(2) == 0, "not every round is complete: kept"
    shutil.rmtree(stopped)
    with caplog.at_level(logging.INFO, logger="flows"):
        run_scheduled(config, WHEN, night(2))
    (finished,) = scheduled_folders(root)
    assert is_finished(finished) and not (finished / "rounds/1/optimizer").exists()
    assert (finished / "rounds/1/model/config.json").is_file() and (finished / "rounds/1/metrics.json").is_file()
    assert "round 1's optimizer state removed (0.0 MB): the night is finished" in caplog.text
