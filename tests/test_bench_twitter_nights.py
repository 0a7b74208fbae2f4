"""bench/twitter_nights.py's plumbing (the nights themselves run MiniLM on the Twitter corpus, minutes each, so
they are a benchmark, not a test): the corpus slices, each night's config, and the table it writes."""

from __future__ import annotations

from pathlib import Path

from bench import twitter_nights as nights


def test_the_corpus_is_cut_into_contiguous_slices_once(tmp_path: Path) -> None:
    src = tmp_path / "unlabeled.txt"
    src.write_text("".join(f"tweet {i}\n" for i in range(10)), encoding="utf-8")
    parts = nights.slice_corpus(src, tmp_path / "slices", 3, limit=8)
    assert [p.read_text().splitlines() for p in parts] == [["tweet 0", "tweet 1", "tweet 2"],
                                                           ["tweet 3", "tweet 4", "tweet 5"], ["tweet 6", "tweet 7"]]
    parts[0].write_text("kept\n")
    assert nights.slice_corpus(src, tmp_path / "slices", 3, limit=8)[0].read_text() == "kept\n", "written once"


def test_a_night_runs_the_shipped_config_with_only_its_inputs_and_outputs_moved(tmp_path: Path) -> None:
    import yaml

    config = Path(nights.REPO) / "configs" / "domain_unlabeled.yaml"
    dev = {"select": tmp_path / "select.tsv", "report": tmp_path / "report.tsv"}
    for path in dev.values():
        path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\n", encoding="utf-8")
    cfg = nights.night_config(config, tmp_path, 2, dev)
    shipped = yaml.safe_load(config.read_text())
    assert cfg.output_dir == tmp_path / "runs" / "night-2" and cfg.eval.dev_metric == "pairs/select"
    assert (cfg.rounds, cfg.steps_per_round, cfg.negatives) == (shipped["rounds"], shipped["steps_per_round"],
                                                               shipped["negatives"])
    assert cfg.training.lr == shipped["training"]["lr"]
    assert cfg.eval.min_improvement == shipped["eval"]["min_improvement"]
    assert cfg.registry.path == str(tmp_path / "registry") and cfg.registry.gate.guard == "sts/dev"
    assert cfg.tracking.enabled and cfg.tracking.uri == str(tmp_path / "mlflow")


def test_the_table_says_what_each_night_did() -> None:
    base = {"noop": False, "rows": 100, "new_rows": 100, "registered": 2, "parent": 1, "promoted": "false",
            "reason": "pairs/select 75.09 -> 75.05 (-0.04)", "current": 1,
            "current_metrics": {"pairs/select": 75.0853, "pairs/report": 80.29, "sts/dev": 86.72},
            "night_minutes": 4.0, "round_seconds": 100.0, "tracking_seconds_per_round": 0.1,
            "tracking_share_of_round": 0.001, "tracking_seconds_per_run": 7.5}
    rows = [{**base, "night": 1, "candidate_metrics": {"pairs/select": 75.14, "pairs/report": 80.1, "sts/dev": 86.9}},
            {**base, "night": 2, "promoted": True, "registered": 3, "parent": 1, "current": 3},  # "false": an old row
            {**base, "night": 3, "noop": True}]
    meta = {"command": "bench/twitter_nights.py", "machine": "vm", "finished": "now",
            "config": "configs/domain_unlabeled.yaml", "slices": 3, "lines": 300}
    text = nights.render(rows, meta)
    assert text.startswith(nights.START_MARKER) and text.rstrip().endswith(nights.END_MARKER)
    assert ("| 1 | 100 (100) | 2 (1) | no: pairs/select 75.09 -> 75.05 (-0.04) | 75.14 / 80.10 / 86.90 | 1 | "
            "75.09 / 80.29 / 86.72 |") in text
    assert "| 2 | 100 (100) | 3 (1) | yes | – | 3 |" in text and "| 3 | 100 (100) | 2 (1) | no-op |" in text
    assert "| 0.10 (0.1 %) | 7.50 |" in text
