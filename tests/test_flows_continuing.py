"""Runs that build on each other (issue 14, parts 3 and 4): warm start from the registry's current version, a
corpus folder that grows between runs, "what was new", no-op runs, and the promotion gate at a run's end.

Five nights on a tiny random BERT and a corpus folder, through the round loop without Prefect (flows.rounds.loop with
the plain steps, as the experiment harness runs it; the Prefect flow calls the same flows.rounds.continuing):

    night 1   new registry (version 1 = the base model); corpus a.txt          -> version 2, promoted
    night 2   nothing new (run from the command line)                           -> a recorded no-op
    night 3   b.txt added: 40 new sentences, 5 repeated from a.txt              -> warm start from 2, version 3
    night 4   c.txt added, learning rate 1.0 (a run that breaks the model)      -> version 4, not promoted
    night 5   the same inputs and settings again (tracking on)                  -> a no-op (4 tried them)

The gate's margin is -100 points on nights 1 and 3 (a tiny random model's score moves by noise; these nights
test the warm start and the data, so their promotion is made certain) and the default on night 4
(eval.min_improvement, 0.5 here).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported: no network

from dataio.errors import InputError  # noqa: E402


def sentence(i: int) -> str:
    return f"Sentence number {i} talks about topic {i % 7} and item {i * 7919 % 1000}."


def write_lines(path: Path, numbers: list[int]) -> Path:
    path.write_text("".join(sentence(i) + "\n" for i in numbers), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcse.testing import build_tiny_model

    root = tmp_path_factory.mktemp("nightly")
    corpus = root / "corpus"
    corpus.mkdir()
    write_lines(corpus / "a.txt", list(range(60)))
    pairs = root / "dev_pairs.tsv"  # near-duplicates (1) against unrelated sentences (0): a random BERT scores high
    rows = [f"A report about the river number {k}.\tA report about the river number {k} today.\t1" for k in range(12)]
    rows += [f"A report about the river number {k}.\tBananas grow fast in warm valleys {k}.\t0" for k in range(12)]
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return {"root": root, "corpus": corpus, "pairs": pairs, "model": build_tiny_model(root / "tiny-bert", seed=0),
            "registry": root / "registry"}


def settings(data: dict[str, Path], night: str, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "output_dir": str(data["root"] / "runs" / night), "seed": 3, "rounds": 1, "steps_per_round": 2,
        "batch_size": 8, "model": {"name_or_path": str(data["model"]), "pooling": "mean", "max_length": 24},
        "data": {"corpus": {"path": str(data["corpus"])}},
        "eval": {"pairs": [str(data["pairs"])]},
        "mining": {"params": {"range_max": 20}},
        "training": {"progress": False},
        "registry": {"path": str(data["registry"]), "name": "enc", "gate": {"min_gain": -100.0}},
    }
    out.update(changes)
    return out


def scheduled_config(tmp_path: Path, data: dict[str, Path]) -> Path:
    """A scheduled run's YAML over a growing corpus folder (`corpus/a.txt`, 40 lines) with a registry whose gate
    always promotes, writing into `nightly/`."""
    (tmp_path / "corpus").mkdir()
    write_lines(tmp_path / "corpus" / "a.txt", list(range(40)))
    config = settings(data, "unused", registry={"path": str(tmp_path / "registry"), "name": "enc",
                                                 "gate": {"min_gain": -100.0}})
    config.update(output_dir=str(tmp_path / "nightly"), data={"corpus": {"path": str(tmp_path / "corpus")}})
    yaml_path = tmp_path / "nightly.yaml"
    yaml_path.write_text(yaml.safe_dump(config))
    return yaml_path


def run_night(data: dict[str, Path], night: str, loads: list[str], **changes: Any) -> dict[str, Any]:
    """One night through flows.rounds.continuing with the plain steps; `loads` collects every model folder loaded."""
    from flows.rounds.continuing import run_continuing
    from flows.rounds.loop import plain_steps
    from flows.run import inputs as run_inputs
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import torch_threads

    config = config_from_mapping(settings(data, night, **changes))
    real = run_inputs.load_encoder

    def recording(model_path: str, cfg: Any, *runtime: str) -> Any:
        loads.append(model_path)
        return real(model_path, cfg, *runtime)

    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(run_inputs, "load_encoder", recording)
        cpu, wall = time.process_time(), time.perf_counter()
        summary = run_continuing(config, lambda cfg: plain_steps(cfg, RunDir(Path(cfg.output_dir))))
        summary["cpu_seconds"], summary["wall_seconds"] = time.process_time() - cpu, time.perf_counter() - wall
    return summary


@pytest.fixture(scope="module")
def nights(data: dict[str, Path]) -> dict[str, Any]:
    from flows.cli.app import main

    out: dict[str, Any] = {}
    out["loads1"] = []
    out["night1"] = run_night(data, "n1", out["loads1"])

    # Night 2 from the command line: nothing new, so no input check, no Prefect, no model.
    config = data["root"] / "night2.yaml"
    config.write_text(yaml.safe_dump(settings(data, "n2")))
    import contextlib
    import io

    stdout = io.StringIO()
    cpu, wall = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        rc = main(["run", str(config), "--json"])
    out["night2"] = {"rc": rc, "stdout": stdout.getvalue(), "cpu_seconds": time.process_time() - cpu,
                     "wall_seconds": time.perf_counter() - wall}

    write_lines(data["corpus"] / "b.txt", list(range(60, 100)) + list(range(5)))
    out["loads3"] = []
    out["night3"] = run_night(data, "n3", out["loads3"])

    write_lines(data["corpus"] / "c.txt", list(range(100, 130)))
    breaking = {"training": {"progress": False, "lr": 1.0, "warmup_ratio": 0.0},
                "eval": {"pairs": [str(data["pairs"])], "min_improvement": 0.5},
                "registry": {"path": str(data["registry"]), "name": "enc"}}
    out["loads4"] = []
    out["night4"] = run_night(data, "n4", out["loads4"], **breaking)
    out["loads5"] = []
    out["night5"] = run_night(data, "n5", out["loads5"], **breaking,
                              tracking={"enabled": True, "uri": str(data["root"] / "mlflow")})
    return out


def registry(data: dict[str, Path]) -> Any:
    from flows.registry.model_registry import open_registry

    return open_registry(str(data["registry"]), "enc")


def test_a_new_registry_starts_from_the_base_model_and_the_first_run_becomes_version_2(data, nights):
    from dataio.hashing import model_folder_sha256

    reg = registry(data)
    v1, v2 = reg.version(1), reg.version(2)
    assert v1.parent is None and v2.parent == 1 and v2.promoted == "true" and reg.current_number() >= 2
    assert model_folder_sha256(reg.local_path(v1)) == model_folder_sha256(Path(data["model"])), "v1 is the base model"
    start = json.loads((data["root"] / "runs/n1/warm_start.json").read_text())
    assert start["parent_version"] == 1 and start["model_sha256"] == model_folder_sha256(Path(data["model"]))
    summary = nights["night1"]
    assert summary["registry"]["registered"]["version"] == 2 and summary["registry"]["new_rows"] == 60
    report = (data["root"] / "runs/n1/report.md").read_text()
    assert "## Registry" in report and "Registered as version 2" in report and "60 rows new" in report


def test_a_run_warm_starts_from_the_current_version_and_records_it_as_its_parent(data, nights):
    """Night 3 loads the registry's current model (version 2), not the base model: the first model it loads
    has version 2's files, byte for byte, and the version it registers names 2 as its parent."""
    from dataio.hashing import model_folder_sha256

    reg = registry(data)
    v2_files = reg.local_path(reg.version(2))
    first_loaded = Path(nights["loads3"][0])
    assert first_loaded.resolve() == v2_files.resolve()
    base_sha = model_folder_sha256(Path(data["model"]))
    assert model_folder_sha256(first_loaded) == model_folder_sha256(v2_files) != base_sha
    start = json.loads((data["root"] / "runs/n3/warm_start.json").read_text())
    assert start["parent_version"] == 2 and start["model_sha256"] == model_folder_sha256(v2_files)
    base = json.loads((data["root"] / "runs/n3/base_metrics.json").read_text())
    assert Path(base["model"]).resolve() == v2_files.resolve(), "the starting version is the run's baseline"
    v3 = reg.version(3)
    assert v3.parent == 2 and v3.promoted == "true"
    saved = yaml.safe_load((data["root"] / "runs/n3/config.yaml").read_text())
    assert Path(saved["model"]["name_or_path"]).resolve() == v2_files.resolve()


