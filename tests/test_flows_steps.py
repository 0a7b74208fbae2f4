"""Plain step functions of the flows (flows.run.inputs, mine_step, schedule_step, train_step, rounds), without
Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.rounds import mine_step, schedule_step, train_step
from flows.rounds import records as rounds
from flows.run import inputs as run_inputs
from flows.run.step_records import Evaluation, PlanSpec, RoundPlan, RunInputs


def test_load_mining_corpus_honours_unsupervised_anchors(tmp_path: Path) -> None:
    """General-style runs anchor on the NLI rows only; the corpus sentences are then candidates, not anchors."""
    (tmp_path / "corpus.txt").write_text("a wiki sentence\nanother wiki sentence\na third one\n", encoding="utf-8")
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\na man sleeps,a person rests,a man runs\n",
                                      encoding="utf-8")
    inputs = RunInputs(corpus=[{"path": str(tmp_path / "corpus.txt"), "columns": {}}],
                       nli=[{"path": str(tmp_path / "nli.csv"), "columns": {}}], fingerprint="", eval_fingerprint="")
    with_corpus = run_inputs.load_mining_corpus(inputs)
    nli_only = run_inputs.load_mining_corpus(inputs, {"unsupervised_anchors": False, "range_max": 5})
    assert with_corpus.n_anchor_rows == 4
    assert nli_only.n_anchor_rows == 1
    assert len(nli_only) == len(with_corpus) == 6  # the pool is the same either way


class _Stop(Exception):
    pass


def test_in_batch_runs_train_on_anchors_and_positives_only(tmp_path: Path, monkeypatch) -> None:
    """`negatives: in_batch` (plain SimCSE) reaches the trainer without the sampled hard negatives."""
    import simcse.train
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    batch = {"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"], "alpha": [1.0, 1.0]}
    monkeypatch.setattr(train_step, "round_batches", lambda *a, **k: ([dict(batch)], None))
    monkeypatch.setattr(run_inputs, "load_encoder", lambda *a, **k: object())
    seen: dict[str, list] = {}

    def fake_train(encoder, batches, config, output_dir, **kwargs):
        seen["batches"] = list(batches)
        raise _Stop

    monkeypatch.setattr(simcse.train, "train", fake_train)
    for negatives, keys in (("hard", set(batch)), ("in_batch", {"anchor", "positive"})):
        config = config_from_mapping({"output_dir": str(tmp_path / negatives), "negatives": negatives,
                                      "data": {"corpus": str(tmp_path / "c.txt")}}, base_dir=tmp_path)
        try:
            plan = RoundPlan(plan=PlanSpec(stage=0, competence=1.0, mixture={}, alpha={}), state={},
                             manifest_sha256="")
            train_step.train_round("m", plan, config, RunDir(config.output_dir), 0)
        except _Stop:
            pass
        assert set(seen["batches"][0]) == keys, negatives


def test_round_zero_of_an_adaptive_run_is_compared_with_the_starting_model(tmp_path: Path) -> None:
    """The base model's dev score reaches the scheduler, so a round 0 that makes the model worse holds."""
    import json

    from curriculum.synthetic import band_table, write_round
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir

    config = config_from_mapping({"output_dir": str(tmp_path / "run"), "rounds": 3,
                                  "data": {"corpus": str(tmp_path / "c.txt")}, "eval": {"pairs": ["p.tsv"]},
                                  "curriculum": {"mode": "adaptive", "adaptive": {"tolerance": 0.2}}},
                                 base_dir=tmp_path)
    run = RunDir(config.output_dir)
    texts = [f"sentence {i}" for i in range(12)]
    write_round(run.triplets, 0, {"random": band_table(texts[:6], texts[6:], texts[::-1][:6],
                                                       [0.1] * 6)})
    rounds.write_base_metrics(run, Evaluation(model="m", evaluation={},
                                              dev_metric={"name": "pairs/p", "value": 77.62}))
    opened = schedule_step.schedule_round(config, run, 0)
    assert opened.state["baseline_dev_metric"] == 77.62
    state = json.loads(run.state_path.read_text())
    assert state["baseline_dev_metric"] == 77.62 and config.curriculum.total == 2  # auto: rounds - 1


