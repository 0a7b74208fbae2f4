"""flows without Prefect or training: config validation, the demo corpus, the run directory, the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from dataio.errors import InputError
from flows.run.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
output_dir: out
rounds: 2
data:
  corpus: corpus.txt
eval:
  sts: [dev.tsv]
curriculum:
  pacing: root
"""


def test_paths_resolve_relative_to_the_yaml_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.output_dir == tmp_path / "out"
    assert cfg.data.corpus is not None and cfg.data.corpus.path == tmp_path / "corpus.txt"
    assert cfg.eval.sts[0].path == tmp_path / "dev.tsv"
    assert cfg.rounds == 2 and cfg.curriculum.pacing == "root"


def test_data_dir_placeholder_uses_the_shared_data_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMCSE_DATA_DIR", str(tmp_path / "shared"))
    cfg = load_config(_write(tmp_path, GOOD.replace("corpus.txt", '"{data_dir}/wiki/sentences.txt"')))
    assert cfg.data.corpus is not None and cfg.data.corpus.path == tmp_path / "shared" / "wiki" / "sentences.txt"


@pytest.mark.parametrize("edit, key, line", [
    (("pacing: root", "pacing: sqroot"),
     "curriculum.pacing: unknown 'sqroot' (did you mean 'root'?); expected one of linear, root", 8),
    (("rounds: 2", "rounds: 0"), "rounds: input should be greater than or equal to 1", 2),
    (("rounds: 2", "rounds: 2\nbogus: 1"), "bogus: unknown key; expected one of output_dir", 3),
    (("  sts: [dev.tsv]", "  sts: [dev.tsv]\n  dev_metric: spearman"),
     "eval.dev_metric: expected 'sts/<file stem>'", 7),
    (("  corpus: corpus.txt", "  corpus: {path: corpus.txt, colums: {}}"), "data.corpus.colums: unknown key", 4),
    # mining.params and training are the packages' own models, validated with the rest: the key a cross-field
    # check blames is the one named, whatever the order in the file, and its line is that key's.
    (("  pacing: root", "  pacing: root\nmining:\n  params:\n    range_max: 3\n    range_min: 9"),
     "mining.params.range_min: must be smaller than range_max=3", 12),
    (("  pacing: root", "  pacing: root\nmining:\n  params:\n    range_max: 3\n    num_negatives: 4"),
     "mining.params.num_negatives: exceeds the 3 ranks", 12),
    (("  pacing: root", "  pacing: root\nmining:\n  params: {backend: gpu}"),
     "mining.params.backend: unknown 'gpu'; expected one of auto, torch", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  params:\n    rangemax: 3"),
     "mining.params.rangemax: unknown key (did you mean 'range_max'?); expected one of num_negatives, range_min",
     11),
    (("  pacing: root", "  pacing: root\nmining:\n  cluster: tcp://10.0.0.5:8786"),
     "mining.cluster: needs mining.shards 2 or more", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  shards: 0"), "mining.shards: input should be greater than", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  encode_runtime: onnx"),
     "mining.encode_runtime: unknown 'onnx'; expected one of torch, openvino", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  shards: 2\n  workers: 2"),
     "mining.workers: unknown key; expected one of bands, params, exclude_pairs, shards, engine, cluster, "
     "encode_runtime", 11),
    (("  pacing: root", "  pacing: root\nmining:\n  engine: ray"),
     "mining.engine: ray needs mining.shards 2 or more", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  engine: spark\n  shards: 2"),
     "mining.engine: unknown 'spark'; expected one of dask, ray", 10),
    (("  pacing: root", "  pacing: root\nmining:\n  shards: 2\n  cluster: ray://10.0.0.5:10001"),
     "mining.cluster: 'ray://10.0.0.5:10001' is a Ray address, but mining.engine is dask: set mining.engine to "
     "ray", 11),
    (("  pacing: root", "  pacing: root\ntraining:\n  learning_rate: 1.0e-5"),
     "training.learning_rate: unknown key; expected one of lr, warmup_ratio", 10),
    (("  pacing: root", "  pacing: root\ntraining:\n  lr: 0"), "training.lr: input should be greater than 0", 10),
    (("  pacing: root", "  pacing: root\ntraining:\n  progress: false\n  max_steps: 10"),
     "training.max_steps: set by the run; use the top-level 'steps_per_round' instead", 11),
])
def test_errors_name_the_key_and_its_line(tmp_path: Path, edit: tuple[str, str], key: str, line: int) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(InputError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line {line}: "), message
    assert key in message
    assert "\n" not in message


def test_mining_and_training_sections_are_the_packages_models_and_dump_as_written(tmp_path: Path) -> None:
    """The run config embeds mining's MiningParams and simcse's TrainConfig; it saves, fingerprints and caches
    them as the YAML gave them (defaults left out), as when the sections were plain mappings."""
    from flows.rounds.train_step import train_config
    from flows.run.config import config_from_mapping
    from mining.params import MiningParams
    from simcse.train_config import TrainConfig

    cfg = load_config(_write(tmp_path, GOOD + "mining:\n  params: {range_max: 20}\ntraining: {lr: 1.0e-4, seed: 7}\n"))
    assert isinstance(cfg.mining.params, MiningParams) and isinstance(cfg.training, TrainConfig)
    assert cfg.mining.params == MiningParams(range_max=20) and cfg.training.lr == 1e-4
    dumped = cfg.model_dump(mode="json")
    assert dumped["mining"]["params"] == {"range_max": 20} and dumped["training"] == {"lr": 1e-4, "seed": 7}
    again = config_from_mapping(yaml.safe_load(cfg.to_yaml()), base_dir=tmp_path)
    assert again.fingerprint() == cfg.fingerprint() and again.training == cfg.training
    # What the YAML set wins; the run decides the rest (not TrainConfig's own defaults).
    round_1 = train_config(cfg, 1)
    assert (round_1.lr, round_1.seed, round_1.eval_every, round_1.max_steps) == (1e-4, 7, 0, cfg.steps_per_round)
    assert train_config(load_config(_write(tmp_path, GOOD, "plain.yaml")), 1).seed == 1


def test_mining_shards_and_cluster_change_neither_results_nor_keys_and_may_change_on_resume(tmp_path: Path) -> None:
    """`mining.shards`, `cluster` and `engine` say how mining is spread (the triplets are those of one process): they
    stay out of the fingerprint, the settings key and the mine task's cache key, and a resumed run may change them.
    `mining.encode_runtime` is a setting like any other. Left at their defaults, none of the three is written, so a
    run recorded before they existed resumes with its fingerprint."""
    from flows.orchestration.tasks import _mine_key
    from flows.run.new_data import settings_key
    from flows.run.rundir import RunDir
    from flows.run.step_records import RunInputs

    plain = load_config(_write(tmp_path, GOOD))
    spread = load_config(_write(tmp_path, GOOD + "mining:\n  shards: 4\n  cluster: tcp://10.0.0.5:8786\n", "s.yaml"))
    on_ray = load_config(_write(tmp_path, GOOD + "mining:\n  shards: 2\n  engine: ray\n", "r.yaml"))
    openvino = load_config(_write(tmp_path, GOOD + "mining: {encode_runtime: openvino}\n", "o.yaml"))
    assert (spread.mining.shards, spread.mining.cluster, openvino.mining.encode_runtime) == \
        (4, "tcp://10.0.0.5:8786", "openvino")
    assert set(plain.model_dump(mode="json")["mining"]) == {"bands", "params", "exclude_pairs"}
    assert spread.model_dump(mode="json")["mining"]["shards"] == 4  # recorded in config.yaml when set
    assert spread.fingerprint() == plain.fingerprint() == on_ray.fingerprint() != openvino.fingerprint()
    assert on_ray.model_dump(mode="json")["mining"]["engine"] == "ray"  # recorded when set, like shards
    assert settings_key(spread) == settings_key(plain) != settings_key(openvino)
    inputs = RunInputs(fingerprint="f", eval_fingerprint="e")
    keys = [_mine_key(None, {"config": c, "model_path": "a-model", "inputs": inputs, "round_": 0, "run_root": "run"})
            for c in (plain, spread, openvino)]
    assert keys[0] == keys[1] != keys[2]

    run = RunDir(plain.output_dir)
    run.claim(plain)
    saved = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    assert "shards" not in saved["mining"] and "encode_runtime" not in saved["mining"]
    run.claim(spread)  # resumed on a cluster
    run.claim(plain)  # and back on one machine
    with pytest.raises(InputError, match=r"different settings \(mining.encode_runtime\)"):
        run.claim(openvino)


def test_validate_says_at_once_when_the_openvino_encode_runtime_is_not_installed(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    import importlib.util

    from flows.rounds.validate import check_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    config = load_config(_write(tmp_path, GOOD + "mining: {encode_runtime: openvino}\n"))
    with pytest.raises(InputError, match=r"mining.encode_runtime: openvino needs the openvino package; pip install"):
        check_run(config)


def test_validate_says_at_once_when_the_ray_engine_is_not_installed(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from flows.rounds.validate import check_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    config = load_config(_write(tmp_path, GOOD + "mining: {shards: 2, engine: ray}\n"))
    with pytest.raises(InputError, match=r"mining.engine: ray needs the ray package; pip install"):
        check_run(config)


def test_a_teacher_is_a_folder_relative_to_the_yaml_and_validate_names_it(tmp_path: Path) -> None:
    from flows.rounds.validate import check_run

    config = load_config(_write(tmp_path, GOOD + "teacher: {path: models/teacher}\n"))
    assert config.teacher is not None and config.teacher.path == str(tmp_path / "models" / "teacher")
    assert "teacher" in config.computed_settings(), "the teacher decides results: part of the fingerprint"
    with pytest.raises(InputError, match=r"line 9: teacher.path: not found: .*models/teacher; relative paths are "
                                         r"read from .*, the folder of run.yaml; to install all-mpnet-base-v2 "
                                         r"there: pip install 'simcse-curriculum\[teacher\]', then "
                                         r"simcse-curriculum teacher install --out .*models/teacher .*; or run "
                                         r"without a teacher"):
        check_run(config)


def test_distillation_without_a_teacher_is_refused_naming_the_keys(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"training.distill_kl / distill_margin_mse distil from the run's teacher"):
        load_config(_write(tmp_path, GOOD + "training: {distill_kl: 1.0}\n"))


def test_a_teacher_judge_of_mined_positives_without_a_teacher_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"positive_judge: both judges mined positives with the run's teacher"):
        load_config(_write(tmp_path, GOOD + "mining: {params: {mined_positives: true, positive_judge: both}}\n"))
    load_config(_write(tmp_path, GOOD + "mining: {params: {mined_positives: true, positive_judge: student}}\n",
                       "student.yaml"))


def test_settings_added_for_the_judge_leave_older_configs_fingerprints_alone(tmp_path: Path) -> None:
    """A config without a teacher or mined positives dumps as it did before they existed (saved configs of running
    nights and their fingerprints stay equal)."""
    config = load_config(_write(tmp_path, GOOD))
    dumped = yaml.safe_load(config.to_yaml())
    assert "teacher" not in dumped and "teacher" not in config.computed_settings()
    assert not {"mined_positives", "positive_min_score", "positive_judge"} & set(dumped["mining"]["params"])
    on = load_config(_write(tmp_path, GOOD + "mining: {params: {mined_positives: true}}\n", "on.yaml"))
    assert on.computed_settings()["mining"]["params"]["mined_positives"] is True
    assert on.fingerprint() != config.fingerprint()


def test_missing_data_and_bad_yaml_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="give a corpus"):
        load_config(_write(tmp_path, "output_dir: out\ndata: {}\n"))
    with pytest.raises(InputError, match="adaptive decides on a dev metric"):
        load_config(_write(tmp_path, "output_dir: out\ndata: {corpus: c.txt}\ncurriculum: {mode: adaptive}\n"))
    with pytest.raises(InputError, match=r": line \d+: not valid YAML"):
        load_config(_write(tmp_path, "output_dir: out\ndata: [\n"))
    with pytest.raises(InputError, match="top level"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


# A 1 KB "billion laughs": nine levels of nine aliases each stand for 9^9 (387 million) values.
ALIAS_BOMB = "output_dir: out\ndata: {corpus: corpus.txt}\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + \
    "".join(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, cur in zip("abcdefgh", "bcdefghi"))


@pytest.mark.timeout(30)
def test_a_yaml_alias_bomb_is_refused_at_once_naming_the_file(tmp_path: Path) -> None:
    """Old code: the key-line walk followed every alias, > 120 s and gigabytes (issue 24, item 7)."""
    path = _write(tmp_path, ALIAS_BOMB)
    assert path.stat().st_size < 1024
    with pytest.raises(InputError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: its aliases expand it past the limit of a config (100,000 values"), message
    assert "at the value from line 8" in message and "\n" not in message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, says", [
    # a recursive alias (old code: RecursionError in the key-line walk)
    ("output_dir: out\ndata: &d {corpus: corpus.txt, more: [*d]}\n", "anchor at line 2 is inside the value it names"),
    # 10 million characters from a 1 KB string repeated by aliases, with few values (old code: loaded)
    ("output_dir: out\ndata: {corpus: corpus.txt}\ns: &s " + "x" * 1001 + "\nt: &t [" + ", ".join(["*s"] * 100)
     + "]\nu: [" + ", ".join(["*t"] * 100) + "]\n", "its aliases expand it past the limit"),
    # a file over 1 MB is not read (old code: parsed it all, then an unknown-key error)
    (GOOD + "# " + "x" * 1_000_000 + "\n", "bytes, over the 1,000,000-byte limit of a config file"),
])
def test_config_files_are_parsed_within_stated_bounds(tmp_path: Path, text: str, says: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value) and "\n" not in str(err.value)


def test_a_long_config_without_aliases_is_told_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.run.config_yaml

    monkeypatch.setattr(flows.run.config_yaml, "MAX_EXPANDED_VALUES", 50)  # the bound, scaled down: no 100,000 items
    path = _write(tmp_path, GOOD + "eval_list: [" + ", ".join(["1"] * 60) + "]\n")
    with pytest.raises(InputError, match=r"it holds more than a config may \(50 values or .*line 9; a run's "
                                         r"settings are a few dozen lines"):
        load_config(path)


@pytest.mark.timeout(30)
def test_the_key_line_walk_visits_each_node_once() -> None:
    """16 levels of two aliases: 2^16 paths, 33 nodes (old code: every path listed)."""
    from flows.run.config_yaml import key_lines, line_for

    text = "a: &a {x: 1}\n" + "".join(f"{cur}: &{cur} {{l: *{prev}, r: *{prev}}}\n"
                                      for prev, cur in zip(LEVELS, LEVELS[1:]))
    lines = key_lines(yaml.compose(text))
    assert len(lines) < 100
    assert line_for(lines, "a.x") == 1
    assert line_for(lines, "a2.r.l.x") == 3, "below a later use of an anchor: the line of that use"


LEVELS = ["a"] + [f"a{i}" for i in range(1, 17)]  # a, a1, ..., a16


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_and_run_refuse_the_alias_bomb_in_one_line(tmp_path: Path, command: str) -> None:
    """As a user runs them, in a process held to 2 GB of address space (old code: > 120 s, then out of memory)."""
    import resource
    import subprocess
    import sys

    path = _write(tmp_path, ALIAS_BOMB)

    def two_gigabytes() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run([sys.executable, "-m", "flows.cli", command, str(path)], cwd=str(REPO), capture_output=True,
                          text=True, timeout=100, check=False, preexec_fn=two_gigabytes,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {path}: its aliases expand it"), \
        proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli.app import main

    path = _write(tmp_path, GOOD.replace("pacing: root", "pacing: sqroot"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "curriculum.pacing" in err and "line 8" in err
    assert not (tmp_path / "out").exists(), "nothing is written for a bad config"


def test_shipped_configs_validate_and_demo_yaml_matches_the_packaged_demo() -> None:
    from flows.cli.demo import demo_config

    for name in ("demo", "domain_unlabeled", "domain_no_teacher", "nli_supervised", "nli_curriculum"):
        load_config(REPO / "configs" / f"{name}.yaml")
    packaged = demo_config("/tmp/anywhere").model_dump(mode="json", exclude={"output_dir"})
    shipped = load_config(REPO / "configs" / "demo.yaml").model_dump(mode="json", exclude={"output_dir"})
    assert packaged == shipped


def test_demo_corpus_is_deterministic_and_holds_out_its_eval_sentences(tmp_path: Path) -> None:
    from dataio.eval_sets import read_labeled_pairs
    from flows.run.demo_data import build_demo_data

    a = build_demo_data(tmp_path / "a", max_sentences=300, eval_docstrings=40)
    b = build_demo_data(tmp_path / "b", max_sentences=300, eval_docstrings=40)
    for x, y in ((a.corpus, b.corpus), (a.pairs, b.pairs), (a.eval_pairs, b.eval_pairs)):
        assert x.read_bytes() == y.read_bytes()
    rows = [json.loads(line) for line in a.corpus.read_text().splitlines()]
    assert len(rows) == a.sentences == 300
    assert len({r["text"] for r in rows}) == len(rows), "exact duplicates collapsed"
    assert len({r["domain"] for r in rows}) > 5
    pairs = [json.loads(line) for line in a.pairs.read_text().splitlines()]
    texts = {r["text"] for r in rows}
    assert pairs and all(p["anchor"] in texts and p["positive"] in texts for p in pairs)
    labeled = read_labeled_pairs(a.eval_pairs)
    assert sum(labeled.labels) == 40 and len(labeled.labels) > 60
    assert not (set(labeled.sentence1) | set(labeled.sentence2)) & texts, "eval sentences never in the corpus"


def test_run_dir_refuses_a_different_config_and_says_why_for_more_rounds(tmp_path: Path) -> None:
    """`rounds` sets the length of the learning-rate and curriculum schedules, so more rounds is a new run."""
    from flows.run.rundir import RunDir

    cfg = load_config(_write(tmp_path, GOOD))
    run = RunDir(cfg.output_dir)
    run.claim(cfg)
    run.claim(load_config(_write(tmp_path, GOOD, "same.yaml")))
    with pytest.raises(InputError, match=r"different settings \(curriculum.pacing\)"):
        run.claim(load_config(_write(tmp_path, GOOD.replace("pacing: root", "pacing: linear"), "other.yaml")))
    with pytest.raises(InputError, match=r"rounds\).*start a new run whose model.name_or_path is this run's last"):
        run.claim(load_config(_write(tmp_path, GOOD.replace("rounds: 2", "rounds: 5"), "more.yaml")))


def test_atomic_dir_never_shows_a_partial_folder(tmp_path: Path) -> None:
    """How a round's model folder is written (SimCSEEncoder.save): all of it or none of it."""
    from dataio.atomic import atomic_dir

    target = tmp_path / "model"
    with pytest.raises(OSError), atomic_dir(target) as folder:
        (folder / "half.bin").write_bytes(b"x")
        raise OSError("disk full")
    assert not target.exists() and not list(tmp_path.iterdir())
    with atomic_dir(target) as folder:
        (folder / "a.txt").write_text("1")
    with atomic_dir(target) as folder:
        (folder / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_only_transient_faults_are_retried() -> None:
    from flows.orchestration.tasks import is_transient

    assert is_transient(OSError("stale NFS handle")) and is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    for exc in (InputError("bad column"), ValueError("x"), FileNotFoundError("gone"), PermissionError("no"),
                RuntimeError("bug"), None):
        assert not is_transient(exc)


def _fake_run(tmp_path: Path) -> Path:
    """A run folder with two complete rounds, written through the same contracts the flow uses."""
    import pyarrow as pa  # noqa: F401 - the synthetic writer needs it

    from curriculum import CurriculumScheduler, parse_config
    from curriculum.synthetic import band_table, write_round
    from flows.run.rundir import RunDir, write_json

    cfg = load_config(_write(tmp_path, GOOD))
    run = RunDir(cfg.output_dir)
    run.claim(cfg)
    scheduler = CurriculumScheduler(parse_config({"total": 2}), state_path=run.state_path)
    evaluation = {"sts": {"dev": 70.0}, "pairs": {"eval_pairs": 55.0}, "alignment": 0.3, "uniformity": -2.0}
    write_json(run.base_metrics_path, {"round": "base", "evaluation": evaluation})
    for r in range(2):
        texts = [f"sentence {i} of round {r}" for i in range(40)]
        tables = {"random": band_table(texts[:20], [None] * 20, texts[20:], [0.1] * 20),
                  "nearest_neighbour": band_table(texts[20:], texts[:20], texts[:20], [0.6] * 20)}
        manifest = json.loads(write_round(run.triplets, r, tables).read_text())
        plan = scheduler.start_round(r, {b: s["mean_anchor_negative_sim"] for b, s in manifest["bands"].items()})
        decision = scheduler.end_round(70.0 + r, 0.9)
        (run.model_dir(r)).mkdir(parents=True)
        write_json(run.metrics_path(r), {
            "round": r, "evaluation": {**evaluation, "sts": {"dev": 71.0 + r}},
            "dev_metric": {"name": "sts/dev", "value": 71.0 + r},
            "train": {"steps": 5, "mean_train_accuracy": 0.9}, "mining": {"bands": manifest["bands"]},
            "curriculum": {"stage": plan.stage, "competence": plan.competence, "mixture": plan.mixture,
                           "alpha": plan.alpha, "decision": decision.reason}})
    return run.root


def test_report_has_metrics_bands_links_and_plots(tmp_path: Path) -> None:
    from flows.rounds.report import build_report

    root = _fake_run(tmp_path)
    report = build_report(root).read_text()
    for png in ("metrics.png", "schedule.png", "similarity_round0.png", "similarity_round1.png"):
        path = root / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"(plots/{png})" in report
    assert "| base | 70.00 | 55.00 |" in report and "| 1 | 72.00 | 55.00 |" in report
    assert "| nearest_neighbour | 20 | 0.6000 |" in report
    assert "[triplets/round=1/band=random/part-0.parquet](triplets/round=1/band=random/part-0.parquet)" in report
    assert "Rounds completed: 2 of 2" in report
    config_block = report.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block)["rounds"] == 2
