"""`init` and the teacher: named with --teacher it is on in the config; found beside the config it is on for an
unlabeled corpus, with mined positives (where the judge experiment measured that it helps, docs/results.md), and
offered commented out for labeled data; otherwise the config says how to install one. An unlabeled corpus gets
the experiment's recipe (in-batch negatives, the word-deletion view), not nearest-neighbour negatives. Every
written config validates (scaffold checks it before writing)."""

from __future__ import annotations

from pathlib import Path

import yaml


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tweets.txt"
    path.write_text("".join(f"headline {i} about topic {i % 7} and item {i * 31 % 97}\n" for i in range(80)),
                    encoding="utf-8")
    return path


def _teacher(folder: Path) -> Path:
    from simcse.testing import build_tiny_model

    return build_tiny_model(folder)


def test_a_named_teacher_is_on_and_validates(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    teacher = _teacher(tmp_path / "my-teacher")
    path, _, _ = scaffold([str(_corpus(tmp_path))], tmp_path / "run.yaml", teacher=str(teacher))
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["teacher"] == {"path": "./my-teacher"}


def _found_teacher(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    teacher = _teacher(tmp_path / "models" / "all-mpnet-base-v2")
    (teacher / "modules.json").write_text("[]", encoding="utf-8")  # what `find_teacher` looks for


def test_a_teacher_found_beside_an_unlabeled_corpus_judges_its_mined_positives(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    _found_teacher(tmp_path)
    path, _, _ = scaffold([str(_corpus(tmp_path))], tmp_path / "run.yaml")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["teacher"] == {"path": "./models/all-mpnet-base-v2"}
    assert config["mining"]["params"] == {"mined_positives": True, "positive_mutual": True,
                                          "positive_min_score": 0.8, "similarity_sample": 1024}
    assert config["negatives"] == "in_batch" and config["mining"]["bands"] == ["random"]


def test_a_teacher_found_beside_labeled_data_is_offered_commented_out(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    _found_teacher(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\n" + "".join(f"headline {i},title {i}\n" for i in range(40)), encoding="utf-8")
    path, _, _ = scaffold([str(_corpus(tmp_path)), str(pairs)], tmp_path / "run.yaml")
    text = path.read_text(encoding="utf-8")
    assert "teacher" not in yaml.safe_load(text)
    assert "# teacher:   # found ./models/all-mpnet-base-v2" in text and "#   path: ./models/all-mpnet-base-v2" in text


def test_without_a_teacher_the_config_says_how_to_install_one(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    path, _, _ = scaffold([str(_corpus(tmp_path))], tmp_path / "run.yaml")
    text = path.read_text(encoding="utf-8")
    assert "simcse-curriculum teacher install --out models/all-mpnet-base-v2" in text
    assert "also set mining.params mined_positives: true" in text
    config = yaml.safe_load(text)
    assert "teacher" not in config and config["mining"]["params"] == {"similarity_sample": 1024}
    assert (config["negatives"], config["positive_view"], config["training"]) == (
        "in_batch", "word_deletion", {"lr": 1.0e-5, "temperature": 0.1}), "the judge experiment's recipe"
    assert config["curriculum"] == {"mode": "static", "static": {"weights": {"random": 1.0}}}