def test_word_deletion_view_changes_only_unsupervised_positives_and_is_reproducible() -> None:
    from simcse.views import word_deletion

    batch = {"anchor": ["a b c d e f g h", "x y z"], "positive": ["a b c d e f g h", "paired text"],
             "negative": ["n1", "n2"]}
    out = train_step.with_word_deletion(batch, 0.4, "0/1/7")
    assert out["positive"][1] == "paired text" and out["negative"] == batch["negative"]
    view = out["positive"][0].split()
    assert 1 <= len(view) < 8 and all(w in batch["anchor"][0].split() for w in view)
    assert train_step.with_word_deletion(batch, 0.4, "0/1/7") == out  # the same salt, the same view
    assert word_deletion("one", 0.99, "s") == "one" and word_deletion("a b", 0.0, "s") == "a b"


def test_mining_exclude_pairs_reaches_every_round_and_its_content_is_fingerprinted(tmp_path: Path, monkeypatch) -> None:
    """`mining.exclude_pairs` (relative to the YAML) is read before anything runs, its content changes the mine
    step's fingerprint, and the round mined from it never holds an excluded pair."""
    import hashlib

    from dataio.errors import InputError
    from dataio.triplets import read_triplets
    from flows.run.config import load_config
    from flows.run.rundir import RunDir
    from mining.testing import HashEncoder

    words = ["cat", "dog", "bird", "fish", "sat", "ran", "red", "blue", "big", "small", "the", "on"]
    sentences = list(dict.fromkeys(" ".join(words[(i * k) % len(words)] for k in (1, 3, 5, 7)) + f" {i}"
                                   for i in range(40)))
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    config_text = "output_dir: run\ndata:\n  corpus: corpus.txt\nmining:\n  bands: [random, nearest_neighbour]\n"
    (tmp_path / "plain.yaml").write_text(config_text, encoding="utf-8")
    (tmp_path / "run.yaml").write_text(config_text + "  exclude_pairs: marks/fn.csv\n", encoding="utf-8")
    monkeypatch.setattr(run_inputs, "load_encoder", lambda *a, **k: HashEncoder(16))

    plain = load_config(tmp_path / "plain.yaml")
    first = run_inputs.prepare_inputs(plain, RunDir(tmp_path / "plain"))
    mine_step.mine_round("m", first, plain, RunDir(tmp_path / "plain"), 0)
    mined = read_triplets(RunDir(tmp_path / "plain").triplets)
    marked = list(zip(mined.column("anchor_id").to_pylist(), mined.column("negative_id").to_pylist()))[::2]

    config = load_config(tmp_path / "run.yaml")
    assert config.mining.exclude_pairs == tmp_path / "marks" / "fn.csv"
    with pytest.raises(InputError, match="mining.exclude_pairs: no such file"):
        run_inputs.prepare_inputs(config, RunDir(tmp_path / "run"))
    (tmp_path / "marks").mkdir()
    (tmp_path / "marks" / "fn.csv").write_text("anchor_id,negative_id\nx,\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2, column 'negative_id': empty id"):
        run_inputs.prepare_inputs(config, RunDir(tmp_path / "run"))
    (tmp_path / "marks" / "fn.csv").write_text("anchor_id,negative_id\n" + "".join(f"{a},{n}\n" for a, n in marked),
                                                encoding="utf-8")
    inputs = run_inputs.prepare_inputs(config, RunDir(tmp_path / "run"))
    assert inputs.exclude_pairs == str(tmp_path / "marks" / "fn.csv")
    assert inputs.fingerprint != first.fingerprint
    (tmp_path / "marks" / "fn.csv").write_text("anchor_id,negative_id\n" + "".join(f"{a},{n}\n" for a, n in marked[1:]),
                                                encoding="utf-8")
    changed = run_inputs.prepare_inputs(config, RunDir(tmp_path / "run"))
    assert changed.fingerprint not in (inputs.fingerprint, first.fingerprint)

    mine_step.mine_round("m", changed, config, RunDir(tmp_path / "run"), 0)
    again = read_triplets(RunDir(tmp_path / "run").triplets)
    pairs = set(zip(again.column("anchor_id").to_pylist(), again.column("negative_id").to_pylist()))
    assert not pairs & set(marked[1:])
    manifest = json.loads(RunDir(tmp_path / "run").manifest_path(0).read_text(encoding="utf-8"))
    digest = hashlib.sha256((tmp_path / "marks" / "fn.csv").read_bytes()).hexdigest()
    assert manifest["params"]["exclude_pairs_sha256"] == digest