def test_a_run_with_no_new_data_is_a_recorded_no_op_in_seconds(data, nights):
    night2 = nights["night2"]
    assert night2["rc"] == 0, night2
    result = json.loads(night2["stdout"])
    assert result["noop"] is True and result["current_version"] == 2 and "has seen every input file" in result["reason"]
    folder = data["root"] / "runs/n2"
    assert (folder / "noop.json").is_file() and "nothing to do" in (folder / "report.md").read_text()
    for absent in ("base_metrics.json", "rounds", "triplets", "cache"):
        assert not (folder / absent).exists(), absent
    # CPU time, not wall time: this machine may be busy. Even a one-round night on a tiny model costs several
    # times what the no-op does (the no-op reads the registry and hashes the files; it loads no model).
    assert night2["cpu_seconds"] < 2 and night2["cpu_seconds"] * 5 < nights["night1"]["cpu_seconds"], \
        (night2["cpu_seconds"], nights["night1"]["cpu_seconds"])
    assert [v.version for v in registry(data).versions() if v.run_dir and v.run_dir.endswith("n2")] == []


def test_a_file_added_to_the_corpus_folder_is_mined_and_counted_as_new(data, nights):
    from dataio.triplets import read_triplets

    record = json.loads((data["root"] / "runs/n3/data_seen.json").read_text())
    assert record["new_rows"] == 40 and record["parent_version"] == 2
    by_name = {Path(f["path"]).name: f for f in record["files"]}
    assert by_name["a.txt"]["status"] == "seen" and by_name["a.txt"]["new_rows"] == 0
    assert by_name["b.txt"]["status"] == "new" and by_name["b.txt"]["rows"] == 45 and by_name["b.txt"]["new_rows"] == 40
    assert record["seen"]["rows"] == 100 and nights["night3"]["registry"]["new_rows"] == 40
    anchors = set(read_triplets(data["root"] / "runs/n3/triplets", columns=["anchor"]).column("anchor").to_pylist())
    assert anchors & {sentence(i) for i in range(60, 100)}, "the new file is mined"
    assert anchors & {sentence(i) for i in range(5, 60)}, "with the whole corpus, old files included"
    # The registered version carries what its line has seen, for the next night to compare with.
    from flows.run.new_data import seen_of_version

    reg = registry(data)
    v3 = reg.version(3)
    assert v3.tags["simcse.data_new_rows"] == "40"
    seen = seen_of_version(reg, v3)
    assert seen.rows == 100 and len(seen.ids()) == 100 and len(seen.files) == 2
    assert "40 rows new" in (data["root"] / "runs/n3/report.md").read_text()


