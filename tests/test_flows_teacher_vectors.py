"""The teacher's vectors kept across runs (`teacher.vectors`, mining.vector_store): scheduled nights share
`<output_dir>/teacher_vectors` unless the config names a folder; the setting says where vectors are read from, not
what a run computes, so it changes neither the run's fingerprint nor whether a folder resumes; and a second run
over the same corpus encodes nothing with the teacher (tiny random BERTs through the flows' round loop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.run.config import config_from_mapping
from flows.run.rundir import RunDir
from flows.run.scheduled_folders import TEACHER_VECTORS, night_config


def _settings(root: Path, teacher: Path | str, **teacher_extra: str) -> dict:
    corpus = root / "corpus.txt"
    if not corpus.exists():
        lines = [f"sentence {i} talks about topic {i % 13} and item {i * 7919 % 1000}" for i in range(60)]
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"output_dir": str(root / "out"), "seed": 0, "rounds": 1, "steps_per_round": 1, "batch_size": 8,
            "model": {"name_or_path": str(teacher), "pooling": "mean", "max_length": 24},
            "data": {"corpus": str(corpus)}, "teacher": {"path": str(teacher), **teacher_extra},
            "mining": {"bands": ["random"], "params": {"range_max": 10}}, "training": {"progress": False}}


def test_scheduled_nights_keep_the_teachers_vectors_beside_their_folders(tmp_path):
    (tmp_path / "teacher").mkdir()
    config = config_from_mapping(_settings(tmp_path, tmp_path / "teacher"))
    night = night_config(config, tmp_path / "out" / "20261208T020000Z")
    assert night.output_dir == tmp_path / "out" / "20261208T020000Z"
    assert night.teacher.vectors == str(tmp_path / "out" / TEACHER_VECTORS)
    assert config.teacher.vectors is None, "the loaded config is left as it is"
    named = config_from_mapping(_settings(tmp_path, tmp_path / "teacher", vectors="shared"), base_dir=tmp_path)
    assert named.teacher.vectors == str(tmp_path / "shared"), "relative to the config's folder"
    assert night_config(named, tmp_path / "n").teacher.vectors == str(tmp_path / "shared")
    plain = config_from_mapping({k: v for k, v in _settings(tmp_path, tmp_path / "teacher").items() if k != "teacher"})
    assert night_config(plain, tmp_path / "n").teacher is None


def test_where_the_vectors_are_kept_is_not_a_setting_of_the_run(tmp_path):
    (tmp_path / "teacher").mkdir()
    config = config_from_mapping(_settings(tmp_path, tmp_path / "teacher"))
    night = night_config(config, tmp_path / "out" / "n")
    assert night.fingerprint() == config.fingerprint()
    run = RunDir(tmp_path / "out" / "n")
    run.claim(night)
    assert run.changed_settings(config.model_copy(update={"output_dir": run.root})) == []


@pytest.mark.slow
def test_a_second_run_over_the_same_corpus_encodes_nothing_with_the_teacher(tmp_path):
    from flows.rounds.loop import plain_steps, run_rounds
    from simcse.testing import build_tiny_model, torch_threads

    teacher = build_tiny_model(tmp_path / "teacher", seed=1)
    encoded = {}
    for name in ("first", "second"):
        settings = _settings(tmp_path, teacher, vectors=str(tmp_path / "vectors"))
        config = config_from_mapping({**settings, "output_dir": str(tmp_path / name)})
        run = RunDir(tmp_path / name)
        with torch_threads(1):
            run_rounds(config, run, plain_steps(config, run))
        metas = [json.loads(p.read_text(encoding="utf-8")) for p in run.cache.glob("emb-*/meta.json")]
        encoded[name] = [(m["encoded"], m["from_store"]) for m in metas if "from_store" in m]
    assert encoded == {"first": [(60, 0)], "second": [(0, 60)]}, encoded


def test_a_vectors_setting_that_names_a_file_is_refused_before_the_run(tmp_path):
    from dataio.errors import InputError
    from flows.rounds.validate import check_run

    (tmp_path / "teacher").mkdir()
    (tmp_path / "vectors").write_text("not a folder", encoding="utf-8")
    config = config_from_mapping(_settings(tmp_path, tmp_path / "teacher", vectors=str(tmp_path / "vectors")))
    with pytest.raises(InputError, match="teacher.vectors: .* is a file; name a folder"):
        check_run(config)
