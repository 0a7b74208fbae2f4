"""Real servers on loopback for the tests that need one: `prefect server start` for the tests that deploy or
serve the scheduled flow (tests/test_flows_deploy.py, tests/test_flows_serve.py), with the tiny run config they
schedule, and `mlflow server` for tracking a run on a team's server (tests/test_flows_tracking_server.py).

Each server gets a free port on 127.0.0.1 and keeps everything it writes under the test's folder; its output goes
to `<tmp>/logs/<name>.log`. It runs in a process group of its own, which `stop` ends by PID (SIGTERM, then
SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen | None, grace: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def env_without_api() -> dict[str, str]:
    """This environment less PREFECT_API_URL (the ephemeral API unless a test names a server), the repository
    importable by the processes a test starts."""
    return {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PYTHONPATH": str(REPO)}


def write_tiny_run_config(path: Path, *, out: Path, model: Path, rounds: int, steps_per_round: int) -> Path:
    """A run config of the tiny random BERT `model` on 100 built-in sentences, writing under `out`."""
    path.write_text(yaml.safe_dump({
        "output_dir": str(out), "rounds": rounds, "steps_per_round": steps_per_round, "batch_size": 8,
        "model": {"name_or_path": str(model), "pooling": "mean", "max_length": 16},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 100},
        "mining": {"bands": ["random", "nearest_neighbour"], "params": {"range_max": 10}},
        "training": {"progress": False},
    }))
    return path


@dataclass
class PrefectServer:
    """A started server: `api` is its URL; `env` the environment it was started with (less what only the server
    was given), which the test's clients extend with PREFECT_API_URL (`client_env`)."""

    api: str
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen

    @property
    def client_env(self) -> dict[str, str]:
        return {**self.env, "PREFECT_API_URL": self.api}


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Until `url` answers; fails (with the log's end) when the process exits or `timeout` seconds pass, and then
    stops the process."""
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                return
            except OSError:
                assert process.poll() is None, tail(log)
                assert time.monotonic() < deadline, f"the {what} did not start\n{tail(log)}"
                time.sleep(0.5)
    except BaseException:
        stop(process)
        raise


def start_prefect_server(tmp_path: Path, env: dict[str, str] | None = None,
                         server_env: dict[str, str] | None = None, timeout: float = 180) -> PrefectServer:
    """Start `prefect server start --host 127.0.0.1` and wait until it answers `/health`.

    `env` is added to the environment of the server and of the clients (`PrefectServer.env`), `server_env` to the
    server's only. A server that exits or does not answer within `timeout` seconds fails the test with its log,
    and is stopped."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {**env_without_api(), "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "server.log", "w") as server_log:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env={**base, **(server_env or {})},
                                   start_new_session=True, stdout=server_log, stderr=subprocess.STDOUT)
    _wait_healthy(f"{api}/health", process, logs / "server.log", "Prefect server", timeout)
    return PrefectServer(api, base, logs, process)


@dataclass
class MlflowServer:
    """A started `mlflow server`: `uri` is its tracking URI; `root` holds its database and artifacts."""

    uri: str
    root: Path
    logs: Path
    process: subprocess.Popen


def start_mlflow_server(tmp_path: Path, timeout: float = 180, *, proxied_artifacts: bool = False) -> MlflowServer:
    """Start `mlflow server --host 127.0.0.1` (one worker) with a SQLite backend store and artifacts inside
    `<tmp>/mlflow-server/artifacts`, and wait until it answers `/health`. By default clients write artifacts into
    that folder themselves (`--default-artifact-root`); `proxied_artifacts` makes them upload and download through
    the server (`--artifacts-destination`, `mlflow-artifacts:` URIs), as a team's remote server is used."""
    port = free_port()
    root = tmp_path / "mlflow-server"
    root.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(logs / "mlflow-server.log", "w") as server_log:
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
                                    str(port), "--workers", "1", "--backend-store-uri",
                                    f"sqlite:///{root / 'mlflow.db'}",
                                    "--artifacts-destination" if proxied_artifacts else "--default-artifact-root",
                                    str(root / "artifacts")], env=env, cwd=str(root), start_new_session=True,
                                   stdout=server_log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    _wait_healthy(f"{uri}/health", process, logs / "mlflow-server.log", "MLflow server", timeout)
    return MlflowServer(uri, root, logs, process)
