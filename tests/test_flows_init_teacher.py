"""`init` and the teacher: named with --teacher it is on in the config; found beside the config it is offered
commented out (the judge experiment decides whether it helps, docs/results.md); otherwise the config says how to
install one. Every written config validates."""

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


def test_a_teacher_found_beside_the_config_is_offered_commented_out(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    (tmp_path / "models").mkdir()
    teacher = _teacher(tmp_path / "models" / "all-mpnet-base-v2")
    (teacher / "modules.json").write_text("[]", encoding="utf-8")
    path, _, _ = scaffold([str(_corpus(tmp_path))], tmp_path / "run.yaml")
    text = path.read_text(encoding="utf-8")
    assert "teacher" not in yaml.safe_load(text)
    assert "# teacher:   # found ./models/all-mpnet-base-v2" in text and "#   path: ./models/all-mpnet-base-v2" in text


def test_without_a_teacher_the_config_says_how_to_install_one(tmp_path: Path) -> None:
    from flows.rounds.scaffold import scaffold

    path, _, _ = scaffold([str(_corpus(tmp_path))], tmp_path / "run.yaml")
    assert "simcse-curriculum teacher install --out models/all-mpnet-base-v2" in path.read_text(encoding="utf-8")
