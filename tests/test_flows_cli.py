"""The command line's conventions: usage errors, --version, --json, and what a run prints.

Usage errors and --version run in process (no Prefect). The run tests start `simcse-curriculum run` in
subprocesses, since Prefect's logging is fixed when it is imported; they share one Prefect test harness
server (no ephemeral API start per process) and one tiny 2-round run, which the later calls resume.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from json_audit import stringly

REPO = Path(__file__).resolve().parent.parent
PREFECT_CHATTER = ("Finished in state", "Beginning flow run", "View at ", "Starting temporary server")


# ------------------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv, says", [
    (["--bogus"], "no such option: --bogus"),
    (["nope"], "no such command 'nope'"),
    (["run"], "missing argument"),
    (["run", "x.yaml", "--rounds", "two"], "'--rounds'"),
    (["run", "x.yaml", "--flow", "everything"], "unknown flow 'everything'"),
    (["run", "x.yaml", "--log-level", "LOUD"], "'--log-level'"),
    (["run", "x.yaml", "--quiet", "--log-level", "DEBUG"], "not both"),
    (["mine", "--out", "x", "--round", "-1"], "'--round'"),
])
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli.app import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert says in err and "--help" in err, err
    assert not list(tmp_path.iterdir()), "nothing is written for a usage error"


def test_no_arguments_prints_the_help_and_exits_2_as_click_does(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli.app import main

    assert main([]) == 2
    out, err = capsys.readouterr()
    assert "Usage" in out + err and "run" in out + err and "Traceback" not in out + err


def test_a_usage_error_from_the_console_entry_point_has_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--bogus"], cwd=str(REPO),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no such option: --bogus"), proc.stderr


def test_version_prints_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli.app import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"simcse-curriculum {version('simcse-curriculum')}\n"


def test_dash_capital_v_prints_the_version_too(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli.app import main

    assert main(["-V"]) == 0
    assert capsys.readouterr().out == f"simcse-curriculum {version('simcse-curriculum')}\n"


def test_shell_completion_is_on(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """--install-completion/--show-completion exist, and the shell's completion request is answered."""
    from flows.cli.app import main

    assert main(["--help"]) == 0
    assert "--install-completion" in capsys.readouterr().out
    monkeypatch.setenv("_SIMCSE_CURRICULUM_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "simcse-curriculum mi")
    monkeypatch.setenv("COMP_CWORD", "1")
    main([])
    assert "mine" in capsys.readouterr().out.split()
    monkeypatch.setenv("COMP_WORDS", "simcse-curriculum mine --exclude")
    monkeypatch.setenv("COMP_CWORD", "2")
    main([])
    assert "--exclude-pairs" in capsys.readouterr().out.split()


def _commands(group, path=()):
    """(command path, click command) of every command under `group`."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_has_one_to_three_example_lines_in_its_help(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from flows.cli.app import PROG, app, main

    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 19
    for path, command in commands:
        epilog = command.epilog or ""
        assert epilog.startswith("Examples:"), path
        lines = [line.strip() for line in epilog.splitlines()[1:] if line.strip()]
        assert 1 <= len(lines) <= 3, (path, lines)
        assert all(" ".join((PROG, *path)) in line for line in lines), (path, lines)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    assert main(["run", "--help"]) == 0
    assert "simcse-curriculum run my.yaml --dry-run" in capsys.readouterr().out
    assert main(["teacher", "install", "--help"]) == 0
    assert "pip install 'simcse-curriculum[teacher]' && simcse-curriculum teacher install" in capsys.readouterr().out


def test_result_json_keeps_every_jsonable_key_and_only_those() -> None:
    from flows.cli.commands import result_json

    summary = {"run_dir": Path("/runs/a"), "rounds_completed": [0, 1], "last": {"sts": float("nan"), "ap": 61.5},
               "model_to_use": "/runs/a/rounds/1/model", "handle": object()}
    assert json.loads(result_json(summary)) == {"run_dir": "/runs/a", "rounds_completed": [0, 1],
                                                "last": {"sts": None, "ap": 61.5},
                                                "model_to_use": "/runs/a/rounds/1/model"}


# ------------------------------------------------------------------------------------------ logging

def test_shipped_logging_config_is_prefects_default_plus_the_console_filter() -> None:
    """When Prefect changes its default logging config, this says the copy in flows/ needs the same change."""
    import importlib.util

    from flows.orchestration.prefect_env import LOGGING_CONFIG

    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin
    default = yaml.safe_load((Path(spec.origin).parent / "logging" / "logging.yml").read_text())
    ours = yaml.safe_load(LOGGING_CONFIG.read_text())
    assert ours["filters"] == {"prefect_chatter": {"()": "flows.orchestration.prefect_env.PrefectChatterFilter",
                                                   "level": "${PREFECT_LOGGING_LEVEL}"}}
    assert ours["handlers"]["console"].pop("filters") == ["prefect_chatter"]
    del ours["filters"]
    assert ours == default


def test_chatter_filter_drops_prefects_own_info_lines_below_debug() -> None:
    import prefect.flow_engine

    from flows.orchestration.prefect_env import PrefectChatterFilter

    def record(level: int, pathname: str, func: str = "f") -> logging.LogRecord:
        return logging.LogRecord("prefect.flow_runs", level, pathname, 1, "msg", None, None, func)

    engine = prefect.flow_engine.__file__
    ours = str(REPO / "flows" / "curriculum_flow.py")
    quiet, debug = PrefectChatterFilter("INFO"), PrefectChatterFilter("DEBUG")
    assert not quiet.filter(record(logging.INFO, engine)), "Prefect's own banner or state line"
    assert quiet.filter(record(logging.INFO, ours)), "the run's own progress line"
    assert quiet.filter(record(logging.WARNING, engine)) and quiet.filter(record(logging.ERROR, engine))
    assert quiet.filter(record(logging.INFO, engine, "print_as_log")), "a print in a task, with log_prints"
    assert debug.filter(record(logging.INFO, engine)) and debug.filter(record(logging.DEBUG, engine))


# -------------------------------------------------------------------------------------- a tiny run

@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simcse.testing import build_tiny_model

    root = tmp_path_factory.mktemp("cli")
    model = build_tiny_model(root / "tiny-bert", seed=0)
    sts = root / "sts_dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"Return the value number {i}.\tGive back value {i}.\t{(i * 7) % 6}\n" for i in range(12)), encoding="utf-8")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(root / "run"), "seed": 3, "rounds": 2, "steps_per_round": 2, "batch_size": 8,
        "model": {"name_or_path": str(model), "pooling": "mean", "max_length": 24},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 200},
        "eval": {"sts": [str(sts)]},
        "mining": {"params": {"range_max": 20}},
    }))  # training.progress left at its default (a bar), which only a terminal shows
    return config


def _cli(harness: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`simcse-curriculum ARGS` as a user runs it: Prefect's logging settings left at their defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_")}
    env.update({"PREFECT_API_URL": harness, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def first_run(harness: str, tiny_config: Path) -> subprocess.CompletedProcess[str]:
    return _cli(harness, "run", str(tiny_config))


def test_default_output_is_the_runs_own_progress_without_prefects_state_lines(
        first_run: subprocess.CompletedProcess[str], tiny_config: Path) -> None:
    run_dir = tiny_config.parent / "run"
    selection = json.loads((run_dir / "selection.json").read_text())
    assert first_run.stdout.splitlines() == ["rounds completed: 2 of 2", f"run folder: {run_dir}",
                                             f"report: {run_dir / 'report.md'}",
                                             f"model to use: {run_dir / selection['model_to_use']}",
                                             f"  {selection['note']}"]
    log = first_run.stderr
    assert "base model: STS" in log and "round 0: STS" in log and "round 1: STS" in log
    for chatter in PREFECT_CHATTER:
        assert chatter not in log, f"{chatter!r} in the default output:\n{log}"
    # One line as each long step starts, the first before Prefect is up (before, the first line came after the
    # checks, Prefect's start and the base model's evaluation); no bar off a terminal (before: the trainer's). The
    # checks take well under a second here: unannounced (test_a_step_is_announced_once_it_takes_a_while).
    steps = ["simcse-curriculum - starting the flow on the Prefect API at http",
             f"run folder {run_dir}: 2 rounds of 2 steps", "building the built-in corpus",
             "evaluating " + str(tiny_config.parent / "tiny-bert"), "base model: STS",
             "round 0: mining every band", "embeddings: encoding 200 of 200 texts", "round 0 mined:",
             "round 0: training 2 steps of 8 rows", "round 0 trained:", "evaluating round 0's model", "round 0: STS",
             "round 1: mining", "round 1: training", "evaluating round 1's model", "round 1: STS"]
    lines = log.splitlines()
    found = [next((i for i, line in enumerate(lines) if step in line), None) for step in steps]
    assert None not in found and found == sorted(found), list(zip(steps, found))
    assert found[0] == 0, "the first line says what runs before Prefect is up"
    assert "\r" not in log and "it/s" not in log and "step/s" not in log, "no progress bar off a terminal"


def test_a_step_is_announced_once_it_takes_a_while(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks before Prefect starts: a slow one is said while it runs; a quick one (a config mistake found at
    once, say) prints nothing, so the error stays the one line on stderr."""
    import time

    from flows.run.progress import said_if_slow

    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    with said_if_slow("checking the inputs", after=0.2):
        pass
    assert capsys.readouterr().err == ""
    with said_if_slow("checking the inputs", after=0.05):
        time.sleep(0.5)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("| INFO    | simcse-curriculum - checking the inputs\n"), err
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")  # --quiet
    with said_if_slow("checking the inputs", after=0.05):
        time.sleep(0.5)
    assert capsys.readouterr().err == ""


def test_progress_bars_draw_on_a_terminal_only_and_not_under_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from flows.rounds.train_step import train_config
    from flows.run.config import config_from_mapping
    from flows.run.progress import bars_on

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    config = config_from_mapping({"output_dir": "x", "data": {"builtin": "python_docstrings"}})
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_on() and train_config(config, 0).progress is False, "a log file or a capture: no bar"
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bars_on() and train_config(config, 0).progress is True
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")  # --quiet
    assert not bars_on()


def test_quiet_prints_only_the_result(first_run: subprocess.CompletedProcess[str], harness: str,
                                      tiny_config: Path) -> None:
    proc = _cli(harness, "run", str(tiny_config), "--quiet")  # resumes: both rounds are complete
    assert proc.stdout == first_run.stdout
    assert proc.stderr == ""


def test_json_is_the_only_thing_on_stdout_and_debug_brings_prefects_lines_back(
        first_run: subprocess.CompletedProcess[str], harness: str, tiny_config: Path) -> None:
    run_dir = tiny_config.parent / "run"
    proc = _cli(harness, "run", str(tiny_config), "--json", "--log-level", "debug")
    assert proc.stdout.count("\n") == 1
    result = json.loads(proc.stdout)
    assert stringly(result) == [], "booleans and numbers are JSON's own, not strings"
    assert result["run_dir"] == str(run_dir) and result["report"] == str(run_dir / "report.md")
    assert result["rounds_completed"] == [0, 1] and result["rounds"] == 2
    assert result["base"]["evaluation"] == json.loads((run_dir / "base_metrics.json").read_text())["evaluation"]
    assert result["last"] == json.loads((run_dir / "rounds/1/metrics.json").read_text())
    # selection.json names a round's model inside the run folder (relative); the summary gives the path.
    assert result["model_to_use"] == str(run_dir / json.loads((run_dir / "selection.json").read_text())["model_to_use"])
    assert "Finished in state" in proc.stderr and "Beginning flow run" in proc.stderr


# ------------------------------------------------------------------------------------------ telemetry

TELEMETRY = ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "MLFLOW_DISABLE_TELEMETRY")
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "CIRCLECI", "BUILDKITE", "TF_BUILD",
                "CODEBUILD_BUILD_ID", "BITBUCKET_COMMIT", "TEAMCITY_VERSION", "DRONE", "SEMAPHORE", "APPVEYOR", "BUDDY",
                "CI_NAME")  # Prefect keeps telemetry off on CI by itself: the test must look like a user's shell


