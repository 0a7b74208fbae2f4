"""`simcse-curriculum serve` against a real Prefect server: a scheduled run happens and completes.

Starts `prefect server start` on a free loopback port with its own PREFECT_HOME, serves the curriculum
flow on a short interval, waits for a scheduled run to complete, and stops what it started (process
groups, by PID).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback_servers import REPO, env_without_api, start_prefect_server, stop, write_tiny_run_config

from dataio.triplet_layout import manifest_path

pytestmark = pytest.mark.server


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_served_deployment_runs_on_its_schedule(tmp_path: Path) -> None:
    from simcse.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-bert")
    out = tmp_path / "scheduled-runs"
    config = write_tiny_run_config(tmp_path / "nightly.yaml", out=out, model=model, rounds=1, steps_per_round=2)
    server = start_prefect_server(tmp_path, env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"})
    api, logs = server.api, server.logs
    serve = None
    try:
        serve_env = {**server.client_env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        with open(logs / "serve.log", "w") as serve_log:
            serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", str(config), "--interval", "10",
                                      "--name", "test-nightly"], env=serve_env, cwd=str(REPO),
                                     start_new_session=True, stdout=serve_log, stderr=subprocess.STDOUT)
        completed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 240
        while not completed:
            assert serve.poll() is None, (logs / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (logs / "serve.log").read_text()[-3000:]
            time.sleep(2)
            try:
                runs = _post(f"{api}/flow_runs/filter", {"deployments": {"name": {"any_": ["test-nightly"]}}})
            except OSError:
                continue
            failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not failed, (logs / "serve.log").read_text()[-3000:]
            completed = [r for r in runs if r["state_type"] == "COMPLETED"]

        run = completed[0]
        assert run["auto_scheduled"], "the run came from the deployment's schedule"
        deployments = _post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["test-nightly"]}}})
        assert deployments and deployments[0]["schedules"][0]["schedule"]["interval"] == 10
        # Each scheduled run writes into its own folder, named by its scheduled start time.
        when = datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00")).astimezone(timezone.utc)
        run_dir = out / when.strftime("%Y%m%dT%H%M%SZ")
        assert (run_dir / "report.md").is_file(), sorted(p.name for p in out.iterdir())
        assert (run_dir / "rounds/0/model/model.safetensors").is_file()
        assert manifest_path(run_dir / "triplets", 0).is_file()
    finally:
        stop(serve)
        stop(server.process)
    assert server.process.poll() is not None and (serve is None or serve.poll() is not None)


def test_serve_refuses_the_ephemeral_api(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "data": {"builtin": "python_docstrings"}}))
    env = env_without_api()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "serve", str(config), "--cron", "0 2 * * *"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "Cannot schedule flows on an ephemeral server" in proc.stderr
    assert "prefect server start --host 127.0.0.1" in proc.stderr and "PREFECT_API_URL" in proc.stderr
