"""What one round reads, counted (issue: one typed pass per round): through the flows' round loop on a tiny model,
the model is loaded once for the whole run (the start model; every round's model stays in memory from its
training through its evaluation to the next round's mining and training), each round's batches are drawn once,
and each mined Parquet file is opened and its checksum verified once, by the sampler. A round's model folder
that changed on disk is loaded again."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def counted_run(tmp_path_factory: pytest.TempPathFactory, tiny: str) -> dict:
    import curriculum.sampler
    import flows.rounds.records
    import flows.rounds.train_step
    import flows.run.inputs
    from flows.rounds.loop import plain_steps, run_rounds
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import torch_threads

    root = tmp_path_factory.mktemp("counted")
    pairs = "".join(f"topic {i % 5} item {i}\ttopic {i % 5} thing {i}\t{(i * 7) % 6}\n" for i in range(12))
    (root / "sts_dev.tsv").write_text("sentence1\tsentence2\tscore\n" + pairs, encoding="utf-8")
    config = config_from_mapping({
        "output_dir": str(root / "run"), "seed": 3, "rounds": 3, "steps_per_round": 2, "batch_size": 8,
        "model": {"name_or_path": tiny, "pooling": "mean", "max_length": 24},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 150},
        "eval": {"sts": [str(root / "sts_dev.tsv")]}, "training": {"progress": False},
        "mining": {"bands": ["random", "nearest_neighbour"], "params": {"range_max": 10}}})
    counts: collections.Counter = collections.Counter()
    mp = pytest.MonkeyPatch()

    def counting(owner, name, label, key):
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            counts[(label, key(*args, **kwargs))] += 1
            return real(*args, **kwargs)

        mp.setattr(owner, name, wrapper)

    rel = lambda path: Path(path).resolve().relative_to(root.resolve()).as_posix()  # noqa: E731
    counting(flows.run.inputs, "open_encoder", "load", lambda path, **_: str(Path(path).resolve()))
    counting(curriculum.sampler.pq, "ParquetFile", "open", lambda path, *a, **k: rel(path))
    counting(curriculum.sampler, "sha256_matches", "verify", lambda path, *a, **k: rel(path))
    counting(flows.rounds.train_step, "round_batches", "draw", lambda config_, run_, r, *a: r)
    counting(flows.rounds.records, "round_batches", "draw", lambda config_, run_, r, *a: r)
    try:
        with torch_threads(1):
            run = RunDir(root / "run")
            run_rounds(config, run, plain_steps(config, run))
    finally:
        mp.undo()
    return {"counts": counts, "run": run, "config": config, "root": root, "start": str(Path(tiny).resolve())}


def test_the_model_is_loaded_once_for_the_whole_run(counted_run):
    loads = {key: n for (label, key), n in counted_run["counts"].items() if label == "load"}
    assert loads == {counted_run["start"]: 1}, loads


def test_each_rounds_batches_are_drawn_once(counted_run):
    draws = {key: n for (label, key), n in counted_run["counts"].items() if label == "draw"}
    assert draws == {0: 1, 1: 1, 2: 1}, draws


def test_each_mined_file_is_opened_and_verified_once(counted_run):
    counts, run = counted_run["counts"], counted_run["run"]
    files = sorted(p.relative_to(counted_run["root"]).as_posix() for p in run.triplets.rglob("part-*.parquet"))
    assert len(files) >= 3, files  # at least one file a round
    for label in ("open", "verify"):
        seen = {key: n for (what, key), n in counts.items() if what == label}
        assert seen == dict.fromkeys(files, 1), (label, seen)


def test_a_model_folder_changed_on_disk_is_loaded_again(counted_run, monkeypatch):
    import flows.run.inputs as inputs

    run, config = counted_run["run"], counted_run["config"]
    calls: list[str] = []
    real = inputs.open_encoder
    monkeypatch.setattr(inputs, "open_encoder", lambda path, **kw: calls.append(path) or real(path, **kw))
    folder = str(run.model_dir(2))
    first = inputs.load_encoder(folder, config)
    assert inputs.load_encoder(folder, config) is first and len(calls) == 1, "held: not read again"
    (run.model_dir(2) / "README.md").write_text("a new card\n", encoding="utf-8")
    assert inputs.load_encoder(folder, config) is first, "the model card is not the model"
    weights = next(p for p in run.model_dir(2).rglob("*.safetensors"))
    weights.touch()  # a changed file (new mtime): what is held may no longer be what is on disk
    assert inputs.load_encoder(folder, config) is not first and len(calls) == 2
    trained = inputs.take_encoder(folder, config)
    assert inputs.load_encoder(folder, config) is not trained and len(calls) == 3, "taken for training: let go"
    inputs.release_encoder()