def test_telemetry_is_off_for_the_processes_a_command_starts_unless_the_user_chose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli.app import main
    from flows.orchestration.scheduled_runs import set_run_environment

    for name in TELEMETRY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "")  # empty: the tools read it as "track"
    assert main(["--version"]) == 0
    assert {k: os.environ.get(k) for k in TELEMETRY} == {
        "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    # a worker's flow process (flows.orchestration.scheduled_runs): the same, and the user's choice stands
    for name in TELEMETRY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    set_run_environment()
    assert os.environ["DO_NOT_TRACK"] == "0" and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_no_telemetry_notice_on_a_terminal(tmp_path: Path) -> None:
    """Prefect prints its telemetry notice when imported on a terminal by a new user (a fresh PREFECT_HOME, which is
    what every new run folder's `.prefect` is) unless DO_NOT_TRACK is set; `serve` imports Prefect, then refuses
    the ephemeral API, so the notice would be on the terminal within seconds."""
    import select

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "data": {"builtin": "python_docstrings"}}))
    env = {k: v for k, v in os.environ.items()
           if k not in TELEMETRY + CI_VARIABLES and not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO))
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", str(config), "--interval", "60"], env=env,
                            cwd=str(REPO), stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    shown = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:  # EIO: the command has exited
                chunk = b""
            if not chunk:
                break
            shown += chunk
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = shown.decode(errors="replace")
    assert rc == 2 and "Cannot schedule flows on an ephemeral server" in text, text
    assert "anonymous usage data" not in text and "To opt out" not in text, text