class _Rounds:
    """Just what `select_model` reads of a run folder: the base and each complete round's dev metric."""

    def __init__(self, root: Path, base: float, rounds: list[float]) -> None:
        self.root, self.base, self.rounds = root, base, rounds

    def read_base_metrics(self) -> dict:
        return {"model": "base-model", "dev_metric": {"name": "pairs/dev", "value": self.base}}

    def completed_rounds(self) -> list[int]:
        return list(range(len(self.rounds)))

    def read_metrics(self, r: int) -> dict:
        return {"model": f"rounds/{r}/model", "dev_metric": {"name": "pairs/dev", "value": self.rounds[r]}}


@pytest.mark.parametrize(("margin", "scores", "expected"), [
    (0.0, [75.2, 75.0], 0),        # any gain counts without a margin
    (0.3, [75.2, 75.0], "base"),   # +0.1 is within the margin: keep the starting model
    (0.3, [75.2, 75.5], 1),        # +0.4 clears it
    (0.0, [75.1, 74.0], "base"),   # a tie keeps what the team had
])
def test_the_model_to_use_must_beat_the_start_by_the_configured_margin(tmp_path: Path, margin: float,
                                                                       scores: list[float], expected) -> None:
    from flows.run.config import config_from_mapping

    config = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"corpus": str(tmp_path / "c.txt")},
                                  "eval": {"pairs": ["dev.tsv"], "min_improvement": margin}}, base_dir=tmp_path)
    selection = rounds.select_model(_Rounds(tmp_path, 75.1, scores), config)
    assert selection["selected_round"] == expected
    assert selection["improved"] == (expected != "base")
    assert selection["model_to_use"] == ("base-model" if expected == "base" else f"rounds/{expected}/model")
    if expected == "base" and margin:
        assert "by more than 0.3 (eval.min_improvement)" in selection["note"]
    assert json.loads((tmp_path / "selection.json").read_text())["selected_round"] == expected


