"""Fault injection: what happens to a run folder between runs, and the message when it does (issue 11).

One test per probe, each ending in the documented outcome (docs/flows.md, "Faults and recovery"): a lost
curriculum state (or one ahead of rounds deleted to train them again, issue 24) is rebuilt exactly from the
rounds' records, never restarted; a folder that is not ours is
refused and left as it was; a second command on a folder in use is refused naming the first; a killed run
leaves no Prefect server; a full disk, a read-only folder, a damaged or pickled model and a damaged embeddings
cache are one line on stderr with exit code 2; a registry version whose files changed, or whose evaluation no
longer repeats its recorded score, stops a warm start before anything is trained. Issue 24's minor probes: two
registers of one run at once make one version, a promote killed mid-way reads as what happened, `run --dry-run`
refuses every folder `run` refuses with its line, a second run during the first one's start-up is told the folder
is in use, a moved run folder names its own models, a giant input line is refused with bounded memory, `inspect
--plots` writes nothing under $HOME, and a symbolic link loop is one line. CLI probes run
`simcse-curriculum` in subprocesses against one Prefect test harness server (no ephemeral API start per process)
except where the ephemeral server is what is under test. The full-disk and read-only probes mount a small tmpfs
/ a read-only bind mount in a private mount namespace (`unshare`), and are skipped where that is not permitted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs `simcse-curriculum ARGS` and can stop itself at an os.replace whose target contains $PAUSE_AT until
# $PAUSE_FLAG.go exists (announcing $PAUSE_FLAG.paused first): a command caught mid-write, on cue.
DRIVER = textwrap.dedent("""
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    pattern, flag = os.environ.get("PAUSE_AT"), os.environ.get("PAUSE_FLAG")
    if pattern:
        real_replace = os.replace
        def replace(src, dst, *args, **kwargs):
            if pattern in str(dst) and not os.path.exists(flag + ".go"):
                open(flag + ".paused", "w").close()
                while not os.path.exists(flag + ".go"):
                    time.sleep(0.05)
            return real_replace(src, dst, *args, **kwargs)
        os.replace = replace
    from flows.cli.app import main
    sys.exit(main(sys.argv[1:]))
""")


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcse.testing import build_tiny_model

    root = tmp_path_factory.mktemp("faults")
    model = build_tiny_model(root / "tiny-bert", seed=0)
    sts = root / "sts_dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"Return the value number {i}.\tGive back value {i}.\t{(i * 7) % 6}\n" for i in range(12)), encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"Sentence number {i} talks about topic {i % 17} and item {i * 7919 % 1000}.\n"
                              for i in range(3000)), encoding="utf-8")
    driver = root / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    return {"root": root, "model": model, "sts": sts, "corpus": corpus, "driver": driver}


def settings(output_dir: Path, inputs: dict[str, Path], **changes: Any) -> dict[str, Any]:
    out = {
        "output_dir": str(output_dir), "seed": 3, "rounds": 2, "steps_per_round": 2, "batch_size": 8,
        "model": {"name_or_path": str(inputs["model"]), "pooling": "mean", "max_length": 24},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 200},
        "eval": {"sts": [str(inputs["sts"])]},
        "mining": {"params": {"range_max": 20}},
        "training": {"progress": False},
    }
    out.update(changes)
    return out


def write_config(path: Path, output_dir: Path, inputs: dict[str, Path], **changes: Any) -> Path:
    path.write_text(yaml.safe_dump(settings(output_dir, inputs, **changes)), encoding="utf-8")
    return path


def cli_env(api_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no test-only Prefect settings; the harness API when given."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_LOGGING_") and k not in ("PREFECT_HOME", "PREFECT_API_URL",
                                                                  "PREFECT_RESULTS_LOCAL_STORAGE_PATH")}
    env.update(ONE_THREAD)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_line(proc: subprocess.CompletedProcess[str], *says: str) -> str:
    """The command failed with exit code 2 and exactly one line on stderr, starting 'error:', saying `says`."""
    assert proc.returncode == 2, f"rc {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-4000:]
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def reference_run(harness: str, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One complete 2-round run through the CLI, with an empty HOME of its own (what libraries write there)."""
    root = tmp_path_factory.mktemp("reference")
    home = root / "home"
    home.mkdir()
    config = write_config(root / "run.yaml", root / "run", inputs)
    # PREFECT_HOME of the user's own (with a server of their own, Prefect's home is theirs to place).
    env = cli_env(harness, HOME=str(home), PREFECT_HOME=str(root / "prefect-home"))
    for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"):
        env.pop(key, None)
    proc = cli(["run", str(config)], env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"dir": root / "run", "config": config, "home": home, "proc": proc}


def copy_run(reference: Path, dest: Path, inputs: dict[str, Path]) -> Path:
    """A copy of a run folder with its own config (output_dir pointing at the copy)."""
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(".simcse-curriculum.lock"))
    saved = yaml.safe_load((dest / "config.yaml").read_text())
    saved["output_dir"] = str(dest)
    (dest / "config.yaml").write_text(yaml.safe_dump(saved))
    return write_config(dest.parent / f"{dest.name}.yaml", dest, inputs)


# ----------------------------------------------------------------------------- state that cannot reset

