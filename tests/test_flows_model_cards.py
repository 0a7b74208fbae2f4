"""A round's model card from the run's files (no Prefect, no training): data licences named in the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.rounds.model_cards import round_card
from flows.run.config import config_from_mapping
from flows.run.fingerprint import file_fingerprint
from flows.run.rundir import RunDir


def test_round_card_names_each_source_with_its_fingerprint_licence_and_row_counts(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("one\ntwo\n\ntwo\n", encoding="utf-8")
    (tmp_path / "pairs.csv").write_text("anchor,positive\na,b\n", encoding="utf-8")
    config = config_from_mapping({"output_dir": "run", "rounds": 3,
                                  "data": {"corpus": {"path": "corpus.txt", "licence": "CC-BY-4.0"},
                                           "pairs": {"path": "pairs.csv"}}}, base_dir=tmp_path)
    assert config.data.corpus.licence == "CC-BY-4.0" and config.data.pairs.licence is None
    run = RunDir(config.output_dir)
    run.manifest_path(1).parent.mkdir(parents=True)
    sources = [{"path": str(tmp_path / "corpus.txt"), "kind": "corpus", "rows": 4, "kept": 2, "empty": 1,
                "duplicates": 1, "missing_negative": 0},
               {"path": str(tmp_path / "pairs.csv"), "kind": "pairs", "rows": 1, "kept": 1, "empty": 0,
                "duplicates": 0, "missing_negative": 0}]
    run.manifest_path(1).write_text(json.dumps({
        "round": 1, "files": [{"path": "band=random/part-0.parquet", "rows": 3, "band": "random"}],
        "bands": {"random": {"rows": 3, "mean_anchor_negative_sim": 0.25}}, "corpus": {"sources": sources}}))
    plan = {"stage": 1, "competence": 0.5, "mixture": {"random": 1.0}, "alpha": {"random": 0.75}}

    info = round_card(config, run, 1, plan)
    corpus, pairs = info.data
    assert corpus["licence"] == "CC-BY-4.0" and pairs["licence"] is None
    assert corpus["sha256"] == file_fingerprint(tmp_path / "corpus.txt")
    assert (corpus["rows"], corpus["kept"], corpus["dropped"]) == (4, 2, {"empty": 1, "duplicate": 1, "no negative": 0,
                                                                          "label-0 pairs": 0})
    assert info.round == 1 and info.rounds == 3 and info.training_rows["rows"] == 3
    assert info.curriculum["mode"] == "paced" and info.curriculum["difficulties"] == {"random": 0.25}
    assert info.loss == {"alpha": {"random": 0.75}}

    closed = round_card(config, run, 1, metrics={"curriculum": {**plan, "decision": "advanced: paced"},
                                                 "evaluation": {"sts": {"dev": 70.0}},
                                                 "dev_metric": {"name": "sts/dev", "value": 70.0}})
    assert closed.curriculum["decision"] == "advanced: paced" and closed.dev_metric["value"] == pytest.approx(70.0)
