"""The model registry on MLflow's embedded store (a folder with SQLite), its promotion gate on real run
folders, `models init|register|list|path|promote|rollback`, and MLflow tracking of a run (no Prefect)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from json_audit import stringly

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported: no network

from dataio.errors import InputError
from flows.cli.app import main
from flows.registry.mlflow_store import MlflowStore
from flows.registry.model_registry import ModelRegistry
from flows.registry.promotion import GateSettings
from flows.registry.registration import register_run
from flows.run.step_records import Evaluation, RunInputs


def evaluation(select: float | None, guard: float = 80.0) -> dict:
    return {"pairs": {"select": select, "report": 40.0}, "sts": {"dev": guard}, "alignment": 0.3}


def started() -> tuple[RunInputs, Evaluation]:
    """What a round hook's on_start receives: the run's inputs and the starting model's evaluation."""
    return RunInputs(fingerprint="abc", eval_fingerprint="def"), Evaluation(model="m", evaluation=evaluation(70.0))


def fake_run(folder: Path, start: Path, base: dict, rounds: list[dict], model: Path) -> Path:
    """A finished run folder as flows.rounds.loop leaves it: config, base metrics, per-round metrics and models."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(start)}}), encoding="utf-8")
    dev = {"name": "pairs/select"}
    (folder / "base_metrics.json").write_text(json.dumps({"round": "base", "evaluation": base, "dev_metric": dev}))
    for r, ev in enumerate(rounds):
        shutil.copytree(model, folder / "rounds" / str(r) / "model")
        (folder / "rounds" / str(r) / "metrics.json").write_text(json.dumps({"round": r, "evaluation": ev}))
    return folder


@pytest.fixture()
def registry(tmp_path, tiny) -> ModelRegistry:
    reg = ModelRegistry(MlflowStore.at(tmp_path / "registry"), "enc")
    first = reg.ensure_started(Path(tiny))
    assert (first.version, first.parent, first.promoted, first.current) == (1, None, "true", True)
    return reg


def test_a_new_registry_starts_from_its_model_and_everything_stays_inside_its_folder(tmp_path, tiny, registry):
    from sentence_transformers import SentenceTransformer

    path = registry.local_path(registry.current())
    assert path.is_relative_to(tmp_path / "registry") and Path(tiny) != path
    assert SentenceTransformer(str(path), device="cpu").encode(["a sentence"]).shape == (1, 32)
    assert registry.ensure_started(Path(tiny)).version == 1, "starting again adds no version"
    assert not (Path.cwd() / "mlruns").exists(), "MLflow's default ./mlruns is never used"
    assert (tmp_path / "registry" / "mlflow.db").is_file()


def test_the_gate_decides_on_the_dev_metric_against_the_version_the_run_started_from(tmp_path, tiny, registry):
    start = registry.local_path(registry.current())
    better = fake_run(tmp_path / "run1", start, evaluation(70.0), [evaluation(71.0), evaluation(72.5)], Path(tiny))
    v2 = register_run(registry, better, GateSettings(min_gain=1.0))
    assert (v2.version, v2.parent, v2.promoted, v2.current) == (2, 1, "true", True)
    assert v2.gate["candidate"] == 72.5 and v2.metrics["pairs/report"] == 40.0, "the best round by the dev metric"
    # What a registry run records (registered.json, and `run --json`'s registry.registered): JSON's own types.
    from flows.rounds.continuing import registration_record

    record = json.loads(json.dumps(registration_record(registry, v2)))
    assert record["promoted"] is True and record["version"] == 2 and stringly(record) == []
    assert register_run(registry, better, GateSettings()).version == 2, "registering a run twice adds nothing"

    # A run from version 2 that regresses: recorded, not promoted, current unchanged.
    start2 = registry.local_path(registry.current())
    worse = fake_run(tmp_path / "run2", start2, evaluation(72.5), [evaluation(60.0)], Path(tiny))
    v3 = register_run(registry, worse, GateSettings())
    assert (v3.version, v3.parent, v3.promoted, v3.current) == (3, 2, "false", False)
    assert "72.50 -> 60.00" in v3.reason and registry.current_number() == 2
    # A gain that forgets the guard is vetoed.
    forgets = fake_run(tmp_path / "run3", start2, evaluation(72.5, guard=80.0), [evaluation(75.0, guard=70.0)],
                       Path(tiny))
    v4 = register_run(registry, forgets, GateSettings(guard="sts/dev", guard_tolerance=2.0))
    assert v4.promoted == "false" and "guard sts/dev fell 10.00" in v4.reason and registry.current_number() == 2

    # A run that did not start from a version cannot be gated against one.
    stray = fake_run(tmp_path / "run4", Path(tiny), evaluation(1.0), [evaluation(99.0)], Path(tiny))
    with pytest.raises(InputError, match="no version of 'enc'"):
        register_run(registry, stray, GateSettings())



def test_a_round_model_changed_on_disk_is_not_registered(tmp_path, tiny, registry):
    """What is registered is what the round wrote and evaluated: its files' sha256 in metrics.json is checked."""
    from flows.run.rundir import RunDir

    start = registry.local_path(registry.current())
    folder = fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(75.0)], Path(tiny))
    run = RunDir(folder)
    metrics = run.read_metrics(0)
    run.metrics_path(0).write_text(json.dumps({**metrics, "model_sha256": run.model_sha256(0)}))
    weights = next(p for p in run.model_dir(0).rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    with pytest.raises(InputError, match="changed on disk"):
        register_run(registry, folder, GateSettings())
    assert [v.version for v in registry.versions()] == [1] and registry.current_number() == 1

def test_a_round_record_edited_after_the_round_closed_is_not_registered(tmp_path, tiny, registry):
    """The gate picks and judges the candidate by the rounds' metrics.json: a record edited by hand (sealed when its
    round closed, record_sha256) is refused in one line, as a resumed run refuses it, and nothing is registered
    (old code: the edited score was registered, and promoted)."""
    from flows.run.rundir import seal

    start = registry.local_path(registry.current())
    run = fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(60.0)], Path(tiny))
    record = run / "rounds/0/metrics.json"
    record.write_text(json.dumps(seal(json.loads(record.read_text()))))  # as finish_round writes it
    edited = json.loads(record.read_text())
    edited["evaluation"]["pairs"]["select"] = 90.0
    record.write_text(json.dumps(edited))
    with pytest.raises(InputError, match=rf"^{record}: round 0's record was edited after the round closed"):
        register_run(registry, run, GateSettings())
    assert [v.version for v in registry.versions()] == [1]


