"""Retention (issue 14, part 6): `simcse-curriculum prune OUTPUT_DIR --keep N [--dry-run]` on a folder of run
folders as a scheduled deployment leaves them, with a registry inside it (runs made by hand here: the run
folder's files are what matters, not how they were trained)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from json_audit import stringly

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported: no network


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<dir>")
            for p in folder.rglob("*")}


def make_run(root: Path, name: str, model: Path, start: Path, registry: Path | None, age: int,
             rounds: int = 1, dev: list[float] | None = None, selected: int | None = None) -> Path:
    """A finished run folder: config, base and round metrics, triplets, an embeddings cache, a model per round
    and the last round's optimizer state; its records dated `age` hours ago (an older run has a larger age)."""
    run = root / name
    config: dict[str, Any] = {"output_dir": str(run), "rounds": rounds, "steps_per_round": 2,
                              "model": {"name_or_path": str(start)}}
    if registry is not None:
        config["registry"] = {"path": str(registry), "name": "enc"}
    (run / "triplets/round=0/band=random").mkdir(parents=True)
    (run / "triplets/round=0/band=random/part-00000.parquet").write_bytes(b"x" * 5000)
    (run / "cache").mkdir()
    (run / "cache/emb-abc.npy").write_bytes(b"y" * 7000)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metric = {"name": "pairs/select"}
    (run / "base_metrics.json").write_text(json.dumps({"evaluation": {"pairs": {"select": 70.0}},
                                                       "dev_metric": metric}))
    for r in range(rounds):
        shutil.copytree(model, run / f"rounds/{r}/model")
        value = (dev or [71.0] * rounds)[r]
        (run / f"rounds/{r}/metrics.json").write_text(json.dumps({"round": r, "evaluation":
                                                                  {"pairs": {"select": value}}}))
    (run / f"rounds/{rounds - 1}/optimizer").mkdir()
    (run / f"rounds/{rounds - 1}/optimizer/optimizer.pt").write_bytes(b"z" * 3000)
    if selected is not None:
        (run / "selection.json").write_text(json.dumps({"selected_round": selected}))
    when = 1_700_000_000 - age * 3600
    for path in [run / "config.yaml", *run.rglob("*.json")]:
        os.utime(path, (when, when))
    return run


