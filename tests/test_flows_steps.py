"""Plain step functions of the flows, without Prefect."""

from __future__ import annotations

from pathlib import Path

from flows import steps


def test_load_mining_corpus_honours_unsupervised_anchors(tmp_path: Path) -> None:
    """General-style runs anchor on the NLI rows only; the corpus sentences are then candidates, not anchors."""
    (tmp_path / "corpus.txt").write_text("a wiki sentence\nanother wiki sentence\na third one\n", encoding="utf-8")
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\na man sleeps,a person rests,a man runs\n",
                                      encoding="utf-8")
    inputs = {"corpus": [{"path": str(tmp_path / "corpus.txt"), "columns": {}}], "pairs": [],
              "nli": [{"path": str(tmp_path / "nli.csv"), "columns": {}}]}
    with_corpus = steps.load_mining_corpus(inputs)
    nli_only = steps.load_mining_corpus(inputs, {"unsupervised_anchors": False, "range_max": 5})
    assert with_corpus.n_anchor_rows == 4
    assert nli_only.n_anchor_rows == 1
    assert len(nli_only) == len(with_corpus) == 6  # the pool is the same either way


class _Stop(Exception):
    pass


def test_in_batch_runs_train_on_anchors_and_positives_only(tmp_path: Path, monkeypatch) -> None:
    """`negatives: in_batch` (plain SimCSE) reaches the trainer without the sampled hard negatives."""
    import simcse.train
    from flows.config import config_from_mapping
    from flows.rundir import RunDir

    batch = {"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"], "alpha": [1.0, 1.0]}
    monkeypatch.setattr(steps, "round_batches", lambda *a, **k: ([dict(batch)], None))
    monkeypatch.setattr(steps, "load_encoder", lambda *a, **k: object())
    seen: dict[str, list] = {}

    def fake_train(encoder, batches, config, output_dir, **kwargs):
        seen["batches"] = list(batches)
        raise _Stop

    monkeypatch.setattr(simcse.train, "train", fake_train)
    for negatives, keys in (("hard", set(batch)), ("in_batch", {"anchor", "positive"})):
        config = config_from_mapping({"output_dir": str(tmp_path / negatives), "negatives": negatives,
                                      "data": {"corpus": str(tmp_path / "c.txt")}}, base_dir=tmp_path)
        try:
            steps.train_round("m", {"state": {}}, config, RunDir(config.output_dir), 0)
        except _Stop:
            pass
        assert set(seen["batches"][0]) == keys, negatives