def test_a_regressing_run_is_not_promoted_and_the_current_model_stays(data, nights):
    reg = registry(data)
    v4 = reg.version(4)
    assert v4.parent == 3 and v4.promoted == "false" and reg.current_number() == 3
    assert v4.gate["min_gain"] == 0.5, "the gate's margin defaults to the run's eval.min_improvement"
    registered = nights["night4"]["registry"]["registered"]
    assert registered["promoted"] is False and registered["current_version"] == 3
    assert nights["night4"]["registry"]["new_rows"] == 30
    assert Path(nights["loads4"][0]).resolve() == reg.local_path(reg.version(3)).resolve()
    # The same inputs and settings from the same version again: nothing to learn from repeating it.
    night5 = nights["night5"]
    assert night5["noop"] is True and "version 4 was made from version 3" in night5["reason"], night5
    assert nights["loads5"] == [] and reg.current_number() == 3 and len(reg.versions()) == 4
    # With tracking on, the no-op is an MLflow run of its own, tagged as one.
    from flows.registry.mlflow_store import MlflowStore

    client = MlflowStore.at(data["root"] / "mlflow").client()
    runs = client.search_runs([client.get_experiment_by_name("simcse-curriculum").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["simcse.noop"] == "true" and runs[0].info.status == "FINISHED"
    assert "version 4 was made from version 3" in runs[0].data.tags["simcse.noop_reason"]
    assert runs[0].data.metrics["data/new_rows"] == 0


def test_force_runs_even_when_nothing_is_new_and_a_resumed_run_is_never_a_no_op(data, nights):
    from flows.rounds.continuing import check_nothing_new
    from flows.run.config import config_from_mapping

    again = config_from_mapping(settings(data, "n6"))  # night 3's settings: version 3 has seen a.txt and b.txt ...
    (data["corpus"] / "c.txt").rename(data["root"] / "c.txt")  # ... and nothing else now
    try:
        assert check_nothing_new(again).reason is not None
        forced = again.model_copy(update={"registry": again.registry.model_copy(update={"force": True})})
        assert check_nothing_new(forced).reason is None
        resumed = config_from_mapping(settings(data, "n3"))  # a folder holding a started run continues
        assert check_nothing_new(resumed).reason is None
    finally:
        (data["root"] / "c.txt").rename(data["corpus"] / "c.txt")


def test_run_force_without_a_registry_is_a_usage_error(data, tmp_path, capsys):
    from flows.cli.app import main

    plain = settings(data, "plain")
    plain.pop("registry")
    config = tmp_path / "plain.yaml"
    config.write_text(yaml.safe_dump(plain))
    assert main(["run", str(config), "--force"]) == 2
    assert "registry" in capsys.readouterr().err


def test_a_scheduled_night_with_nothing_new_is_a_no_op_unless_forced(data, tmp_path):
    """The scheduled flow's `force` parameter (`prefect deployment run NAME -p force=true`), through what the flow
    runs (flows.orchestration.scheduled_runs.run_scheduled) with the plain steps in place of Prefect's tasks, so no
    server: night
    1 registers version 2, which saw the corpus; night 2 has nothing new and is a no-op; night 3, forced, trains
    from version 2 and registers version 3. With `retention.keep: 1` each night prunes older runs once finished."""
    from flows.orchestration.curriculum_flow import scheduled_flow
    from flows.orchestration.scheduled_runs import run_scheduled
    from flows.registry.model_registry import open_registry
    from flows.rounds.continuing import run_continuing
    from flows.rounds.loop import plain_steps
    from flows.run.rundir import RunDir
    from flows.run.scheduled_folders import is_finished, scheduled_folders
    from simcse.testing import torch_threads

    yaml_path = scheduled_config(tmp_path, data)
    yaml_path.write_text(yaml.safe_dump({**yaml.safe_load(yaml_path.read_text()), "retention": {"keep": 1}}))

    def curriculum(cfg: Any) -> dict[str, Any]:
        summary = run_continuing(cfg, lambda c: plain_steps(c, RunDir(Path(c.output_dir))))
        # A registry run is one night, finished once registered (a run by hand too): its last optimizer state goes.
        assert not list(Path(cfg.output_dir).glob("rounds/*/optimizer")), "no round continues from it"
        return summary

    with torch_threads(1):
        first = run_scheduled(yaml_path, None, curriculum)
        second = run_scheduled(yaml_path, None, curriculum)
        third = run_scheduled(yaml_path, None, curriculum, force=True)
    assert first["registry"]["registered"]["version"] == 2
    assert second["noop"] is True and second["current_version"] == 2 and second["rounds_completed"] == []
    assert third.get("noop") is not True and third["rounds_completed"] == [0]
    assert third["registry"]["parent_version"] == 2 and third["registry"]["registered"]["version"] == 3
    assert open_registry(str(tmp_path / "registry"), "enc").version(3).parent == 2
    folders = scheduled_folders(tmp_path / "nightly")
    assert [Path(s["run_dir"]) for s in (first, second, third)] == folders and all(is_finished(f) for f in folders)
    assert (folders[1] / "noop.json").is_file() and not (folders[2] / "noop.json").exists()
    # retention.keep 1: each night prunes after it finished; night 3 is the second that trained, so night 1's
    # triplets and caches go (the no-op holds nothing and does not count), and version 2 still loads.
    assert first["retention"]["pruned_runs"] == [] and second["retention"]["pruned_runs"] == []
    assert third["retention"]["pruned_runs"] == [folders[0].name] and third["retention"]["bytes"] > 0
    assert not (folders[0] / "triplets").exists() and not (folders[0] / "cache").exists()
    assert (folders[0] / "pruned.json").is_file() and (folders[0] / "report.md").is_file()
    assert (folders[2] / "triplets").is_dir()
    registry = open_registry(str(tmp_path / "registry"), "enc")
    assert (registry.local_path(registry.version(2)) / "config.json").is_file()
    # What `-p force=true` is checked against: the deployment's parameter schema, from the flow's signature.
    force = scheduled_flow.parameters.properties["force"]
    assert force["type"] == "boolean" and force["default"] is False

    plain = {**yaml.safe_load(yaml_path.read_text()), "output_dir": str(tmp_path / "plain")}
    plain.pop("registry")
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    with pytest.raises(InputError, match=r"plain\.yaml: force applies to a run whose config names a registry"):
        run_scheduled(tmp_path / "plain.yaml", None, curriculum, force=True)
    assert not (tmp_path / "plain").exists()


# ------------------------------------------------------------------------------------------ corpus folders
def test_a_corpus_folder_is_read_file_by_file_in_sorted_order_and_errors_name_the_file(tmp_path):
    from dataio.table_files import table_files
    from flows.run.config import config_from_mapping
    from flows.run.inputs import load_mining_corpus, prepare_inputs
    from flows.run.rundir import RunDir

    folder = tmp_path / "corpus"
    (folder / "2026-02").mkdir(parents=True)
    write_lines(folder / "2026-02" / "x.txt", [3, 4])
    write_lines(folder / "b.txt", [1, 2])
    write_lines(folder / "a.txt", [0, 1])
    (folder / "_SUCCESS").write_text("")
    (folder / ".part.txt").write_text("being written\n")
    assert [p.relative_to(folder).as_posix() for p in table_files(folder)] == ["2026-02/x.txt", "a.txt", "b.txt"]
    config = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"corpus": str(folder)}})
    inputs = prepare_inputs(config, RunDir(tmp_path / "run"))
    assert [Path(e["path"]).name for e in inputs.corpus] == ["x.txt", "a.txt", "b.txt"]
    corpus = load_mining_corpus(inputs)
    assert corpus.texts == [sentence(i) for i in (3, 4, 0, 1, 2)]
    assert [Path(s["path"]).name for s in corpus.describe()["sources"]] == ["x.txt", "a.txt", "b.txt"]

    (folder / "notes.md").write_text("# about this corpus\n")
    with pytest.raises(InputError, match="notes.md: in the table folder .*not a table file"):
        table_files(folder)
    (folder / "notes.md").unlink()
    (folder / "b.csv").write_text("tweet\nhello\n")
    with pytest.raises(InputError, match=r"b\.csv.*missing column 'text'"):
        load_mining_corpus(prepare_inputs(config, RunDir(tmp_path / "run")))
    (folder / "b.csv").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no table files"):
        table_files(empty)


