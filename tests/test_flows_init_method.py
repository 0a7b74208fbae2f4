"""`init` writes the method the experiments measured for the data it is given (docs/results.md): NLI triplets
alone get the SimCSE recipe (the contradiction as the hard negative, static), a corpus alone the judge
experiment's in-batch recipe (tests/test_flows_init_teacher.py), and a mix the banded curriculum."""

from __future__ import annotations

from pathlib import Path

import yaml


def _nli(tmp_path: Path) -> Path:
    path = tmp_path / "triplets.csv"
    path.write_text("sent0,sent1,hard_neg\n" + "".join(
        f"a man plays guitar {i},someone makes music {i},nobody is playing {i}\n" for i in range(40)), encoding="utf-8")
    return path


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tweets.txt"
    path.write_text("".join(f"headline {i} about topic {i % 7} and item {i * 31 % 97}\n" for i in range(80)),
                    encoding="utf-8")
    return path


def test_nli_triplets_alone_get_the_simcse_recipe(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    path, _, _ = scaffold([str(_nli(tmp_path))], tmp_path / "run.yaml")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["mining"] == {"bands": ["nli_contradiction"], "params": {"similarity_sample": 1024}}
    assert config["curriculum"] == {"mode": "static", "static": {"weights": {"nli_contradiction": 1.0}}}
    assert config["training"] == {"lr": 5.0e-5}


def test_a_corpus_beside_nli_triplets_gets_the_banded_curriculum(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    corpus = _corpus(tmp_path)
    path, _, _ = scaffold([str(corpus), str(_nli(tmp_path))], tmp_path / "run.yaml")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["mining"]["bands"] == ["random", "in_domain", "nli_contradiction", "nearest_neighbour"]
    assert config["curriculum"]["pacing"] == "root" and "negatives" not in config


METHOD_KEYS = ("negatives", "positive_view", "word_deletion", "mining", "curriculum", "training")


def _method(config: dict) -> dict:
    return {k: config.get(k) for k in METHOD_KEYS}


def test_inits_recipes_are_the_shipped_configs_recipes(tmp_path: Path) -> None:
    """init and configs/ carry the same measured recipes: a change to one without the other fails here."""
    from flows.rounds.scaffold import scaffold

    repo = Path(__file__).resolve().parents[1]
    shipped = {name: yaml.safe_load((repo / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
               for name in ("domain_unlabeled", "domain_no_teacher", "nli_supervised")}
    corpus = _corpus(tmp_path)
    written = {}
    for name, data in (("domain_no_teacher", corpus), ("nli_supervised", _nli(tmp_path))):
        path, _, _ = scaffold([str(data)], tmp_path / f"{name}.yaml")
        written[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
    from simcse.testing import build_tiny_model

    (tmp_path / "models").mkdir()  # a teacher found beside the config: the default's recipe
    build_tiny_model(tmp_path / "models" / "all-mpnet-base-v2")
    (tmp_path / "models" / "all-mpnet-base-v2" / "modules.json").write_text("[]", encoding="utf-8")
    path, _, _ = scaffold([str(corpus)], tmp_path / "domain_unlabeled.yaml")
    written["domain_unlabeled"] = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, config in written.items():
        assert _method(config) == _method(shipped[name]), name