@pytest.fixture(scope="module")
def plain_runs(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The round loop without Prefect (flows.rounds.loop with the plain steps, as the experiment harness runs it):
    an uninterrupted 2-round run, and the same run stopped after round 0 closed."""
    from flows.rounds.loop import plain_steps, run_rounds
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import torch_threads

    root = tmp_path_factory.mktemp("plain")

    class Stop(Exception):
        pass

    def stop_after_round_0(r: int, _metrics: dict[str, Any]) -> None:
        if r == 0:
            raise Stop

    with torch_threads(1):
        full = config_from_mapping(settings(root / "full", inputs))
        run_rounds(full, RunDir(root / "full"), plain_steps(full, RunDir(root / "full")))
        half = config_from_mapping(settings(root / "half", inputs))
        how = plain_steps(half, RunDir(root / "half"))
        with pytest.raises(Stop):
            run_rounds(half, RunDir(root / "half"), dataclasses.replace(how, on_round=stop_after_round_0))
    assert (root / "half/rounds/0/metrics.json").is_file() and not (root / "half/rounds/1").exists()
    return {"full": root / "full", "half": root / "half"}


def _resume_plain(folder: Path, inputs: dict[str, Path]) -> dict[str, Any]:
    from flows.rounds.loop import plain_steps, run_rounds
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import torch_threads

    config = config_from_mapping(settings(folder, inputs))
    with torch_threads(1):
        return run_rounds(config, RunDir(folder), plain_steps(config, RunDir(folder)))


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
def test_lost_state_with_complete_rounds_is_rebuilt_not_restarted(
        damage: str, plain_runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Round 0 complete, state.json lost: round 1 continues the curriculum exactly (old code: round 1 planned
    at stage 0, competence c0, rc 0; or, truncated, an error advising to delete the file)."""
    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    state_path = folder / "state.json"
    original = state_path.read_text()
    if damage == "missing":
        state_path.unlink()
    elif damage == "empty":
        state_path.write_text("{}")
    else:
        state_path.write_text(original[: len(original) // 2])
    caplog.set_level("WARNING", logger="flows")
    summary = _resume_plain(folder, inputs)

    assert summary["rounds_completed"] == [0, 1]
    reference = json.loads((plain_runs["full"] / "state.json").read_text())
    assert json.loads(state_path.read_text()) == reference, "the same curriculum as a run that never lost it"
    for r in (0, 1):
        ours = json.loads((folder / f"rounds/{r}/metrics.json").read_text())["curriculum"]
        ref = json.loads((plain_runs["full"] / f"rounds/{r}/metrics.json").read_text())["curriculum"]
        assert ours == ref
    assert "rebuilt from rounds 0-0" in caplog.text and "replayed exactly" in caplog.text
    damaged = folder / "state.json.damaged"
    assert damaged.is_file() == (damage != "missing"), "the damaged file is kept beside"


def test_state_that_does_not_replay_to_the_records_stops_the_run(plain_runs: dict[str, Path],
                                                                  inputs: dict[str, Path], tmp_path: Path) -> None:
    """A lost state whose rounds' records do not replay (records of a different curriculum, each whole) is an
    error naming the round and the way out; nothing is written (old code: a fresh curriculum, rc 0). (A record
    edited by hand no longer gets this far: its record_sha256 stops the run first.)"""
    from curriculum.errors import StateError
    from flows.run.rundir import seal

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    (folder / "state.json").unlink()
    metrics_path = folder / "rounds/0/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["curriculum"]["competence"] = 0.5
    metrics_path.write_text(json.dumps(seal(metrics)))
    with pytest.raises(StateError, match=r"state\.json is missing, and rebuilding it from rounds 0-0 does not give "
                                         r"what they recorded \(round 0 recorded competence 0\.5.*restore state\.json"):
        _resume_plain(folder, inputs)
    assert not (folder / "state.json").exists() and not (folder / "rounds/1").exists()


def test_state_ahead_of_deleted_rounds_is_rebuilt_and_the_rounds_trained_again(
        plain_runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """rounds/0 and every later round deleted, as a changed model's message advises (old code: every rerun
    stopped with a traceback, 'round 0 is closed but its model is missing'): state.json, ahead of the rounds on
    disk, is rebuilt from them (none) and the run trains them again, to the curriculum of a run that never
    lost them."""
    folder = tmp_path / "run"
    shutil.copytree(plain_runs["full"], folder)
    for r in (0, 1):
        shutil.rmtree(folder / f"rounds/{r}")
    caplog.set_level("WARNING", logger="flows")
    summary = _resume_plain(folder, inputs)

    assert summary["rounds_completed"] == [0, 1]
    reference = json.loads((plain_runs["full"] / "state.json").read_text())
    assert json.loads((folder / "state.json").read_text()) == reference
    for r in (0, 1):
        ours = json.loads((folder / f"rounds/{r}/metrics.json").read_text())
        ref = json.loads((plain_runs["full"] / f"rounds/{r}/metrics.json").read_text())
        assert ours["curriculum"] == ref["curriculum"] and ours["model_sha256"] == ref["model_sha256"]
    assert "state.json is ahead of the rounds on disk (it records round 1 closed, but no round is complete" \
        in caplog.text


def test_deleting_only_the_last_round_names_the_round_to_delete_from(plain_runs: dict[str, Path],
                                                                     inputs: dict[str, Path], tmp_path: Path) -> None:
    """rounds/1 deleted alone: round 0's optimizer state went when round 1 trained, so round 1 cannot be
    trained again on its own; one line says to delete from rounds/0 (old code: a traceback)."""
    from dataio.errors import InputError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["full"], folder)
    shutil.rmtree(folder / "rounds/1")
    with pytest.raises(InputError, match=r"optimizer state of round 0 is missing, so round 1 cannot continue the "
                                         r"run's schedule; delete .*/rounds/0 and every later round"):
        _resume_plain(folder, inputs)
    assert not (folder / "rounds/1/metrics.json").exists()


def test_a_round_deleted_under_later_complete_rounds_is_one_line(plain_runs: dict[str, Path],
                                                                  inputs: dict[str, Path], tmp_path: Path) -> None:
    """rounds/0 deleted, rounds/1 kept (trained from the deleted model): not rebuilt, one line with the way out,
    nothing written (old code: a traceback, 'round 0 is closed but its model is missing')."""
    from curriculum.errors import StateError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["full"], folder)
    shutil.rmtree(folder / "rounds/0")
    state = (folder / "state.json").read_bytes()
    with pytest.raises(StateError, match=r"/rounds/0 is missing or incomplete while round 1 is complete, trained "
                                         r"from it; restore it, or delete .*/rounds/0 and every later round"):
        _resume_plain(folder, inputs)
    assert (folder / "state.json").read_bytes() == state and not (folder / "rounds/0").exists()


def test_a_changed_model_names_the_first_round_that_can_be_trained_again(tmp_path: Path) -> None:
    """Round 1's model changed: round 0's optimizer state is gone (kept for the last round only), so deleting
    rounds/1 alone would stop at the next line; the message says rounds/0 (old code: rounds/1)."""
    from dataio.errors import InputError
    from flows.run.rundir import RunDir

    run = RunDir(tmp_path / "run")
    for r in (0, 1):
        run.model_dir(r).mkdir(parents=True)
        (run.model_dir(r) / "config.json").write_text("{}")
        run.metrics_path(r).write_text(json.dumps({"model_sha256": "0" * 64}))
    run.optimizer_dir(1).mkdir()
    with pytest.raises(InputError, match=f"or delete {run.round_dir(0)} and every later round"):
        run.check_model(1)
    run.optimizer_dir(0).mkdir()
    with pytest.raises(InputError, match=f"or delete {run.round_dir(1)} and every later round"):
        run.check_model(1)


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _raise_dev(record: dict[str, Any], by: float = 5.0) -> None:
    """A careful hand edit: round 0's dev score up by `by` points, in its dev_metric and in its evaluation."""
    name = record["dev_metric"]["name"]
    kind, stem = name.split("/", 1)
    record["dev_metric"]["value"] += by
    record["evaluation"][kind][stem] += by


@pytest.mark.parametrize("edit", ["dev score", "dev score, a record older than its checksum",
                                  "dev_metric alone", "another round's record"])
def test_an_edited_round_record_stops_the_resume_with_state_json_intact(
        edit: str, plain_runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code trusted rounds/<r>/metrics.json as long as state.json was intact: an edited dev score made the
    model to use (selection.json) a round that never scored it, rc 0. Now every resume checks each complete round's
    record first (its round, its record_sha256, its dev metric against its evaluation, and against the state's
    history of the round) and stops in one line before anything reads it."""
    from curriculum.errors import StateError
    from dataio.errors import InputError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    record = folder / "rounds/0/metrics.json"
    selection = (folder / "selection.json").read_bytes()
    if edit == "dev score":
        _edit_json(record, _raise_dev)
        error, says = InputError, r"round 0's record was edited after the round closed \(its content no longer matches"
    elif edit == "dev score, a record older than its checksum":
        _edit_json(record, lambda m: (_raise_dev(m), m.pop("record_sha256", None)))
        error, says = StateError, (r"state\.json disagrees with round 0's metrics\.json \(dev_metric: .* in "
                                   r"state\.json, .* in metrics\.json\), .*which file was edited cannot be told; "
                                   r"restore the edited one from a backup \(if metrics\.json is right, delete "
                                   r"state\.json")
    elif edit == "dev_metric alone":
        _edit_json(record, lambda m: (m["dev_metric"].update(value=m["dev_metric"]["value"] + 5),
                                      m.pop("record_sha256", None)))
        error, says = InputError, r"round 0's record gives its dev metric .* but its evaluation as"
    else:
        _edit_json(record, lambda m: m.update({"round": 1}))
        error, says = InputError, r"this is not round 0's record \(it is about round 1\)"
    with pytest.raises(error, match=says):
        _resume_plain(folder, inputs)
    assert not (folder / "rounds/1").exists() and (folder / "selection.json").read_bytes() == selection


def test_state_json_that_disagrees_with_whole_records_is_rebuilt_from_them(
        plain_runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A state.json that reads fine but tells another story than the rounds' sealed records (edited, or put back
    from another run) is rebuilt from the records exactly, as a lost one is (old code: continued from it)."""
    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)

    def edit(state: dict[str, Any]) -> None:
        closes = [e for e in state["history"] if e["round"] == 0 and e["event"] in ("advance", "hold", "end_round")]
        closes[-1]["dev_metric"] += 5.0

    _edit_json(folder / "state.json", edit)
    caplog.set_level("WARNING", logger="flows")
    assert _resume_plain(folder, inputs)["rounds_completed"] == [0, 1]
    assert "state.json disagrees with round 0's metrics.json (dev_metric: " in caplog.text
    assert "rebuilt from rounds 0-0" in caplog.text and (folder / "state.json.damaged").is_file()
    reference = json.loads((plain_runs["full"] / "state.json").read_text())
    assert json.loads((folder / "state.json").read_text()) == reference


def test_a_rounds_triplets_mined_again_after_it_trained_stop_the_resume(plain_runs: dict[str, Path],
                                                                         inputs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """Round 0's triplets rewritten after round 0 trained on them (old code: `mine --out <run>/triplets` did it
    unnoticed, and the report described data the round never saw). The manifest's sha256 recorded in metrics.json
    (older records: its band statistics) no longer matches: one line, before anything reads them."""
    from dataio.errors import InputError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    manifest = folder / "triplets/round=0/.manifest.json"

    def remined(m: dict[str, Any]) -> None:
        band = next(iter(m["bands"].values()))
        band["mean_anchor_negative_sim"] += 0.1

    _edit_json(manifest, remined)
    says = (rf"^{manifest}: round 0's triplets were mined again after the round trained on them .*restore "
            rf"{manifest.parent} from a backup, or delete it")
    with pytest.raises(InputError, match=says):
        _resume_plain(folder, inputs)
    _edit_json(folder / "rounds/0/metrics.json",
               lambda m: (m["mining"].pop("manifest_sha256", None), m.pop("record_sha256", None)))
    with pytest.raises(InputError, match=says):  # a record from before the manifest's sha256 was kept
        _resume_plain(folder, inputs)
    assert not (folder / "rounds/1").exists()


def test_a_moved_run_folder_names_its_own_models_old_records_included(plain_runs: dict[str, Path],
                                                                      inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: each round's metrics.json recorded its model's absolute path, and the model to use (the run's
    summary, selection.json, the report) was read from it: a run folder moved, or restored elsewhere, named models
    in the old place (gone, or for a copy the original's). Now a round's record names its model relative to the
    run folder, and a record written before (an absolute path) is read as its round's model where the folder is
    now; selection.json names rounds' models relative to the folder, the summary resolves them."""
    from flows.run.rundir import seal

    original = tmp_path / "original"
    shutil.copytree(plain_runs["full"], original)
    record = original / "rounds/0/metrics.json"
    older = {k: v for k, v in json.loads(record.read_text()).items() if k != "record_sha256"}
    older["model"] = str(original / "rounds/0/model")  # as older versions wrote it
    record.write_text(json.dumps(seal(older)))
    moved = tmp_path / "moved"
    original.rename(moved)
    summary = _resume_plain(moved, inputs)  # both rounds complete: nothing trained, the records read again
    assert summary["rounds_completed"] == [0, 1]
    for name in ("selection.json", "report.md", "rounds/1/metrics.json", "rounds/1/train_result.json"):
        assert str(original) not in (moved / name).read_text(), f"{name} names the old folder"
    selection = json.loads((moved / "selection.json").read_text())
    assert [c["model"] for c in selection["candidates"] if c["round"] != "base"] == ["rounds/0/model",
                                                                                     "rounds/1/model"]
    assert json.loads((moved / "rounds/1/metrics.json").read_text())["model"] == "rounds/1/model"
    chosen = selection["selected_round"]
    expected = str(inputs["model"]) if chosen == "base" else str(moved / "rounds" / str(chosen) / "model")
    assert summary["model_to_use"] == expected and Path(expected).is_dir()


def test_a_deleted_round_model_is_one_line_and_its_way_out_resumes_the_run(
        plain_runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Round 0's model deleted, round 1 to do. Old code: RuntimeError, a traceback; and deleting rounds/0 as well
    left state.json recording round 0 closed, so round 0 was never opened again (another traceback). Now one line
    names the folder and the way out, and following it (delete rounds/0) rebuilds the state from the rounds left
    and trains round 0 again: the same run as one never interrupted."""
    from dataio.errors import InputError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    shutil.rmtree(folder / "rounds/0/model")
    with pytest.raises(InputError, match=rf"^{folder / 'rounds/0/model'}: round 0's model is missing, though "
                                         rf"metrics.json marks the round complete: restore the folder, or delete "
                                         rf"{folder / 'rounds/0'} and every later round to train them again"):
        _resume_plain(folder, inputs)
    assert not (folder / "rounds/1").exists()
    shutil.rmtree(folder / "rounds/0")
    caplog.set_level("WARNING", logger="flows")
    assert _resume_plain(folder, inputs)["rounds_completed"] == [0, 1]
    assert "is ahead of the rounds on disk (it records round 0 closed, but no round is complete" in caplog.text
    reference = json.loads((plain_runs["full"] / "state.json").read_text())
    assert json.loads((folder / "state.json").read_text()) == reference


# ------------------------------------------------------------------------------- own only what is ours

def test_run_refuses_a_foreign_folder_and_leaves_it_untouched(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: report.md and plots/metrics.png overwritten, then a crash reading the user's timings.json."""
    theirs = tmp_path / "theirs"
    (theirs / "plots").mkdir(parents=True)
    (theirs / "report.md").write_text("# my quarterly report\n")
    (theirs / "plots/metrics.png").write_bytes(b"\x89PNG my plot")
    (theirs / "timings.json").write_text("my timings, not JSON")
    before = snapshot(theirs)
    config = write_config(tmp_path / "run.yaml", tmp_path / "elsewhere", inputs)
    proc = cli(["run", str(config), "--output-dir", str(theirs)], cli_env(None), timeout=300)
    one_line(proc, str(theirs), "not empty and not a simcse-curriculum run folder", "choose a new or empty output_dir")
    assert snapshot(theirs) == before, "nothing added, changed or removed"
    assert not (tmp_path / "elsewhere").exists()


def test_mine_refuses_a_foreign_folder_and_leaves_it_untouched(inputs: dict[str, Path], tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me\n")
    before = snapshot(theirs)
    proc = cli(["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(theirs),
                "--quiet"], cli_env(None), timeout=300)
    one_line(proc, str(theirs), "not a triplets folder (it holds notes.txt)")
    assert snapshot(theirs) == before


def test_a_run_that_fails_inside_the_flow_before_any_output_leaves_nothing(inputs: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """Bad input found inside the flow (a pickle-only base model, on the ephemeral API): one line, and neither
    the new folder nor its .prefect/ stay (old code: a traceback, .prefect/ and config.yaml left)."""
    pickled = tmp_path / "pickled-model"
    _pickle_copy(inputs["model"], pickled)
    out = tmp_path / "new" / "run"
    config = write_config(tmp_path / "run.yaml", out, inputs,
                          model={"name_or_path": str(pickled), "pooling": "mean", "max_length": 24})
    proc = cli(["run", str(config), "--quiet"], cli_env(None), timeout=600)
    one_line(proc, str(pickled), "only pickle weights (pytorch_model.bin)", "safetensors")
    assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))


RUN_CONFIG_TEXT = "output_dir: x\nrounds: 1\nsteps_per_round: 1\n"


def _failed_at_exit(folder: Any) -> None:
    """What interpreter exit does for an OutputFolder whose command failed (after Prefect's server stopped)."""
    import atexit

    atexit.unregister(folder._at_exit)
    folder._at_exit()


def test_a_failed_run_removes_its_own_folder_not_a_live_sibling_run_in_the_new_parent(tmp_path: Path) -> None:
    """A sweep into a new parent: run exp/seed0 creates exp/, run exp/seed1 starts beside it, then seed0 fails
    before any output. Only seed0 goes; seed1's config.yaml, lock and Prefect database stay, so it can finish
    and be resumed (old code: rmtree of exp/ at seed0's exit)."""
    import atexit

    from flows.run.output_folder import OutputFolder

    parent = tmp_path / "exp"
    failing = OutputFolder(parent / "seed0", "simcse-curriculum run seed0.yaml")
    sibling = OutputFolder(parent / "seed1", "simcse-curriculum run seed1.yaml")
    try:
        with pytest.raises(RuntimeError), failing as ours:
            (ours / "config.yaml").write_text(RUN_CONFIG_TEXT)
            live = sibling.__enter__()
            (live / "config.yaml").write_text(RUN_CONFIG_TEXT)
            (live / ".prefect").mkdir()
            (live / ".prefect" / "prefect.db").write_bytes(b"the sibling's flow runs")
            raise RuntimeError("a broken base model")
        _failed_at_exit(failing)
        assert not (parent / "seed0").exists()
        assert sorted(p.name for p in parent.iterdir()) == ["seed1"]
        assert (live / "config.yaml").read_text() == RUN_CONFIG_TEXT
        assert (live / ".prefect" / "prefect.db").read_bytes() == b"the sibling's flow runs"
        assert (live / ".simcse-curriculum.lock").is_file(), "the live run still holds its folder"
    finally:
        sibling.__exit__(None, None, None)
        atexit.unregister(sibling._at_exit)
    assert (parent / "seed1" / "config.yaml").is_file()


def test_a_failed_run_into_new_nested_folders_removes_each_empty_parent_it_made(tmp_path: Path) -> None:
    from flows.run.output_folder import OutputFolder

    (tmp_path / "mine.txt").write_text("not the command's\n")
    folder = OutputFolder(tmp_path / "new" / "x" / "y", "simcse-curriculum run a.yaml")
    with pytest.raises(RuntimeError), folder as out:
        (out / "config.yaml").write_text(RUN_CONFIG_TEXT)
        (out / ".prefect").mkdir()
        raise RuntimeError("a broken base model")
    assert (out / "config.yaml").is_file(), "removed at interpreter exit, not before"
    _failed_at_exit(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_owned_folder_removes_only_what_make_folder_created(tmp_path: Path) -> None:
    """dataio.owned_folder, the rule `mine` and `run` share: the folder with its contents only when made here,
    then the parents made here while empty; an existing folder and a parent holding other files stay."""
    from dataio.owned_folder import make_folder

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("theirs")
    again = make_folder(existing)
    assert again.created == () and not again.made_itself
    again.remove()
    assert (existing / "keep.txt").read_text() == "theirs"

    owned = make_folder(tmp_path / "new" / "a" / "b")
    assert owned.created == (tmp_path / "new/a/b", tmp_path / "new/a", tmp_path / "new")
    (tmp_path / "new" / "other.txt").write_text("written meanwhile")
    (owned.path / "part.parquet").write_text("ours")
    owned.remove()
    assert not (tmp_path / "new" / "a").exists()
    assert (tmp_path / "new" / "other.txt").read_text() == "written meanwhile"

    with pytest.raises(FileExistsError):
        make_folder(tmp_path / "new" / "other.txt")


def test_a_folder_with_a_users_own_config_yaml_is_refused_without_advice_to_delete_it(tmp_path: Path) -> None:
    """Old code read the user's config.yaml as a run's: "a run with different settings ...; use another
    output_dir or delete <their folder> to start over" (or "unreadable; delete the run folder")."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(theirs), "rounds": 1, "steps_per_round": 2,
                                      "model": {"name_or_path": str(tmp_path / "model")},
                                      "data": {"builtin": "python_docstrings"}}), encoding="utf-8")
    for own in ("learning_rate: 0.1\n", "{{ not yaml"):
        (theirs / "config.yaml").write_text(own)
        before = snapshot(theirs)
        line = one_line(cli(["validate", str(config)], cli_env(None), timeout=300), str(theirs),
                        "not a simcse-curriculum run folder", "its config.yaml is not a run's",
                        "choose a new or empty output_dir")
        assert "delete" not in line
        assert snapshot(theirs) == before


def test_dry_run_refuses_every_folder_run_refuses_with_the_same_line(inputs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    """Old code: `run --dry-run` (and `validate`) said "config OK" for a folder holding someone else's files, a
    folder another command holds, and a lock path that is a folder, all refused by `run`; a run recorded there with
    other rounds was refused without the advice `run` gives. Now the check applies `run`'s own folder checks, in
    its order: the same line, and nothing written."""
    from flows.run.config import config_from_mapping

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.md").write_text("# my quarterly report\n")
    held = tmp_path / "held"
    held.mkdir()
    odd_lock = tmp_path / "odd-lock"
    (odd_lock / ".simcse-curriculum.lock").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(config_from_mapping(settings(other, inputs, rounds=5)).to_yaml())
    cases = [(theirs, "not empty and not a simcse-curriculum run folder (it holds report.md and no run's "
                      "config.yaml); choose a new or empty output_dir"),
             (held, "in use by 'simcse-curriculum run cfg.yaml' (pid"),
             (odd_lock, "is a folder, but it is where simcse-curriculum keeps"),
             (other, "holds a run with different settings (curriculum.total, rounds); use another output_dir or "
                     "delete"),
             (other, "rounds and steps_per_round set the length of the learning-rate and curriculum schedules")]
    holder = _hold_lock(held, "simcse-curriculum run cfg.yaml")
    try:
        for folder, says in cases:
            config = write_config(tmp_path / f"{folder.name}.yaml", folder, inputs)
            before = snapshot(folder)
            dry = one_line(cli(["run", str(config), "--dry-run"], cli_env(None), timeout=300), str(folder), says)
            assert one_line(cli(["run", str(config)], cli_env(None), timeout=300)) == dry
            assert one_line(cli(["validate", str(config)], cli_env(None), timeout=300)) == dry
            assert snapshot(folder) == before, "nothing written"
    finally:
        holder.communicate("", timeout=60)


def test_a_refused_serve_leaves_nothing(inputs: dict[str, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", tmp_path / "out", inputs)
    proc = cli(["serve", str(config), "--cron", "0 2 * * *"], cli_env(None), timeout=300)
    assert proc.returncode == 2 and "Cannot schedule flows on an ephemeral server" in proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- the lock

def _start_paused(args: list[str], env: dict[str, str], inputs: dict[str, Path], pattern: str,
                  flag: Path) -> subprocess.Popen[str]:
    env = {**env, "PAUSE_AT": pattern, "PAUSE_FLAG": str(flag)}
    proc = subprocess.Popen([sys.executable, str(inputs["driver"]), *args], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while not Path(f"{flag}.paused").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
            proc.kill()
            raise AssertionError(f"the first command never reached {pattern!r} ({proc.returncode}):\n{err[-4000:]}")
        time.sleep(0.1)
    return proc


def test_two_mines_on_one_new_folder_the_second_is_refused_naming_the_first(inputs: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """Old code: both mine into the same new folder; they failed and deleted it."""
    out = tmp_path / "triplets"
    args = ["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(out),
            "--quiet", "--bands", "random,nearest_neighbour"]
    flag = tmp_path / "first"
    first = _start_paused(args, cli_env(None), inputs, "band=", flag)
    try:
        second = cli(args, cli_env(None), timeout=300)
        line = one_line(second, str(out), "in use by 'simcse-curriculum mine", f"pid {first.pid} on host")
        assert "wait for it to finish" in line
        assert out.is_dir(), "the refused command removed nothing"
    finally:
        Path(f"{flag}.go").touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    assert (out / "round=0").is_dir() and not (out / ".simcse-curriculum.lock").exists()


def test_two_runs_on_one_folder_the_second_is_refused_naming_the_first(harness: str, inputs: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """Old code: the second run did all the work again, side by side with the first."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", out, inputs)
    flag = tmp_path / "first"
    first = _start_paused(["run", str(config), "--quiet"], cli_env(harness), inputs, "base_metrics.json", flag)
    try:
        second = cli(["run", str(config), "--quiet"], cli_env(harness), timeout=300)
        one_line(second, str(out), "in use by 'simcse-curriculum run", f"pid {first.pid} on host")
    finally:
        Path(f"{flag}.go").touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    assert json.loads((out / "rounds/1/metrics.json").read_text())["round"] == 1


def test_a_second_run_during_the_first_ones_start_up_is_refused_naming_the_first(harness: str,
                                                                                 inputs: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """Old code: while the first run was starting (its run.log written, its config.yaml not yet), a second `run` on
    the folder was told it was 'not empty and not a simcse-curriculum run folder (it holds run.log and no run's
    config.yaml)'. Now it is told what it is told later in the run: the folder is in use, by the first (named)."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", out, inputs, rounds=1)
    flag = tmp_path / "first"
    first = _start_paused(["run", str(config), "--quiet"], cli_env(harness), inputs, "config.yaml", flag)
    try:
        assert (out / "run.log").is_file() and not (out / "config.yaml").exists(), "paused in its start-up"
        for args in (["run", str(config), "--quiet"], ["run", str(config), "--dry-run"]):
            second = cli(args, cli_env(harness), timeout=300)
            one_line(second, f"{out}: in use by 'simcse-curriculum run", f"pid {first.pid} on host",
                     "wait for it to finish")
    finally:
        Path(f"{flag}.go").touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    assert json.loads((out / "rounds/0/metrics.json").read_text())["round"] == 0


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    from dataio.folder_lock import lock_folder, read_holder

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from dataio.folder_lock import lock_folder
        with lock_folder({str(tmp_path)!r}, "holder"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)], cwd=str(REPO))
    assert holder.wait(timeout=120) == -signal.SIGKILL
    assert read_holder(tmp_path)["pid"] == holder.pid, "the dead holder's lock file is still there"
    with lock_folder(tmp_path, "next"):
        assert read_holder(tmp_path)["command"] == "next"
    assert not (tmp_path / ".simcse-curriculum.lock").exists()


def _hold_lock(folder: Path, command: str) -> subprocess.Popen[str]:
    """Another process holding `folder`'s lock as `command` would, until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from dataio.folder_lock import lock_folder
        with lock_folder({str(folder)!r}, {command!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)], cwd=str(REPO), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_mine_into_a_folder_inside_a_running_run_is_refused_naming_the_run(inputs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """Old code: `mine --out runs/x/triplets` beside a running `run` of runs/x took the lock of triplets/ (free)
    and rewrote the round the run trained on. Now a folder inside a held folder is refused as the held folder
    itself is: one line naming the holder; nothing is created."""
    from dataio.folder_lock import FolderInUse, lock_folder

    run = tmp_path / "run"
    (run / "triplets").mkdir(parents=True)
    holder = _hold_lock(run, "simcse-curriculum run cfg.yaml")
    try:
        for out in (run / "triplets", run / "new" / "deeper"):
            proc = cli(["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(out),
                        "--quiet"], cli_env(None), timeout=300)
            line = one_line(proc, f"{out}: inside {run}, which is in use by 'simcse-curriculum run cfg.yaml' (pid "
                                  f"{holder.pid} on host", "wait for it to finish")
            assert "Traceback" not in line
        assert sorted(p.name for p in run.iterdir()) == [".simcse-curriculum.lock", "triplets"]
        assert not list((run / "triplets").iterdir()), "nothing mined into the run's folder"
    finally:
        holder.communicate("", timeout=60)
    with lock_folder(run / "triplets", "mine"):  # the run is gone: the folder is free again
        pass
    (run / ".simcse-curriculum.lock").write_text(json.dumps({"pid": holder.pid, "command": "dead"}))
    with lock_folder(run / "triplets", "mine"):  # nor is a lock file that a dead holder left above it
        pass
    holder = _hold_lock(run, "simcse-curriculum run cfg.yaml")  # the unit under the CLI: lock_folder itself
    try:
        with pytest.raises(FolderInUse, match=rf"inside {run}, which is in use by 'simcse-curriculum run cfg.yaml'"):
            with lock_folder(run / "triplets", "mine"):
                pass
    finally:
        holder.communicate("", timeout=60)


def test_a_lock_path_that_is_a_folder_is_one_line(inputs: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Old code: IsADirectoryError, a 45-line traceback. Now one line naming the path and the way out."""
    from flows.cli.app import main

    out = tmp_path / "triplets"
    (out / ".simcse-curriculum.lock").mkdir(parents=True)
    rc = main(["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(out),
               "--quiet"])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0] == (f"error: {out / '.simcse-curriculum.lock'}: is a folder, but it is where simcse-curriculum "
                        f"keeps {out}'s lock file; move it away (or delete it, if nothing of yours is in it), then "
                        "rerun")


# ----------------------------------------------------------------------------------------- no orphans

def _prefect_servers(prefect_home: Path) -> list[int]:
    """Pids of uvicorn Prefect API servers whose PREFECT_HOME is `prefect_home`."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if "uvicorn" in cmdline and "prefect.server.api.server:create_app" in cmdline and \
                    process.environ().get("PREFECT_HOME") == str(prefect_home):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_sigkill_of_run_leaves_no_prefect_server(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: 6 of 6 SIGKILLs left Prefect's ephemeral uvicorn server (~220 MB) listening."""
    import psutil

    out = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", out, inputs)
    flag = tmp_path / "first"
    run = _start_paused(["run", str(config), "--quiet"], cli_env(None), inputs, "base_metrics.json", flag)
    prefect_home = out.resolve() / ".prefect"
    servers = _prefect_servers(prefect_home)
    try:
        assert servers, "the run started an ephemeral Prefect server"
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(psutil.pid_exists(p) and
                                                  psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                                  for p in servers):
            time.sleep(0.2)
        left = _prefect_servers(prefect_home)
        assert not left, f"Prefect server(s) {left} outlived the killed run"
    finally:
        for pid in _prefect_servers(prefect_home):
            os.kill(pid, signal.SIGKILL)


def test_the_server_spawn_that_the_guard_watches_exists() -> None:
    """flows.orchestration.server_guard wraps Prefect's one place that spawns the ephemeral server; an upgrade that
    renames
    it must fail here, not leave servers behind silently."""
    from prefect.server.api.server import SubprocessASGIServer

    assert callable(getattr(SubprocessASGIServer, "_run_uvicorn_command", None))


# ------------------------------------------------------------------------------ one line for every failure

def _namespace_prefix() -> list[str] | None:
    """`unshare` arguments for a private mount namespace in which this user may mount, or None."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True,
                           timeout=60, check=False)
    return prefix if probe.returncode == 0 else None


def _in_mount_namespace(mounts: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot mount in a private namespace here (unshare not permitted)")
    script = f'{mounts} && exec "$@"'
    return subprocess.run([*prefix, "sh", "-c", script, "sh", sys.executable, "-m", "flows.cli", *args], env=env,
                          cwd=str(REPO), capture_output=True, text=True, timeout=900, check=False)


def test_run_on_a_full_disk_is_one_line(harness: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    """A 3 MB file system fills while the round's 4 MB model is written (old code: a SafetensorError or a
    torch writer traceback)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    config = write_config(tmp_path / "run.yaml", disk / "run", inputs)
    proc = _in_mount_namespace(f"mount -t tmpfs -o size=3m tmpfs {disk}", ["run", str(config), "--quiet"],
                               cli_env(harness))
    one_line(proc, str(disk / "run"), "no space left on the device", "rerun the same command")


CHECKPOINT_ON_A_SMALL_DISK = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from dataio.os_faults import describe_os_fault
    from simcse.checkpoints import TrainerState, build_optimizer, linear_schedule, save_checkpoint
    from simcse.model import SimCSEEncoder
    from simcse.train_config import TrainConfig
    disk, model = Path(sys.argv[1]), sys.argv[2]
    encoder = SimCSEEncoder.from_pretrained(model, pooling="mean")
    config = TrainConfig()
    optimizer = build_optimizer(encoder, config)
    sum(p.sum() for p in encoder.parameters()).backward()
    optimizer.step()  # AdamW's state is twice the weights: the 4 MB weights fit, then optimizer.pt fills the disk
    try:
        save_checkpoint(disk / "train" / "checkpoint", encoder, optimizer, linear_schedule(optimizer, config, 10),
                        TrainerState(), config, 10)
    except Exception as exc:
        print(describe_os_fault(exc, [disk]))
        print(sorted(p.name for p in (disk / "train").iterdir()))
    else:
        print("saved")
""")


def test_a_training_checkpoint_that_fills_the_disk_is_one_line(inputs: dict[str, Path], tmp_path: Path) -> None:
    """save_checkpoint on a 6 MB file system (the trainer's mid-round checkpoint, simcse.checkpoints): torch's zip
    writer fails without an errno ("unexpected pos"), and the old code's clean-up of the partial checkpoint freed
    the space before the CLI asked whether the disk was full, so it printed torch's traceback. Now the write's
    failure is recognised before the clean-up: one line naming the checkpoint, nothing partial left (rerunning
    after freeing space resumes from the previous checkpoint)."""
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot mount in a private namespace here (unshare not permitted)")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run([*prefix, "sh", "-c", f'mount -t tmpfs -o size=6m tmpfs {disk} && exec "$@"', "sh",
                           sys.executable, "-c", CHECKPOINT_ON_A_SMALL_DISK, str(disk), str(inputs["model"])],
                          env=cli_env(None), cwd=str(REPO), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line, left = proc.stdout.splitlines()[-2:]
    assert line == (f"{disk / 'train' / 'checkpoint'}: no space left on the device; free some space (or choose an "
                    "output folder on another disk), then rerun the same command"), proc.stdout
    assert left == "[]", "the partial checkpoint is removed"


def test_mine_on_a_full_disk_is_one_line_not_a_sigbus(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The embeddings are written through a memory map: on a full tmpfs the old code died of SIGBUS (rc -7 /
    135), without a word."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = _in_mount_namespace(f"mount -t tmpfs -o size=96k tmpfs {disk}",
                               ["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]),
                                "--out", str(disk / "triplets"), "--quiet"], cli_env(None))
    one_line(proc, "no space left on the device")


def test_run_into_a_read_only_folder_is_one_line(harness: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: a PermissionError / OSError traceback."""
    out = tmp_path / "run"
    out.mkdir()
    config = write_config(tmp_path / "run.yaml", out, inputs)
    if os.geteuid() != 0:
        out.chmod(0o555)
        try:
            proc = cli(["run", str(config), "--quiet"], cli_env(harness), timeout=300)
        finally:
            out.chmod(0o755)
    else:
        proc = _in_mount_namespace(f"mount --bind {out} {out} && mount -o remount,bind,ro {out}",
                                   ["run", str(config), "--quiet"], cli_env(harness))
    one_line(proc, str(out), "choose a writable output folder" if os.geteuid() == 0 else "permission denied")
    assert not list(out.iterdir())


def test_a_run_into_a_folder_with_a_non_ascii_name_finishes(harness: str, inputs: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """An output folder named with a 'ü' (old code: every round trained, then exit 2 on every rerun, 'key must
    only contain lowercase letters, numbers, and dashes': the Prefect artifact key kept the 'ü')."""
    out = tmp_path / "läufe" / "prüfung-ü"
    config = write_config(tmp_path / "run.yaml", out, inputs, rounds=1)
    proc = cli(["run", str(config), "--quiet"], cli_env(harness), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "rounds/0/metrics.json").is_file() and (out / "report.md").is_file()


def _pickle_copy(model: Path, dest: Path) -> None:
    """The model folder with its weights as a pickle (pytorch_model.bin) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(model, dest)
    torch.save(load_file(str(dest / "model.safetensors")), dest / "pytorch_model.bin")
    (dest / "model.safetensors").unlink()


def test_damaged_and_pickled_models_in_evaluate_are_one_line(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: a SafetensorError traceback for a truncated model.safetensors; a pickle loaded as is."""
    truncated = tmp_path / "truncated"
    shutil.copytree(inputs["model"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    pickled = tmp_path / "pickled"
    _pickle_copy(inputs["model"], pickled)
    env = cli_env(None)
    proc = cli(["evaluate", str(truncated), "--sts", str(inputs["sts"]), "--json"], env, timeout=300)
    one_line(proc, str(weights), "damaged or incomplete safetensors file", "replace the model folder")
    proc = cli(["evaluate", str(pickled), "--sts", str(inputs["sts"]), "--json"], env, timeout=300)
    one_line(proc, str(pickled), "only pickle weights (pytorch_model.bin)", "unpickling can run code")


def test_a_damaged_round_model_in_run_is_one_line_and_the_traceback_is_in_run_log(
        harness: str, reference_run: dict[str, Any], inputs: dict[str, Path], tmp_path: Path) -> None:
    """Round 0's model truncated, round 1 to redo: the first task of round 1 that loads it fails inside the
    flow; stderr has the one line (old code: ~65 lines of Prefect traceback, then SafetensorError), run.log
    keeps the traceback."""
    folder = tmp_path / "run"
    config = copy_run(reference_run["dir"], folder, inputs)
    weights = folder / "rounds/0/model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    shutil.rmtree(folder / "rounds/1")
    proc = cli(["run", str(config)], cli_env(harness), timeout=600)
    assert proc.returncode == 2, proc.stderr[-4000:]
    lines = proc.stderr.splitlines()
    # the loop checks the model against the sha256 its round recorded before any task loads it
    assert lines[-1].startswith(f"error: {weights.parent}: round 0's model changed on disk"), proc.stderr[-4000:]
    assert not any(line.startswith("error: ") for line in lines[:-1])
    assert "Traceback" not in proc.stderr and "Finished in state" not in proc.stderr, proc.stderr
    log = (folder / "run.log").read_text()
    assert "Traceback (most recent call last)" in log and "round 0's model changed on disk" in log


def test_a_round_model_with_flipped_bytes_is_not_trained_on(plain_runs: dict[str, Path], inputs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """One flipped byte inside round 0's weights still loads (old code: round 1 trained on it, rc 0); the
    sha256 recorded when round 0 closed stops the resume with the way out, before round 1 writes anything."""
    from dataio.errors import InputError

    folder = tmp_path / "run"
    shutil.copytree(plain_runs["half"], folder)
    weights = folder / "rounds/0/model/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"round 0's model changed on disk since the round finished .* restore the "
                                         r"folder, or delete .*rounds/0 and every later round"):
        _resume_plain(folder, inputs)
    assert not (folder / "rounds/1").exists()
    (folder / "rounds/0/model/README.md").write_text("a card the team edited")  # cards are not the model
    weights.write_bytes((plain_runs["half"] / "rounds/0/model/model.safetensors").read_bytes())
    assert _resume_plain(folder, inputs)["rounds_completed"] == [0, 1]


def test_mine_on_a_damaged_embeddings_cache_is_one_line_with_a_hint(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: a numpy traceback on every rerun, no hint that the cache is what is broken."""
    out = tmp_path / "triplets"
    args = ["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(out), "--quiet",
            "--bands", "random"]
    first = cli(args, cli_env(None), timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    (matrix,) = (out / ".cache").glob("emb-*/embeddings.npy")
    matrix.write_bytes(matrix.read_bytes()[: matrix.stat().st_size // 2])
    shutil.rmtree(out / "round=0")  # so the round is mined again and reads the cache
    proc = cli(args, cli_env(None), timeout=600)
    one_line(proc, str(matrix.parent), "damaged embeddings cache", "delete this folder to encode the corpus again")


def test_a_symbolic_link_loop_in_a_corpus_folder_is_one_line_naming_the_link(inputs: dict[str, Path], tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Old code followed a link back to its own folder until the kernel gave up, then named a path of 40 nested
    links as 'not a table file'; a link that leads to itself was 'no such file or folder'. Now one line naming the
    link and saying it is a symbolic link loop."""
    from flows.cli.app import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(inputs["corpus"], corpus / "a.txt")
    (corpus / "again").symlink_to(".")
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", inputs, data={"corpus": str(corpus)})
    assert main(["validate", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {corpus / 'again'}: in the table folder {corpus}: a symbolic link loop (it leads back "
                     f"to {corpus}, a folder it is in); remove the link, or rename it to start with '_' so it is not "
                     f"read (read as data.corpus of {config}, line 3)"], lines
    (corpus / "again").unlink()
    (corpus / "l1.txt").symlink_to("l2.txt")
    (corpus / "l2.txt").symlink_to("l1.txt")
    assert main(["validate", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {corpus / 'l1.txt'}: in the table folder {corpus}: a "
                                                   "symbolic link loop (its links lead back to themselves)"), lines
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", inputs, data={"corpus": str(corpus / "l1.txt")})
    assert main(["validate", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {corpus / 'l1.txt'}: a symbolic link loop"), lines
    assert not (tmp_path / "run").exists()


def test_a_giant_line_in_a_corpus_or_pairs_file_is_refused_in_one_line_with_bounded_memory(
        inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code read a 50 MB line whole (and then tokenized it whole: 6.2 GB for one line). Now every line of a
    text input is measured in chunks before the file is read, and one over the limit is refused in one line
    naming the file, the line and the limit; the refusal's peak memory does not grow with the line."""
    from dataio.table_files import MAX_LINE_BYTES

    corpus = tmp_path / "corpus.txt"
    with corpus.open("w", encoding="utf-8") as handle:
        handle.write("A first sentence.\nA second one.\n")
        for _ in range(50):
            handle.write("word " * 200_000)  # 50 MB on line 3, written a megabyte at a time
        handle.write("\nA last sentence.\n")
    size = 50 * 1_000_000
    probe = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(REPO)!r})
        from dataio.errors import InputError
        from mining.corpus import load_corpus
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_corpus(corpus=[{str(corpus)!r}])
            error = None
        except InputError as exc:
            error = str(exc)
        print(json.dumps({{"error": error, "grew_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}}))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=str(REPO), capture_output=True, text=True, timeout=300,
                          env=cli_env(None), check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["error"] == (f"{corpus}: line 3: {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit of a line; "
                               "a row is a sentence or a short passage (the encoder reads only its first max_length "
                               "tokens): shorten or split the text, or remove the line"), result
    assert result["grew_kb"] < 16 * 1024, f"the refusal's peak memory grew {result['grew_kb']} KB with the line"

    # A pairs file through the command line: one line, nothing mined.
    pairs = tmp_path / "pairs.jsonl"
    long_text = "word " * (MAX_LINE_BYTES // 5 + 1)
    pairs.write_text("".join(json.dumps({"anchor": f"a {i}", "positive": f"p {i}"}) + "\n" for i in range(9))
                     + json.dumps({"anchor": long_text, "positive": "p"}) + "\n", encoding="utf-8")
    out = tmp_path / "triplets"
    proc = cli(["mine", "--corpus", str(inputs["corpus"]), "--pairs", str(pairs), "--model", str(inputs["model"]),
                "--out", str(out), "--quiet"], cli_env(None), timeout=300)
    one_line(proc, f"{pairs}: line 10: ", f"over the {MAX_LINE_BYTES:,}-byte limit of a line")
    assert not out.exists()


# ------------------------------------------------------------------------------------- library caches

def test_library_caches_stay_in_the_run_folder(reference_run: dict[str, Any]) -> None:
    """Old code: matplotlib wrote its font cache (and an empty config folder) under $HOME."""
    assert not list(reference_run["home"].rglob("*")), list(reference_run["home"].rglob("*"))
    assert list((reference_run["dir"] / "cache" / "matplotlib").glob("fontlist-*.json"))


def test_inspect_plots_leave_nothing_in_home_or_beside_the_plots(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: `inspect --plots` had matplotlib write its font cache under $HOME (~/.cache/matplotlib or
    ~/.config/matplotlib). Now its config and cache go to a temporary folder removed when the command ends; only
    the plots are written. A user's own MPLCONFIGDIR is used as set."""
    out = tmp_path / "triplets"
    mined = cli(["mine", "--corpus", str(inputs["corpus"]), "--model", str(inputs["model"]), "--out", str(out),
                 "--quiet", "--bands", "random"], cli_env(None, HOME=str(tmp_path / "mine-home")), timeout=600)
    assert mined.returncode == 0, mined.stderr[-4000:]
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(None, HOME=str(home), TMPDIR=str(tmp_path / "tmp"))
    for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"):
        env.pop(key, None)
    (tmp_path / "tmp").mkdir()
    plots = tmp_path / "plots"
    proc = cli(["inspect", str(out), "--plots", str(plots)], env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p.name for p in plots.iterdir()] == ["similarity_round0.png"]
    assert not list(home.rglob("*")), list(home.rglob("*"))
    assert not list((tmp_path / "tmp").iterdir()), "the temporary folder is removed"
    own = tmp_path / "my-mpl"
    proc = cli(["inspect", str(out), "--plots", str(plots)], {**env, "MPLCONFIGDIR": str(own)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list(own.glob("fontlist-*.json")), "the user's MPLCONFIGDIR is used"


# ------------------------------------------------------------------- registry versions verified before use

def _registry_night(inputs: dict[str, Path], folder: Path, registry: Path, **changes: Any) -> dict[str, Any]:
    """One registry run (flows.rounds.continuing: warm start, rounds, registration) through the plain steps."""
    from flows.rounds.continuing import run_continuing
    from flows.rounds.loop import plain_steps
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import torch_threads

    config = config_from_mapping(settings(folder, inputs, rounds=1, registry={
        "path": str(registry), "name": "enc", "force": True, "gate": {"min_gain": -100.0}}, **changes))
    with torch_threads(1):
        return run_continuing(config, lambda cfg: plain_steps(cfg, RunDir(Path(cfg.output_dir))))


def _flip(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    for i in range(4):
        data[len(data) // 2 + i] ^= 0x40
    weights.write_bytes(bytes(data))


def test_a_registry_version_with_flipped_bytes_is_not_warm_started_from(inputs: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """Old code: a run warm-started from the current version with 4 flipped bytes in its model.safetensors (the
    file still loads) and trained on. Now the run checks the version's files against the sha256 recorded with it
    before it loads them: one line naming the file, the version and what to do; nothing evaluated or trained."""
    from dataio.errors import InputError
    from flows.registry.mlflow_store import MlflowStore
    from flows.registry.model_registry import ModelRegistry

    registry = ModelRegistry(MlflowStore.at(tmp_path / "registry"), "enc")
    weights = registry.local_path(registry.ensure_started(inputs["model"])) / "model.safetensors"
    _flip(weights)
    with pytest.raises(InputError, match=rf"^{weights}: version 1 of 'enc': model.safetensors changed since it was "
                                         r"registered .*restore the registry folder .*models rollback"):
        _registry_night(inputs, tmp_path / "run", tmp_path / "registry")
    assert not (tmp_path / "run" / "base_metrics.json").exists() and not (tmp_path / "run" / "rounds").exists()


def test_a_parent_whose_fresh_evaluation_misses_its_recorded_score_stops_the_run(inputs: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """Old code: a run's baseline 8.5 points below the score recorded with the version it started from went
    unnoticed, and the gate compared the run's model with that baseline. Now the run compares its evaluation of
    the version with the version's recorded scores (same files and settings) and stops before round 0 trains."""
    from dataio.errors import InputError
    from flows.registry.model_registry import open_registry

    night1 = _registry_night(inputs, tmp_path / "n1", tmp_path / "registry")
    assert night1["registry"]["registered"]["version"] == 2
    registry = open_registry(str(tmp_path / "registry"), "enc")
    v2 = registry.version(2)
    recorded = v2.metrics["sts/sts_dev"]
    registry.client.set_model_version_tag("enc", "2", "simcse.metrics",
                                          json.dumps({**v2.metrics, "sts/sts_dev": recorded + 8.5}))
    with pytest.raises(InputError, match=r"base_metrics.json: the run's evaluation of version 2 of 'enc' gives "
                                         r"sts/sts_dev .*\(-8.50 points; .*tolerance is 0.50\): the version's files "
                                         r"or the evaluation changed"):
        _registry_night(inputs, tmp_path / "n2", tmp_path / "registry")
    assert not (tmp_path / "n2" / "rounds").exists(), "stopped before round 0 trained"
    assert json.loads(v2.tags["simcse.eval_keys"])["sts/sts_dev"], "what the scores were measured on"
    assert [v.version for v in registry.versions()] == [1, 2]
    # The same night with the recorded score restored runs through: the check is exact, not a fluke of noise.
    registry.client.set_model_version_tag("enc", "2", "simcse.metrics", json.dumps(v2.metrics))
    assert _registry_night(inputs, tmp_path / "n2", tmp_path / "registry")["registry"]["registered"]["version"] == 3


# --------------------------------------------------------------- the registry under concurrent and killed commands

# Runs `simcse-curriculum ARGS` with one MlflowClient method wrapped: $AT_WHEN is "pause" (announce
# $AT_FLAG.paused, wait for $AT_FLAG.go, then call it), "kill-before" or "kill-after" (SIGKILL itself before or
# right after the call returns): a registry command caught between two of its writes, on cue.
REGISTRY_DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, os.environ["REPO"])
    from mlflow import MlflowClient
    method, when, flag = os.environ["AT_METHOD"], os.environ["AT_WHEN"], os.environ.get("AT_FLAG", "")
    real = getattr(MlflowClient, method)
    def wrapped(self, *args, **kwargs):
        if when == "kill-before":
            os.kill(os.getpid(), signal.SIGKILL)
        if when == "pause":
            open(flag + ".paused", "w").close()
            while not os.path.exists(flag + ".go"):
                time.sleep(0.05)
        out = real(self, *args, **kwargs)
        if when == "kill-after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(MlflowClient, method, wrapped)
    from flows.cli.app import main
    sys.exit(main(sys.argv[1:]))
""")


def _registry_command(args: list[str], tmp_path: Path, method: str, when: str,
                      flag: Path | None = None) -> subprocess.Popen[str]:
    driver = tmp_path / "registry_driver.py"
    driver.write_text(REGISTRY_DRIVER, encoding="utf-8")
    env = cli_env(None, REPO=str(REPO), AT_METHOD=method, AT_WHEN=when, AT_FLAG=str(flag or ""))
    return subprocess.Popen([sys.executable, str(driver), *args], env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _registry_and_run(inputs: dict[str, Path], tmp_path: Path, score: float) -> tuple[Any, Path]:
    """A registry (version 1: the tiny model) and a finished run from it whose round scores `score` on the dev
    metric against the starting model's 70."""
    from test_flows_registry import evaluation, fake_run

    from flows.registry.mlflow_store import MlflowStore
    from flows.registry.model_registry import ModelRegistry

    registry = ModelRegistry(MlflowStore.at(tmp_path / "registry"), "enc")
    start = registry.local_path(registry.ensure_started(inputs["model"]))
    run = fake_run(tmp_path / "run", start, evaluation(70.0), [evaluation(score)], inputs["model"])
    return registry, run


def _listed(registry: Path) -> dict[int, dict[str, Any]]:
    """`models list --json` in a fresh process: what any later command reads."""
    proc = cli(["models", "list", str(registry), "--json"], cli_env(None), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {v["version"]: v for v in json.loads(proc.stdout)}


def test_two_registers_of_one_run_at_once_make_one_version(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Old code: two `models register` of one run at once both found no version for the run and both created one
    (versions 2 and 3, the same model). Now a register holds the run folder's lock (`dataio.folder_lock`): the
    second is refused naming the first, and registering again afterwards finds the one version."""
    _, run = _registry_and_run(inputs, tmp_path, 75.0)
    registry = tmp_path / "registry"
    flag = tmp_path / "first"
    first = _registry_command(["models", "register", str(registry), str(run)], tmp_path, "create_model_version",
                              "pause", flag)
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{flag}.paused").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-4000:]
            time.sleep(0.1)
        second = cli(["models", "register", str(registry), str(run)], cli_env(None), timeout=300)
        one_line(second, f"{run}: in use by 'simcse-curriculum models register", f"pid {first.pid} on host",
                 "wait for it to finish")
    finally:
        Path(f"{flag}.go").touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-4000:]
    assert "enc: version 2 (from version 1): promoted: now current" in out
    again = cli(["models", "register", str(registry), str(run), "--json"], cli_env(None), timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == 2, again.stderr[-4000:]
    assert sorted(_listed(registry)) == [1, 2]
    assert not (run / ".simcse-curriculum.lock").exists()


def test_a_promote_killed_mid_way_reads_as_what_happened_and_a_rerun_finishes_it(inputs: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """Old code: `models promote` moved the alias, then tagged the version promoted and wrote its reason; a SIGKILL
    between the two left the current version marked 'not promoted' with the gate's old reason, for every later
    read. Now what the promotion means is recorded before the alias moves and read with it: killed before the
    switch, nothing changed; killed after it, every read shows the version current and promoted, with the reason;
    the next command that moves the alias writes the marks."""
    from flows.registry.promotion import GateSettings
    from flows.registry.registration import register_run
    from flows.registry.versions import PROMOTING

    registry, run = _registry_and_run(inputs, tmp_path, 60.0)
    assert register_run(registry, run, GateSettings()).promoted == "false"
    folder = tmp_path / "registry"
    gate_reason = registry.version(2).reason
    for when in ("kill-before", "kill-after"):
        killed = _registry_command(["models", "promote", str(folder), "2"], tmp_path, "set_registered_model_alias",
                                   when)
        killed.communicate(timeout=300)
        assert killed.returncode == -signal.SIGKILL
        listed = _listed(folder)
        if when == "kill-before":
            assert (listed[2]["current"], listed[2]["promoted"], listed[2]["reason"]) == (False, False, gate_reason)
            assert listed[1]["current"]
    assert (listed[2]["current"], listed[2]["promoted"], listed[2]["reason"]) == (
        True, True, "promoted by hand (current was version 1)")
    assert not listed[1]["current"]
    rerun = cli(["models", "promote", str(folder), "2"], cli_env(None), timeout=300)
    assert rerun.returncode == 0 and "current is version 2 (was 2)" in rerun.stdout, rerun.stderr[-4000:]
    tags = registry.client.get_model_version("enc", "2").tags
    assert tags["simcse.promoted"] == "true" and PROMOTING not in tags
    assert tags["simcse.reason"] == "promoted by hand (current was version 1)"

    # A rollback killed the same way reads as done, and its marks are written by the next command that moves it.
    killed = _registry_command(["models", "rollback", str(folder)], tmp_path, "set_registered_model_alias",
                               "kill-after")
    killed.communicate(timeout=300)
    listed = _listed(folder)
    assert (listed[1]["current"], listed[1]["promoted"], listed[1]["reason"]) == (
        True, True, "rolled back from version 2 (current was version 2)")
    assert cli(["models", "promote", str(folder), "1"], cli_env(None), timeout=300).returncode == 0
    assert "simcse.rolled_back" in registry.client.get_model_version("enc", "2").tags
    assert PROMOTING not in registry.client.get_model_version("enc", "1").tags