def test_validate_names_the_config_key_for_a_bad_file_inside_a_corpus_folder(tmp_path):
    from flows.rounds.validate import check_run
    from flows.run.config import load_config

    folder = tmp_path / "corpus"
    folder.mkdir()
    write_lines(folder / "a.txt", list(range(40)))
    (folder / "b.csv").write_text("tweet\nhello\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"output_dir": "run", "data": {"corpus": "corpus"},
                                                     "batch_size": 8}))
    with pytest.raises(InputError, match=r"b\.csv.*missing column.*read as data\.corpus\.columns of"):
        check_run(load_config(tmp_path / "c.yaml"))


# ---------------------------------------------------------------------------------------- models register
def test_models_register_takes_its_margin_from_the_run_config(tmp_path, capsys):
    """`models register` without --min-gain decides as the run would have: with its eval.min_improvement."""
    import shutil

    from flows.cli.app import main
    from simcse.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", seed=0)
    folder = str(tmp_path / "reg")
    assert main(["models", "init", folder, str(model), "--name", "enc"]) == 0
    start = Path(capsys.readouterr().out.split("(")[-1].rstrip(")\n"))
    run = tmp_path / "run"
    (run / "rounds/0").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(start)},
                                                     "eval": {"min_improvement": 5.0}}))
    dev = {"name": "pairs/select"}
    (run / "base_metrics.json").write_text(json.dumps({"evaluation": {"pairs": {"select": 70.0}}, "dev_metric": dev}))
    (run / "rounds/0/metrics.json").write_text(json.dumps({"round": 0, "evaluation": {"pairs": {"select": 73.0}}}))
    shutil.copytree(model, run / "rounds/0/model")
    assert main(["models", "register", folder, str(run), "--json"]) == 0
    version = json.loads(capsys.readouterr().out)
    assert version["promoted"] is False and version["gate"]["min_gain"] == 5.0 and "+5.00" in version["reason"]