def test_a_promotion_interrupted_before_the_alias_moves_keeps_the_old_current_and_is_finished_later(
        tmp_path, tiny, registry, monkeypatch):
    from sentence_transformers import SentenceTransformer

    start = registry.local_path(registry.current())
    run = fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(75.0)], Path(tiny))
    client = registry.client

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between registering the version and moving the alias")

    monkeypatch.setattr(client, "set_registered_model_alias", killed)
    with pytest.raises(KeyboardInterrupt):
        register_run(registry, run, GateSettings())
    monkeypatch.undo()
    pending = registry.version(2)
    assert pending.promoted == "pending" and registry.current_number() == 1
    SentenceTransformer(str(registry.local_path(registry.current())), device="cpu")  # current still loads
    finished = register_run(registry, run, GateSettings())
    assert (finished.version, finished.promoted, registry.current_number()) == (2, "true", 2)
    assert len(registry.versions()) == 2


def test_models_cli_lists_prints_paths_promotes_and_rolls_back(tmp_path, tiny, capsys):
    def cli(*args: str) -> tuple[int, str, str]:
        rc = main(list(args))
        got = capsys.readouterr()
        return rc, got.out, got.err

    folder = str(tmp_path / "reg")
    rc, out, err = cli("models", "init", folder, tiny, "--name", "enc")
    assert rc == 0 and "current is version 1" in out, err
    start = Path(cli("models", "path", folder)[1].strip())
    assert start.is_dir() and start.is_relative_to(tmp_path / "reg")
    fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(69.0)], Path(tiny))
    rc, out, err = cli("models", "register", folder, str(tmp_path / "run"))
    assert rc == 0 and "version 2 (from version 1): not promoted" in out, (out, err)
    rc, out, err = cli("models", "register", folder, str(tmp_path / "run"), "--json")  # again: the same version
    registered = json.loads(out)
    assert (registered["version"], registered["promoted"], registered["pending"]) == (2, False, False)
    assert stringly(registered) == [], registered
    rc, out, _ = cli("models", "list", folder, "--json")
    listed = json.loads(out)
    assert [(v["version"], v["parent"], v["promoted"], v["pending"], v["current"]) for v in listed] == \
        [(1, None, True, False, True), (2, 1, False, False, False)]
    assert stringly(listed) == [], "booleans and numbers are JSON's own, not strings"
    assert listed[1]["decides"] == "pairs/select" and listed[1]["metrics"]["pairs/select"] == 69.0
    table = cli("models", "list", folder)[1]
    assert "pairs/select (decides)" in table and "69.00" in table
    rc, out, _ = cli("models", "promote", folder, "2")
    assert rc == 0 and "current is version 2 (was 1)" in out
    assert Path(cli("models", "path", folder)[1].strip()) != start
    rc, out, _ = cli("models", "rollback", folder)
    assert rc == 0 and "current is version 1 (was 2)" in out
    assert Path(cli("models", "path", folder)[1].strip()) == start
    for args, message in ((("models", "path", folder, "9"), "has no version 9"),
                          (("models", "register", folder, str(tmp_path / "run"), "--guard", "pairs"),
                           "sts/<file stem>"),
                          (("models", "register", folder, str(tmp_path / "nothing")), "not a run folder"),
                          (("models", "list", str(tmp_path / "nowhere")), "no registry here")):
        rc, out, err = cli(*args)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_a_run_is_tracked_once_per_round_and_a_resumed_run_continues_the_same_mlflow_run(tmp_path):
    from flows.registry.tracking import round_hooks, tracker_for
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    store = tmp_path / "store"
    cfg = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"builtin": "python_docstrings"},
                               "steps_per_round": 5, "tracking": {"enabled": True, "uri": str(store)}})
    run = RunDir(tmp_path / "run")
    run.claim(cfg)
    assert tracker_for(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"enabled": False})}),
                       run) is None
    hooks = round_hooks(tracker_for(cfg, run), cfg)
    hooks["on_start"](RunInputs(fingerprint="abc", eval_fingerprint="def", corpus=[{"path": "c.txt"}]),
                      Evaluation(model="m", evaluation=evaluation(70.0)))
    (run.round_dir(0)).mkdir(parents=True)
    (run.round_dir(0) / "train_result.json").write_text(json.dumps(
        {"history": [{"step": 1, "loss": 2.0, "lr": 1e-5}, {"step": 5, "loss": 1.5}]}))
    round0 = {"evaluation": evaluation(71.0), "curriculum": {"competence": 0.5, "mixture": {"random": 1.0}},
              "train": {"mean_train_accuracy": 0.8}}
    run.metrics_path(0).write_text(json.dumps(round0))
    hooks["on_round"](0, round0)
    run.report_path.write_text("# report\n")

    # The process dies; a resumed run reopens the same MLflow run and logs round 0 only once.
    hooks = round_hooks(tracker_for(cfg, run), cfg)
    hooks["on_start"](*started())
    hooks["on_round"](0, round0)
    hooks["on_end"]({})
    client = MlflowStore.at(store).client()
    runs = client.search_runs([client.get_experiment_by_name("simcse-curriculum").experiment_id])
    assert len(runs) == 1
    mlrun = runs[0]
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["simcse.inputs_fingerprint"] == "abc"
    assert mlrun.data.params["steps_per_round"] == "5" and mlrun.data.tags["simcse.config_fingerprint"]
    history = client.get_metric_history(mlrun.info.run_id, "pairs/select")
    assert [(m.step, m.value) for m in history] == [(0, 70.0), (1, 71.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "train/loss")] == \
        [(1, 2.0), (5, 1.5)]
    artifacts = Path(mlrun.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "report.md").is_file() and artifacts.is_relative_to(store)



