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