@pytest.fixture()
def runs(tmp_path: Path, tiny: str) -> dict[str, Any]:
    """root/: registry/ (version 1 = the tiny model), r0 (registered, not promoted), r1 (registered, promoted),
    r2 (in use by another command), r3 (no registry, two rounds, selected round 1), r4 and r5 (the newest),
    n (a no-op record), notes/ (not a run), and a link from r1's cache to a file outside root."""
    from flows.registry.mlflow_store import MlflowStore
    from flows.registry.model_registry import ModelRegistry
    from flows.registry.promotion import GateSettings
    from flows.registry.registration import register_run

    root = tmp_path / "runs"
    root.mkdir()
    reg = ModelRegistry(MlflowStore.at(root / "registry"), "enc")
    start = reg.local_path(reg.ensure_started(Path(tiny)))
    model = Path(tiny)
    r0 = make_run(root, "r0", model, start, root / "registry", age=60, dev=[60.0])
    r1 = make_run(root, "r1", model, start, root / "registry", age=50, dev=[75.0])
    assert register_run(reg, r0, GateSettings()).promoted == "false"
    assert register_run(reg, r1, GateSettings()).promoted == "true"
    r2 = make_run(root, "r2", model, Path(tiny), None, age=40)
    r3 = make_run(root, "r3", model, Path(tiny), None, age=30, rounds=2, selected=1)
    make_run(root, "r4", model, Path(tiny), None, age=20)
    make_run(root, "r5", model, Path(tiny), None, age=10)
    (root / "n").mkdir()
    (root / "n/config.yaml").write_text(yaml.safe_dump({"output_dir": str(root / "n"), "rounds": 1,
                                                        "steps_per_round": 2}))
    (root / "n/noop.json").write_text("{}")
    (root / "notes").mkdir()
    (root / "notes/triplets").mkdir()
    (root / "notes/triplets/mine.txt").write_text("not a run's")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    (r1 / "cache/link.bin").symlink_to(outside)
    # r2 is held by a live process (this one stands in for it: the lock file names a live pid on this host).
    (r2 / ".simcse-curriculum.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                           "command": "simcse-curriculum run x.yaml"}))
    return {"root": root, "registry": reg, "outside": outside, "r0": r0, "r1": r1, "r2": r2, "r3": r3}


EXPECTED = {  # keep 2: r4 and r5 stay whole; r2 is in use; r0, r1, r3 give up what nothing needs
    "r0/triplets", "r0/cache", "r0/rounds/0/optimizer", "r0/rounds/0/model",  # not promoted
    "r1/triplets", "r1/cache", "r1/rounds/0/optimizer",  # its round 0 model is version 3, promoted: kept
    "r3/triplets", "r3/cache", "r3/rounds/1/optimizer", "r3/rounds/0/model",  # round 1 is its selected model
}


def test_dry_run_lists_what_would_go_with_sizes_and_changes_nothing(runs, capsys):
    from flows.cli.app import main

    root = runs["root"]
    before = snapshot(root)
    assert main(["prune", str(root), "--keep", "2", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert snapshot(root) == before, "a dry run writes nothing"
    assert plan["dry_run"] is True and stringly(plan) == []
    listed = {r["relative"] for r in plan["removals"]}
    version2 = runs["registry"].local_path(runs["registry"].version(2)).relative_to(root).as_posix()
    assert listed == EXPECTED | {version2}, listed ^ (EXPECTED | {version2})
    sizes = {r["relative"]: r["bytes"] for r in plan["removals"]}
    assert sizes["r0/triplets"] == 5000 and sizes["r0/cache"] == 7000 and sizes["r0/rounds/0/optimizer"] == 3000
    assert sizes["r0/rounds/0/model"] > 0 and plan["bytes"] == sum(sizes.values())
    assert plan["kept"] == ["r4", "r5"] and plan["in_use"] == ["r2"]
    assert main(["prune", str(root), "--keep", "2", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("would remove") and "r0/triplets" in text and "in use, left alone: r2" in text


def test_prune_removes_exactly_what_the_dry_run_listed_and_keeps_promoted_versions(runs, capsys):
    from sentence_transformers import SentenceTransformer

    from dataio.errors import InputError
    from flows.cli.app import main

    root, reg = runs["root"], runs["registry"]
    assert main(["prune", str(root), "--keep", "2", "--dry-run", "--json"]) == 0
    listed = {r["relative"] for r in json.loads(capsys.readouterr().out)["removals"]}
    before = snapshot(root)
    assert main(["prune", str(root), "--keep", "2", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {r["relative"] for r in done["removals"]} == listed
    after = snapshot(root)
    gone = {k for k in before if k not in after}
    assert {k for k in gone if not any(k.startswith(p + "/") for p in listed)} == listed, "exactly those paths"
    changed = {k for k in after if before.get(k) != after[k]}
    assert all(k.endswith("pruned.json") or k.startswith("registry/") for k in changed), changed
    assert runs["outside"].read_bytes() == b"keep me", "a link's target outside the folder is never touched"
    assert (root / "notes/triplets/mine.txt").is_file() and (runs["r2"] / "triplets").is_dir()
    assert (runs["r1"] / "rounds/0/model").is_dir() and (runs["r3"] / "rounds/1/model").is_dir()
    record = json.loads((runs["r0"] / "pruned.json").read_text())
    assert {r["relative"] for r in record[0]["removed"]} == {"triplets", "cache", "rounds/0/optimizer",
                                                              "rounds/0/model"}
    # The registry: versions 1 (the start) and 3 (promoted, current) load; version 2's files were freed.
    assert reg.current_number() == 3
    for number in (1, 3):
        SentenceTransformer(str(reg.local_path(reg.version(number))), device="cpu")
    assert reg.version(2).tags.get("simcse.pruned")
    with pytest.raises(InputError, match="removed by `simcse-curriculum prune`"):
        reg.local_path(reg.version(2))
    # Pruning again frees nothing more.
    assert main(["prune", str(root), "--keep", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removals"] == []


def test_prune_refuses_what_is_not_a_folder_of_runs(runs, tmp_path, capsys):
    from flows.cli.app import main

    for args, says in ((["prune", str(runs["r0"]), "--keep", "1"], "one run's folder"),
                       (["prune", str(tmp_path / "nowhere"), "--keep", "1"], "no such folder"),
                       (["prune", str(runs["root"]), "--keep", "0"], "--keep must be 1 or more")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_a_registry_outside_the_folder_is_left_alone(runs, tmp_path, capsys):
    from flows.cli.app import main

    root = runs["root"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved / "runs", symlinks=True)
    shutil.rmtree(moved / "runs/registry")  # the runs name the registry in the original folder: outside this one
    assert main(["prune", str(moved / "runs"), "--keep", "2", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not any(r["relative"].startswith("registry") for r in plan["removals"])
    assert any("is outside" in note for note in plan["notes"])


# ------------------------------------------------------------------ a run made by hand in the folder of runs
def test_a_run_made_by_hand_in_the_folder_of_runs_is_left_alone_and_the_others_are_pruned(runs, capsys):
    """`run CONFIG` writes into output_dir itself, beside the scheduled runs' folders. Before, prune refused such a
    folder ("this is one run's folder"), so every night's retention failed from then on, and the `prune` command
    its warning named failed the same way."""
    from flows.cli.app import main
    from flows.orchestration.scheduled_runs import apply_retention

    root = runs["root"]
    make_run(root.parent, root.name, Path(runs["registry"].local_path(runs["registry"].version(1))),
             Path(runs["registry"].local_path(runs["registry"].version(1))), None, age=100)  # the oldest of all
    own = {name: snapshot(root / name) for name in ("triplets", "cache", "rounds")}
    config = (root / "config.yaml").read_bytes()
    assert main(["prune", str(root), "--keep", "2", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    version2 = runs["registry"].local_path(runs["registry"].version(2)).relative_to(root).as_posix()
    assert {r["relative"] for r in plan["removals"]} == EXPECTED | {version2}, "the runs inside, as before"
    assert any("itself holds a run made by `simcse-curriculum run`" in note for note in plan["notes"])
    report = apply_retention(root, 2)  # what a scheduled night does once it finished
    assert "error" not in report and report["pruned_runs"] == ["r0", "r1", "r3"], report
    assert {name: snapshot(root / name) for name in own} == own and (root / "config.yaml").read_bytes() == config
    assert not (root / "pruned.json").exists(), "the run made by hand is left as it is"


def _scheduled_config(folder: Path, model: str, **extra: Any) -> Path:
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(folder), "rounds": 1, "steps_per_round": 2, "batch_size": 8,
                                    "model": {"name_or_path": model, "pooling": "mean", "max_length": 16},
                                    "data": {"builtin": "python_docstrings", "builtin_max_sentences": 100},
                                    **extra}))
    return path


def test_validate_and_deploy_warn_about_a_run_made_by_hand_in_the_folder_of_runs(tmp_path, tiny, capsys,
                                                                                   monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.orchestration.deploy
    from flows.cli.app import main
    from flows.run.config import load_config
    from flows.run.rundir import RunDir

    nightly = tmp_path / "nightly"
    config = _scheduled_config(nightly, tiny, retention={"keep": 3})
    assert main(["validate", str(config)]) == 0
    assert "made by `simcse-curriculum run`" not in capsys.readouterr().err, "nothing to say of an empty folder"
    RunDir(nightly).claim(load_config(config))  # what `simcse-curriculum run CONFIG` leaves first
    assert main(["validate", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    warning = (f"warning: {nightly} holds a run made by `simcse-curriculum run` (config.yaml, rounds/), and scheduled "
               "runs write their folders beside it")
    assert warning in err and any("retention leaves that run as it is" in w for w in json.loads(out)["warnings"])

    deployed: list[Any] = []
    done = flows.orchestration.deploy.Deployed("f/d", "id", "pool", False, "cron 0 2 * * *", None, 1, "ENQUEUE", [], {})
    monkeypatch.setattr(flows.orchestration.deploy, "deploy_scheduled",  # deploy imports it when it runs
                        lambda *args, **kwargs: deployed.append(args) or done)
    plain = _scheduled_config(nightly, tiny)  # no retention: a deployment's runs write into subfolders all the same
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["deploy", str(plain), "--pool", "p", "--cron", "0 2 * * *", "--json"]) == 0
    out, err = capsys.readouterr()
    assert deployed and warning in err and json.loads(out)["deployment"] == "f/d"
    assert main(["validate", str(plain)]) == 0, "a run folder that `run` resumes, and nothing scheduled"
    assert "made by `simcse-curriculum run`" not in capsys.readouterr().err
