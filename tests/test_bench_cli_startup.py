"""bench/cli_startup.py runs each command in fresh processes and reports what it imported: `models path` answers
without torch, MLflow, Prefect or pyarrow, and the MLflow client it is compared with does import MLflow."""

from __future__ import annotations


def test_the_startup_bench_reports_each_command_and_the_ratio(capsys):
    from bench.cli_startup import main

    result = main(["--repeats", "1"])
    commands = result["commands"]
    assert set(commands) == {"--help", "models path", "mlflow client"}
    assert commands["models path"]["imports"] == "none of torch, mlflow, prefect, pyarrow"
    assert "mlflow" in commands["mlflow client"]["imports"].split()
    assert all(c["cpu_seconds"] > 0 and c["wall_seconds"] > 0 for c in commands.values())
    assert result["models_path_vs_mlflow_client"] > 0
    assert '"models_path_vs_mlflow_client"' in capsys.readouterr().out