# ---------------------------------------------------------------------------------------- the Prefect flow
def test_scheduled_nights_through_prefect_warm_start_register_and_record_a_no_op(data, tmp_path):
    """The scheduled flow (what `serve` and `deploy` run; here through a Prefect test harness, in process) on a
    registry config: night 1 registers version 2; night 2, with nothing new, is a no-op without a task run;
    night 3, after a file was added, starts from version 2 and counts the new rows. Each night has its own
    folder under output_dir, marked finished. Each night is one flow run, read back through Prefect's client:
    named `<config stem>-<scheduled start>`, carrying the tags its deployment gives (here `tags(...)`), and
    holding the night's task runs (before: a tagged parent with 0 task runs, and an untagged subflow with a
    random name holding them)."""
    from prefect import tags
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.orchestration.curriculum_flow import scheduled_flow
    from flows.registry.model_registry import open_registry
    from flows.run.scheduled_folders import scheduled_folders
    from simcse.testing import torch_threads

    yaml_path = scheduled_config(tmp_path, data)
    deployment_tags = ["simcse-curriculum", "config:nightly", "data:tmp/corpus"]
    with prefect_test_harness(server_startup_timeout=180), torch_threads(1), tags(*deployment_tags):
        first = scheduled_flow(str(yaml_path))
        second = scheduled_flow(str(yaml_path))
        write_lines(tmp_path / "corpus" / "b.txt", list(range(40, 55)))
        third = scheduled_flow(str(yaml_path))
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
            task_runs = client.read_task_runs()
            tasks = {str(r.flow_run_id) for r in task_runs}
    reg = open_registry(str(tmp_path / "registry"), "enc")
    assert first["registry"]["registered"]["version"] == 2 and first["registry"]["new_rows"] == 40
    assert second["noop"] is True and second["current_version"] == 2
    assert third["registry"]["parent_version"] == 2 and third["registry"]["new_rows"] == 15
    assert reg.version(3).parent == 2 and reg.current_number() == 3
    folders = scheduled_folders(tmp_path / "nightly")
    assert [Path(s["run_dir"]) for s in (first, second, third)] == folders and len(folders) == 3
    assert all((f / "finished.json").is_file() for f in folders) and (folders[1] / "noop.json").is_file()
    assert len(runs) == 3 and all(r.state.is_completed() for r in runs), "one flow run a night, no subflow"
    nights = sorted(runs, key=lambda r: r.start_time)
    assert all(re.fullmatch(r"nightly-\d{4}-\d{2}-\d{2}T\d{4}Z", r.name) for r in nights), [r.name for r in nights]
    assert all(set(deployment_tags) <= set(r.tags) for r in nights), [r.tags for r in nights]
    assert [str(r.id) in tasks for r in nights] == [True, False, True], "the no-op ran no task"
    assert {str(r.flow_run_id) for r in task_runs} <= {str(r.id) for r in nights}, "every task run is a night's"


def test_a_registry_nights_folder_counts_as_the_same_run_for_a_scheduled_resume(data, nights):
    """The saved config names the version the night started from, the YAML the base model: a scheduled run
    (flows.orchestration.scheduled_runs) must still see an unfinished registry night as its own and resume it."""
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    config = config_from_mapping(settings(data, "n3"))
    assert config.model.name_or_path == str(data["model"])
    assert RunDir(data["root"] / "runs/n3").changed_settings(config) == []
    edited = config_from_mapping(settings(data, "n3", seed=4))
    assert RunDir(data["root"] / "runs/n3").changed_settings(edited) == ["seed"]