def test_a_version_links_to_the_run_it_trained_in_one_store(tmp_path, tiny, registry):
    """Tracking defaults to the registry's store, and the version is registered from the run's tracked MLflow run:
    MLflow's model version names that run (`run_id`), whose metrics are the training's (before: two unlinked
    stores, each version on a run of its own with no metrics, `<output_dir>/mlflow` holding the training's)."""
    from flows.registry.mlflow_store import store_for
    from flows.registry.tracking import TRACKING_FILE, round_hooks, tracker_for
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    start = registry.local_path(registry.current())
    folder = fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(71.0)], Path(tiny))
    cfg = config_from_mapping({"output_dir": str(folder), "data": {"builtin": "python_docstrings"},
                               "steps_per_round": 5, "tracking": {"enabled": True},
                               "registry": {"path": str(tmp_path / "registry"), "name": "enc"}})
    assert store_for(cfg) == registry.store, "one store for the runs and the registry"
    run = RunDir(folder)
    hooks = round_hooks(tracker_for(cfg, run), cfg)
    hooks["on_start"](*started())
    hooks["on_round"](0, run.read_metrics(0))
    hooks["on_end"]({})
    trained_in = json.loads((folder / TRACKING_FILE).read_text())["run_id"]

    version = register_run(registry, folder, GateSettings())
    client = registry.client  # MLflow's own API, as its UI reads it
    mv = client.get_model_version("enc", str(version.version))
    assert mv.run_id == trained_in == version.run_id, "the version links to the run it trained in"
    mlrun = client.get_run(mv.run_id)
    assert mlrun.data.metrics["pairs/select"] == 71.0 and mlrun.data.params["steps_per_round"] == "5"
    assert [(m.step, m.value) for m in client.get_metric_history(mv.run_id, "pairs/select")] == [(0, 70.0), (1, 71.0)]
    assert mlrun.data.tags["simcse.candidate_round"] == "0" and mv.source.startswith(mlrun.info.artifact_uri)
    assert (registry.local_path(version) / "config.json").is_file() and registry.store.inside(mv.source)
    assert register_run(registry, folder, GateSettings()).version == version.version, "registering again adds none"
    # A run tracked in another store (tracking.uri) cannot be linked: its version gets a run of its own.
    other = fake_run(tmp_path / "elsewhere", start, evaluation(70.0), [evaluation(72.0)], Path(tiny))
    cfg2 = cfg.model_copy(update={"output_dir": other, "tracking": cfg.tracking.model_copy(
        update={"uri": str(tmp_path / "own-store")})})
    hooks = round_hooks(tracker_for(cfg2, RunDir(other)), cfg2)
    hooks["on_start"](*started())
    hooks["on_end"]({})
    separate = register_run(registry, other, GateSettings())
    assert separate.run_id != json.loads((other / TRACKING_FILE).read_text())["run_id"]