def test_a_mined_round_with_a_changed_part_is_not_intact(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The flow refreshes Prefect's mine cache when this is False: a cache hit never stands in for changed bytes
    (the old check only asked whether the files exist)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curriculum.synthetic import band_table, write_round
    from flows.run.rundir import RunDir

    run = RunDir(tmp_path / "run")
    texts = [f"sentence {i}" for i in range(12)]
    write_round(run.triplets, 0, {"random": band_table(texts[:6], texts[6:], texts[::-1][:6], [0.1] * 6)})
    assert mine_step.mined_round_intact(run, 0)
    part = next(run.triplets.glob("round=0/band=random/*.parquet"))
    table = pq.read_table(part, partitioning=None)
    i = table.schema.get_field_index("negative")
    pq.write_table(table.set_column(i, "negative", pa.array(["swapped"] * 6, pa.string())), part)
    with caplog.at_level("WARNING", logger="flows"):
        assert not mine_step.mined_round_intact(run, 0)
    assert "changed after mining" in caplog.text


def test_evaluate_model_takes_its_dev_metric_from_the_evaluator(tmp_path: Path, monkeypatch) -> None:
    """The dev metric is the evaluator's primary metric: `eval.dev_metric`, else the first file's (not a mean of
    the STS files); one that names no file stops before the model is loaded."""
    import math

    import numpy as np

    from dataio.errors import InputError
    from flows.run.config import config_from_mapping

    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0], "d": [-1.0, 1.0]}

    class Table:
        def encode(self, texts, batch_size=32, show_progress_bar=False):
            return np.array([vectors[t] for t in texts], dtype=np.float32)

    (tmp_path / "up.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1\na\tc\t4\n", encoding="utf-8")
    (tmp_path / "down.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t4\na\tc\t1\n", encoding="utf-8")
    (tmp_path / "p.tsv").write_text("sentence1\tsentence2\tlabel\na\tc\t1\na\td\t0\n", encoding="utf-8")
    monkeypatch.setattr(run_inputs, "load_encoder", lambda *a, **k: Table())

    def evaluated(dev_metric: str | None) -> Evaluation:
        config = config_from_mapping({"output_dir": str(tmp_path / "run"), "data": {"corpus": str(tmp_path / "c")},
                                      "eval": {"sts": ["up.tsv", "down.tsv"], "pairs": ["p.tsv"],
                                               "dev_metric": dev_metric}}, base_dir=tmp_path)
        inputs = RunInputs(sts=[str(e.path) for e in config.eval.sts], eval_pairs=[str(tmp_path / "p.tsv")],
                           fingerprint="", eval_fingerprint="")
        return run_inputs.evaluate_model("model", inputs, config)

    first = evaluated(None)
    assert first.evaluation["sts"] == pytest.approx({"up": 100.0, "down": -100.0})
    for choice, name, value in ((None, "sts/up", 100.0), ("sts/down", "sts/down", -100.0),
                                ("pairs/p", "pairs/p", 100.0)):
        dev = (first if choice is None else evaluated(choice)).dev_metric
        assert dev["name"] == name and dev["value"] == pytest.approx(value), choice
    assert not math.isnan(first.seconds)
    # What each score was measured on (the registry compares a version's recorded scores where these agree): a
    # file's key changes with its bytes, and only its own.
    keys = first.eval_keys
    assert set(keys) == {"sts/up", "sts/down", "pairs/p"} and len(set(keys.values())) == 3
    (tmp_path / "down.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t4\na\tc\t2\n", encoding="utf-8")
    changed = evaluated(None).eval_keys
    assert changed["sts/down"] != keys["sts/down"] and {k: v for k, v in changed.items() if k != "sts/down"} == \
        {k: v for k, v in keys.items() if k != "sts/down"}
    monkeypatch.setattr(run_inputs, "load_encoder", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(InputError, match="'pairs/other' names no evaluation file"):
        evaluated("pairs/other")


# ------------------------------------------------------------------------------------------ sharded mining
def _mining_run(tmp_path: Path, name: str, model: str, **mining) -> tuple:
    """A tiny run config (toy corpus + NLI, every band) and its run folder; `mining` adds mining settings."""
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from mining.testing import write_toy_corpus_and_nli

    if not (tmp_path / "corpus.txt").exists():
        write_toy_corpus_and_nli(tmp_path, n=240, seed=2, nli_rows=30)
    config = config_from_mapping({
        "output_dir": str(tmp_path / name), "seed": 4, "data": {"corpus": "corpus.txt", "nli": "nli.csv"},
        "model": {"name_or_path": model, "pooling": "mean", "max_length": 16},
        "mining": {"params": {"range_max": 12, "num_negatives": 2, "backend": "faiss-flat"}, **mining}},
        base_dir=tmp_path)
    return config, RunDir(config.output_dir)


def _triplets(run) -> list[dict]:
    from dataio.triplets import read_triplets

    cols = ["anchor_id", "positive_id", "negative_id", "band", "negative_rank", "anchor_negative_sim"]
    return sorted(read_triplets(run.triplets).select(cols).to_pylist(),
                  key=lambda r: (r["band"], r["anchor_id"], r["negative_id"]))


def test_mining_shards_and_cluster_of_the_run_config_reach_the_dask_map_and_the_workers_encoder(
        tmp_path: Path, monkeypatch) -> None:
    """`mining.shards`/`cluster`/`engine`/`encode_runtime` go the way `mine --shards --cluster --engine
    --encode-runtime` goes (mining.shards.sharded_mining): the shard count and address to the engine's map (Dask's,
    or Ray's), the runtime and the run's model settings to the driver's encoder and to each worker's; the triplets
    are those of one shard."""
    import contextlib

    import mining.index
    import mining.shards
    from mining.testing import HashEncoder

    monkeypatch.setattr(mining.index, "SEARCH_STEP", 32)  # 3 anchor blocks in a small pool
    opened, loads = [], []

    @contextlib.contextmanager
    def in_process(workers, address=None):  # a real LocalCluster: the next test
        opened.append((workers, address))
        yield mining.shards.local_map

    def open_encoder(model_path, **settings):
        loads.append((model_path, settings))
        return HashEncoder(16)

    @contextlib.contextmanager
    def ray_in_process(workers, address=None):  # a real local Ray: tests/test_mining_shards.py
        opened.append(("ray", workers, address))
        yield mining.shards.local_map

    monkeypatch.setattr(mining.shards, "dask_map", in_process)
    monkeypatch.setattr(mining.shards, "ray_map", ray_in_process)
    monkeypatch.setattr(run_inputs, "open_encoder", open_encoder)
    one, run_one = _mining_run(tmp_path, "one", "m")
    many, run_many = _mining_run(tmp_path, "many", "m", shards=3, cluster="tcp://127.0.0.1:8786",
                                 encode_runtime="openvino")
    for config, run in ((one, run_one), (many, run_many)):
        mine_step.mine_round("m", run_inputs.prepare_inputs(config, run), config, run, 0)
    assert opened == [(3, "tcp://127.0.0.1:8786")]
    settings = {"pooling": "mean", "mlp_only_train": True, "max_length": 16, "trust_remote_code": False}
    assert loads[0] == ("m", {"encode_runtime": "torch", **settings})  # shards 1: the driver only
    assert len(loads) > 2 and all(load == ("m", {"encode_runtime": "openvino", **settings}) for load in loads[1:])
    assert json.loads(run_many.manifest_path(0).read_text())["index"]["shards"] == 3
    a, b = _triplets(run_one), _triplets(run_many)
    assert len(a) > 300 and {r["band"] for r in a} == {"random", "in_domain", "nli_contradiction",
                                                       "nearest_neighbour"}
    assert a == b
    on_ray, run_ray = _mining_run(tmp_path, "ray", "m", shards=2, engine="ray")
    mine_step.mine_round("m", run_inputs.prepare_inputs(on_ray, run_ray), on_ray, run_ray, 0)
    assert opened[1:] == [("ray", 2, None)]
    assert _triplets(run_ray) == a


def test_mining_shards_2_on_a_local_dask_cluster_gives_the_triplets_of_one_process(tmp_path: Path, tiny: str,
                                                                                   monkeypatch) -> None:
    """The run config's `mining.shards: 2` on a real 2-worker LocalCluster: each worker loads the run's model
    (a tiny BERT) itself, by reference (flows.run.inputs.open_encoder), and the round is the one of `shards: 1`."""
    import mining.index
    from simcse.testing import torch_threads

    monkeypatch.setattr(mining.index, "SEARCH_STEP", 64)  # the driver's anchor blocks: 2 shards of the pool
    with torch_threads(1):  # as the single-threaded workers, so the float16 embeddings match bit for bit
        one, run_one = _mining_run(tmp_path, "one", tiny)
        mine_step.mine_round(tiny, run_inputs.prepare_inputs(one, run_one), one, run_one, 0)
        two, run_two = _mining_run(tmp_path, "two", tiny, shards=2)
        mine_step.mine_round(tiny, run_inputs.prepare_inputs(two, run_two), two, run_two, 0)
    assert json.loads(run_two.manifest_path(0).read_text())["index"]["shards"] == 2
    a = _triplets(run_one)
    assert len(a) > 300 and a == _triplets(run_two)
