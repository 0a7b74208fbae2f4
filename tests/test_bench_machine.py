"""bench.machine, the one description of where a benchmark or experiment ran, and bench's way of starting its own
children (`python -m bench.<name>` in this checkout)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from bench import REPO, child_options, machine, module_command


def test_the_record_says_machine_date_and_commit_and_fits_json() -> None:
    record = machine.describe(threads=3)
    assert {"host", "os", "cpu", "cores", "load", "date", "commit", "threads"} <= set(record)
    assert record["threads"] == 3 and record["cores"] == os.cpu_count()
    assert json.loads(json.dumps(record)) == record
    # None where git cannot say (no checkout, no git, a repository git refuses to read)
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{12}(\+changes)?", record["commit"])


def test_the_line_reads_a_record_and_keeps_an_older_plain_string() -> None:
    record = {"host": "vm", "cpu": "x86_64", "cores": 2, "load": [1.0, 0.5, 0.25], "date": "2026-12-07T10:00:00+00:00",
              "commit": "d2da146abcde", "torch": "2.13.0+cpu", "threads": 1, "accelerator": None}
    assert machine.text(record) == ("vm | x86_64, 2 cores | torch 2.13.0+cpu, 1 thread, no GPU | load 1.00 0.50 0.25 | "
                                    "2026-12-07 10:00 UTC | commit d2da146abcde")
    gpu = machine.text({**record, "accelerator": "NVIDIA H100", "threads": 8, "commit": None})
    assert "torch 2.13.0+cpu, 8 threads, NVIDIA H100" in gpu and gpu.endswith("commit unknown")
    old = "vm (CPU, 2 cores, x86_64, torch threads per worker 1)"
    assert machine.text(old) == old


def test_children_run_this_checkouts_bench_and_product() -> None:
    code = "import bench, dataio; print(bench.__file__); print(dataio.__file__)"
    options = child_options()
    assert options["cwd"] == str(REPO) and options["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         **options).stdout.split()
    assert out == [str(REPO / "bench" / "__init__.py"), str(REPO / "dataio" / "__init__.py")]
    assert module_command("bench.experiment", "status")[1:] == ["-m", "bench.experiment", "status"]


def test_the_experiment_sections_state_a_record_or_an_older_string_as_one_line(tmp_path) -> None:
    from bench import experiment_design as design
    from bench import experiment_report as report

    size = design.load_size("smoke")
    record = machine.describe(threads=1)
    for written, expected in ((record, machine.text(record)), ("vm (CPU, 2 cores)", "vm (CPU, 2 cores)")):
        (tmp_path / "run_meta.json").write_text(json.dumps({"machine": written}))
        assert report.run_meta(tmp_path, size, [])["machine"] == expected