def test_models_path_reads_the_registrys_own_records_without_mlflow_torch_or_pyarrow(tmp_path, tiny, registry):
    """`models path` on a registry folder reads MLflow's records in mlflow.db with sqlite3: the same version, tags and
    messages as MLflow's client, without importing MLflow, torch or Prefect (before: 6-10 s a call, most of it
    MLflow's import). Its start-up time is measured where timings belong (docs/benchmarks.md, `models path`)."""
    import subprocess

    from flows.registry.versions import read_local_version

    start = registry.local_path(registry.current())
    fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(71.0)], Path(tiny))
    register_run(registry, tmp_path / "run", GateSettings())
    for number in (None, 1, 2):
        name, fast = read_local_version(registry.store, None, number)
        slow = registry.version(number) if number is not None else registry.current()
        assert name == "enc" and fast.as_dict() == slow.as_dict() and fast.tags == slow.tags
    for args, message in (((None, 9), "model 'enc' has no version 9 (versions: [1, 2])"),
                          (("other", None), "no registered model 'other'")):
        with pytest.raises(InputError, match=re.escape(message)):
            read_local_version(registry.store, *args)

    script = ("import sys; from flows.cli.app import main; rc = main(['models', 'path', sys.argv[1]]); "
              "print(sorted(m for m in ('mlflow', 'torch', 'prefect', 'transformers', 'pyarrow') if m in sys.modules), "
              "file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "registry")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=str(Path(__file__).resolve().parent.parent),
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stderr.strip() == "[]", proc.stderr
    assert Path(proc.stdout.strip()) == registry.local_path(registry.version(2))


def test_without_mlflow_installed_tracking_says_how_to_install_it(tmp_path, monkeypatch):
    from flows.registry import mlflow_store
    from flows.rounds.validate import check_run
    from flows.run.config import config_from_mapping

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setattr(mlflow_store, "_CLIENTS", {})
    with pytest.raises(InputError, match=r"simcse-curriculum\[tracking\]"):
        MlflowStore.at(tmp_path / "s").client()
    # A tracked run says so in its check, before anything is written (not after the base model's evaluation).
    cfg = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"builtin": "python_docstrings"},
                               "tracking": {"enabled": True}})
    with pytest.raises(InputError, match=r"simcse-curriculum\[tracking\]"):
        check_run(cfg)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------- verified before use

def flip_bytes(weights: Path, count: int = 4) -> None:
    """`count` bytes in the middle of a weights file XOR 0x40: the file still loads, the model is another."""
    data = bytearray(weights.read_bytes())
    for i in range(count):
        data[len(data) // 2 + i] ^= 0x40
    weights.write_bytes(bytes(data))


def models_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["models", *args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def one_error_line(rc: int, err: str, *says: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_version_whose_files_changed_is_refused_by_models_path_promote_and_rollback(tmp_path, tiny, capsys):
    """Old code: `models path` printed a version whose model.safetensors had 4 flipped bytes, and rollback made it
    current. Now each version records its files' sha256 and every use checks them: one line naming the file, the
    version and what to do, exit 2, and the current version stays."""
    folder = str(tmp_path / "reg")
    assert models_cli(capsys, "init", folder, tiny, "--name", "enc")[0] == 0
    v1 = Path(models_cli(capsys, "path", folder)[1].strip())
    fake_run(tmp_path / "run", v1, evaluation(70.0), [evaluation(75.0)], Path(tiny))
    rc, out, err = models_cli(capsys, "register", folder, str(tmp_path / "run"))
    assert rc == 0 and "version 2 (from version 1): promoted" in out, (out, err)
    v2 = Path(models_cli(capsys, "path", folder)[1].strip())

    flip_bytes(v1 / "model.safetensors")
    for args in (("path", folder, "1"), ("rollback", folder), ("promote", folder, "1")):
        rc, out, err = models_cli(capsys, *args)
        one_error_line(rc, err, f"{v1 / 'model.safetensors'}: version 1 of 'enc': model.safetensors changed since it "
                                "was registered", "restore the registry folder", "models rollback")
    reg = ModelRegistry(MlflowStore.at(folder), "enc")
    assert reg.current_number() == 2, "a refused rollback or promotion leaves the current version"

    flip_bytes(v2 / "model.safetensors")  # the current version: `models path` without a version refuses too
    one_error_line(*models_cli(capsys, "path", folder)[::2], "version 2 of 'enc': model.safetensors changed")
    (v1 / "model.safetensors").unlink()  # a missing file is named as well
    one_error_line(*models_cli(capsys, "path", folder, "1")[::2], "version 1 of 'enc': model.safetensors is missing")

    # Where only the folder's hash was recorded (a manifest too long for a tag), the folder is named.
    reg.client.delete_model_version_tag("enc", "2", "simcse.files_sha256")
    one_error_line(*models_cli(capsys, "path", folder)[::2], f"{v2}: version 2 of 'enc': its files changed since")
    # A version registered before the sha256 were recorded is used, with a warning that it cannot be verified.
    reg.client.delete_model_version_tag("enc", "2", "simcse.model_sha256")
    rc, out, err = models_cli(capsys, "path", folder)
    assert rc == 0 and Path(out.strip()) == v2, err
    assert err.startswith("warning: version 2 of 'enc' was registered without its files' sha256") and \
        "cannot be verified" in err


def test_a_rollback_to_a_version_whose_files_are_gone_is_refused_and_current_stays(tmp_path, tiny, capsys):
    """Issue 24: `models rollback` to a version whose files were deleted succeeded and left `current` naming a
    version nothing can load. The registry's verification (the files' sha256 recorded with each version, checked
    before a version is made current) refuses it: one line naming the folder or file, and `current` stays."""
    folder = str(tmp_path / "reg")
    assert models_cli(capsys, "init", folder, tiny, "--name", "enc")[0] == 0
    v1 = Path(models_cli(capsys, "path", folder)[1].strip())
    fake_run(tmp_path / "run", v1, evaluation(70.0), [evaluation(75.0)], Path(tiny))
    assert models_cli(capsys, "register", folder, str(tmp_path / "run"))[0] == 0
    reg = ModelRegistry(MlflowStore.at(folder), "enc")
    assert reg.current_number() == 2

    shutil.rmtree(v1)  # the version's whole folder
    for args in (("rollback", folder), ("rollback", folder, "1"), ("promote", folder, "1"), ("path", folder, "1")):
        one_error_line(*models_cli(capsys, *args)[::2], f"{v1}: version 1's files are missing")
    assert reg.current_number() == 2
    shutil.copytree(tiny, v1)
    (v1 / "model.safetensors").unlink()  # one file of it
    one_error_line(*models_cli(capsys, "rollback", folder)[::2],
                   f"{v1 / 'model.safetensors'}: version 1 of 'enc': model.safetensors is missing since it was "
                   "registered", "restore the registry folder")
    assert reg.current_number() == 2
    rc, out, err = models_cli(capsys, "path", folder)
    assert rc == 0 and (Path(out.strip()) / "model.safetensors").is_file(), "current still loads"


def test_models_register_refuses_a_run_whose_baseline_does_not_repeat_the_parent_s_recorded_score(
        tmp_path, tiny, registry):
    """Old code: the gate compared the candidate with whatever the run measured for its starting model, even 8.5
    points below the score recorded with that version. Now the baseline must repeat the version's recorded scores
    (within registry.gate.parent_tolerance) on every metric measured on the same file and settings (eval_keys)."""
    keys = {"pairs/select": "same-file", "pairs/report": "same-file-2", "sts/dev": "same-file-3"}

    def run_with_keys(folder: Path, start: Path, base: dict, candidate: dict, base_keys: dict) -> Path:
        fake_run(folder, start, base, [candidate], Path(tiny))
        for path, with_keys in ((folder / "base_metrics.json", base_keys), (folder / "rounds/0/metrics.json", keys)):
            path.write_text(json.dumps({**json.loads(path.read_text()), "eval_keys": with_keys}))
        return folder

    v1 = registry.local_path(registry.current())
    v2 = register_run(registry, run_with_keys(tmp_path / "run1", v1, evaluation(70.0), evaluation(75.0), keys),
                      GateSettings())
    assert v2.current
    start = registry.local_path(v2)
    low = run_with_keys(tmp_path / "run2", start, evaluation(66.5), evaluation(70.0), keys)
    with pytest.raises(InputError, match=r"base_metrics.json: the run's evaluation of version 2 of 'enc' gives "
                                         r"pairs/select 66.50, but 75.00 was recorded .* \(-8.50 points; .* the "
                                         r"tolerance is 0.50\)"):
        register_run(registry, low, GateSettings())
    assert [v.version for v in registry.versions()] == [1, 2] and registry.current_number() == 2
    assert json.loads(registry.version(2).tags["simcse.eval_keys"]) == keys, "what its scores were measured on"
    assert register_run(registry, low, GateSettings(parent_tolerance=10.0)).version == 3, "a setting, not a rule"
    # Scores measured on other files (other keys) are not compared; float noise is within the tolerance.
    other = run_with_keys(tmp_path / "run3", start, evaluation(60.0), evaluation(61.0), {"pairs/select": "another"})
    assert register_run(registry, other, GateSettings(min_gain=-100.0)).version == 4
    noise = run_with_keys(tmp_path / "run4", start, evaluation(75.0 - 1e-6, guard=80.0 + 1e-6), evaluation(76.0),
                          keys)
    assert register_run(registry, noise, GateSettings()).version == 5


# ------------------------------------------------------------------------- relocatable registry folders

def test_a_copied_registry_reads_and_writes_only_its_own_folder(tmp_path, tiny, capsys):
    """Old code: MLflow's store names files by absolute `file://` URIs, so a copy of a registry printed (and
    loaded) the original's files, and `models register` into the copy wrote the model into the original folder.
    Now a store opened in another folder rewrites its locations to its own files: with the original moved away,
    every command on the copy reads and writes the copy, and nothing appears where the original was."""
    from sentence_transformers import SentenceTransformer

    original, copy, away = tmp_path / "reg", tmp_path / "backup" / "reg-copy", tmp_path / "reg-away"
    assert models_cli(capsys, "init", str(original), tiny, "--name", "enc")[0] == 0
    v1 = Path(models_cli(capsys, "path", str(original))[1].strip())
    fake_run(tmp_path / "run1", v1, evaluation(70.0), [evaluation(75.0)], Path(tiny))
    assert models_cli(capsys, "register", str(original), str(tmp_path / "run1"))[0] == 0
    shutil.copytree(original, copy)
    original.rename(away)  # the copy must not need the original, and must not write where it was
    before = {p: p.read_bytes() for p in away.rglob("*") if p.is_file()}

    rc, out, err = models_cli(capsys, "list", str(copy), "--json")
    assert rc == 0, err
    assert [Path(v["source"].removeprefix("file://")).is_relative_to(copy) for v in json.loads(out)] == [True, True]
    rc, out, err = models_cli(capsys, "path", str(copy))
    current = Path(out.strip())
    assert rc == 0 and current.is_relative_to(copy), (out, err)
    SentenceTransformer(str(current), device="cpu")
    fake_run(tmp_path / "run2", current, evaluation(75.0), [evaluation(80.0)], Path(tiny))
    rc, out, err = models_cli(capsys, "register", str(copy), str(tmp_path / "run2"))
    assert rc == 0 and "version 3 (from version 2): promoted" in out, (out, err)
    v3 = Path(models_cli(capsys, "path", str(copy))[1].strip())
    assert v3.is_relative_to(copy) and (v3 / "model.safetensors").is_file()
    assert not original.exists(), "nothing was written where the original registry was"
    assert {p: p.read_bytes() for p in away.rglob("*") if p.is_file()} == before, "the original is untouched"
    reg = ModelRegistry(MlflowStore.at(copy), "enc")
    run_uris = [reg.client.get_run(v.run_id).info.artifact_uri for v in reg.versions()]
    assert all(Path(uri.removeprefix("file://")).is_relative_to(copy) for uri in run_uris), run_uris


def test_a_copied_registry_whose_records_cannot_be_updated_is_refused_in_one_line(tmp_path, tiny, capsys,
                                                                                monkeypatch):
    """A copy whose mlflow.db cannot be written (a read-only restore) cannot be made to name its own files: it is
    refused, naming the folder and why, rather than served from the original's."""
    import sqlite3

    original, copy = tmp_path / "reg", tmp_path / "copy"
    assert models_cli(capsys, "init", str(original), tiny, "--name", "enc")[0] == 0
    shutil.copytree(original, copy)
    real = sqlite3.connect

    def read_only(database, *args, **kwargs):
        con = real(database, *args, **kwargs)
        con.execute("PRAGMA query_only = ON")
        return con

    monkeypatch.setattr(sqlite3, "connect", read_only)
    rc, out, err = models_cli(capsys, "path", str(copy))
    one_error_line(rc, err, f"{copy}: this MLflow store was moved or copied here from {original}",
                   "cannot be updated", "writable")


# -------------------------------------------------------------------------------- a damaged store database

def damage_database(db: Path, how: str) -> str:
    """Damage an MLflow store's `mlflow.db` as disks, copies and people do; returns what the refusal calls it."""
    data = db.read_bytes()
    if how == "garbage":
        db.write_bytes(bytes(range(256)) * 20)
        return "it is not an SQLite database"
    if how == "truncated":
        db.write_bytes(data[: len(data) // 3])
        return "it is truncated"
    if how == "empty":
        db.write_bytes(b"")
        return "it is empty (0 bytes)"
    # Every page after the first two overwritten: the header and the schema read fine, the tables do not.
    db.write_bytes(data[:8192] + bytes(range(256)) * ((len(data) - 8192) // 256))
    return "it is damaged (database disk image is malformed"


@pytest.fixture(scope="module")
def one_version_registry(tmp_path_factory, tiny) -> Path:
    """A registry folder with version 1 (made once; each test damages a copy, which it opens first)."""
    folder = tmp_path_factory.mktemp("registry") / "reg"
    ModelRegistry(MlflowStore.at(folder), "enc").ensure_started(Path(tiny))
    return folder


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "damaged pages"])
def test_a_damaged_registry_database_is_one_line_and_a_read_writes_nothing(tmp_path, tiny, capsys, how,
                                                                          one_version_registry):
    """Old code: a damaged mlflow.db was a traceback of 108-145 lines in every `models` command (SQLAlchemy's
    'database disk image is malformed', naming no file), or a misleading 'moved or copied here ... make it
    writable'; and `models list` on a 0-byte mlflow.db wrote MLflow's schema into it (then said 'no registered
    models'). Now every command refuses it in one line naming the file and the way out, and writes nothing."""
    folder = tmp_path / "reg"
    shutil.copytree(one_version_registry, folder)
    db = folder / "mlflow.db"
    says = damage_database(db, how)
    before = db.read_bytes()
    for args in (("list", str(folder)), ("path", str(folder)), ("path", str(folder), "1", "--name", "enc"),
                 ("rollback", str(folder), "1", "--name", "enc"), ("init", str(folder), tiny, "--name", "enc")):
        rc, out, err = models_cli(capsys, *args)
        one_error_line(rc, err, f"{db}: this MLflow store's database cannot be used: {says}",
                       "restore mlflow.db from a backup", f"move it aside (mv {db} {db}.damaged) to start a new")
        assert db.read_bytes() == before, f"`models {args[0]}` wrote into the damaged file"


def test_a_run_whose_tracking_store_is_damaged_is_refused_before_any_work(tmp_path, tiny, capsys):
    """Old code: the run evaluated its base model, then failed in the tracker's first call with a traceback (a
    resumed run: every time). Tracking is on because the team wants every run in MLflow, so a damaged store refuses
    the run in the check that precedes all work (validate, run, run --dry-run), rather than running untracked."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)  # a header, then garbage
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"), "rounds": 1, "steps_per_round": 1,
        "model": {"name_or_path": tiny, "pooling": "mean"}, "data": {"builtin": "python_docstrings"},
        "tracking": {"enabled": True, "uri": str(store)}}), encoding="utf-8")
    rc = main(["validate", str(config)])
    err = capsys.readouterr().err
    one_error_line(rc, err, f"{store / 'mlflow.db'}: this MLflow store's database cannot be used: it is damaged",
                   "restore mlflow.db from a backup")
    assert not (tmp_path / "run").exists()


def test_a_tracking_store_moved_aside_gets_the_resumed_run_logged_again(tmp_path, caplog):
    """The way out of a damaged tracking store is to move its mlflow.db aside; the resumed run then finds its
    tracking.json naming an MLflow run the new store has never seen (old code: MlflowException 'Run ... not found',
    a traceback on every resume). Now it logs itself to a new MLflow run, every round it finished included."""
    from flows.registry.tracking import round_hooks, tracker_for
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    store = tmp_path / "store"
    cfg = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"builtin": "python_docstrings"},
                               "steps_per_round": 5, "tracking": {"enabled": True, "uri": str(store)}})
    run = RunDir(tmp_path / "run")
    run.claim(cfg)
    run.round_dir(0).mkdir(parents=True)
    run.metrics_path(0).write_text(json.dumps({"evaluation": evaluation(71.0), "curriculum": {"competence": 0.5}}))
    # What the run logged to the store before its mlflow.db was moved aside (the new store starts empty).
    lost = "0123456789abcdef0123456789abcdef"
    (run.root / "tracking.json").write_text(json.dumps({"store": str(store), "experiment": "simcse-curriculum",
                                                        "run_id": lost, "logged": ["params", "base", "round-0"]}))
    caplog.set_level("WARNING", logger="flows")
    hooks = round_hooks(tracker_for(cfg, run), cfg)
    hooks["on_start"](*started())
    hooks["on_end"]({})
    now = json.loads((run.root / "tracking.json").read_text())["run_id"]
    assert now != lost and f"MLflow run {lost}, which this run logged to, is not in {store}" in caplog.text
    client = MlflowStore.at(store).client()
    assert [(m.step, m.value) for m in client.get_metric_history(now, "pairs/select")] == [(0, 70.0), (1, 71.0)]
    assert client.get_run(now).info.status == "FINISHED"


def test_a_promotion_waits_for_another_command_moving_the_alias_and_both_reasons_are_kept(tmp_path, tiny, registry):
    """Two commands moving the alias of one folder store take turns: a promotion started while another holds the
    switch waits, then runs; each promotion's reason is recorded (before, the second's `settle` dropped the
    first's record while the first was between its record and its switch)."""
    import threading

    start = registry.local_path(registry.current())
    for n, select in ((1, 75.0), (2, 76.0)):
        run = fake_run(tmp_path / f"run{n}", start, evaluation(70.0), [evaluation(select)], Path(tiny))
        register_run(registry, run, GateSettings(min_gain=100.0))  # versions 2 and 3, not promoted
    assert registry.current_number() == 1
    other = ModelRegistry(registry.store, registry.name)  # another command: its own lock object
    entered, release = threading.Event(), threading.Event()
    real = registry.client.set_registered_model_alias

    def slow_switch(*args, **kwargs):  # the first promotion pauses between its record and its switch
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    registry.client.set_registered_model_alias = slow_switch
    try:
        first = threading.Thread(target=registry.promote, args=(2,), kwargs={"reason": "first by hand"})
        first.start()
        assert entered.wait(30)
        registry.client.set_registered_model_alias = real  # the second command's switch is not slowed
        second = threading.Thread(target=other.promote, args=(3,), kwargs={"reason": "second by hand"})
        second.start()
        second.join(1.0)
        assert second.is_alive(), "the second promotion waits while the first holds the switch"
        release.set()
        first.join(30)
        second.join(30)
    finally:
        release.set()
        registry.client.set_registered_model_alias = real
    assert registry.current_number() == 3
    assert registry.version(2).reason.startswith("first by hand (current was version 1)")
    assert registry.version(3).reason.startswith("second by hand (current was version 2)")


def test_a_command_that_waits_too_long_for_the_switch_says_so_and_moves_nothing(tmp_path, tiny, registry):
    import filelock

    from flows.registry.model_registry import SWITCH_LOCK

    start = registry.local_path(registry.current())
    register_run(registry, fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(75.0)], Path(tiny)),
                 GateSettings(min_gain=100.0))
    registry.switch_wait = 0.2
    with filelock.FileLock(tmp_path / "registry" / SWITCH_LOCK):  # held by another command
        with pytest.raises(InputError, match=r"another command .* has been moving the current model for 0 s"):
            registry.promote(2)
        with pytest.raises(InputError, match="another command"):
            registry.rollback()
    assert registry.current_number() == 1 and registry.version(2).promoted == "false"
    assert registry.promote(2).current, "free again: the promotion goes through"
