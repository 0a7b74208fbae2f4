"""A round whose bands need no vectors of the pool (mining.similarity_sample): only a sample of each band's rows is
encoded and scored, the same rows every time, with the similarities a full round would give them; the other rows
are null; the statistics say how many rows they come from; and the setting stays out of rounds mined without it."""

from __future__ import annotations

import numpy as np
import pytest

from dataio.triplets import read_manifest, read_triplets
from mining.corpus import load_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import CountingEncoder, TableEncoder

TEXTS = [f"headline {i} about item {i * 7 % 23}" for i in range(120)]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return load_corpus([path])


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return {t: rng.standard_normal(8).tolist() for t in TEXTS}


def test_only_a_sample_is_encoded_and_it_scores_as_a_full_round_would(corpus, vectors, tmp_path):
    full_encoder, sample_encoder = CountingEncoder(vectors), CountingEncoder(vectors)
    mine(corpus, full_encoder, tmp_path / "full", bands=["random"], show_progress=False)
    mine(corpus, sample_encoder, tmp_path / "sample", bands=["random"], show_progress=False,
         params=MiningParams(similarity_sample=10))
    assert full_encoder.encoded == len(TEXTS)
    assert 0 < sample_encoder.encoded <= 30, "only the sampled rows' texts are encoded"
    full = {r["anchor"]: r for r in read_triplets(tmp_path / "full").to_pylist()}
    rows = read_triplets(tmp_path / "sample").to_pylist()
    scored = [r for r in rows if r["anchor_negative_sim"] is not None]
    assert len(scored) == 10 and len(rows) == len(full)
    for r in rows:
        assert r["negative"] == full[r["anchor"]]["negative"], "sampling changes no triplet"
    for r in scored:
        assert r["anchor_negative_sim"] == pytest.approx(full[r["anchor"]]["anchor_negative_sim"], abs=2e-3)
        assert r["anchor_positive_sim"] == pytest.approx(1.0, abs=1e-3)  # unsupervised: the anchor itself
    stats = read_manifest(tmp_path / "sample", 0).bands["random"]
    assert stats.model_extra["similarity_rows"] == 10
    assert stats.mean_anchor_negative_sim == pytest.approx(np.mean([r["anchor_negative_sim"] for r in scored]),
                                                           abs=1e-5)
    assert read_manifest(tmp_path / "sample", 0).embeddings["sample"]["texts_encoded"] == \
        sample_encoder.encoded


def test_the_sample_repeats_and_bands_that_need_vectors_encode_the_pool(corpus, vectors, tmp_path):
    params = MiningParams(similarity_sample=10, range_max=5)
    for name in ("a", "b"):
        mine(corpus, TableEncoder(vectors), tmp_path / name, bands=["random"], params=params, show_progress=False)
    scored = [{r["anchor"] for r in read_triplets(tmp_path / n).to_pylist() if r["anchor_negative_sim"] is not None}
              for n in ("a", "b")]
    assert scored[0] == scored[1]
    encoder = CountingEncoder(vectors)
    mine(corpus, encoder, tmp_path / "nn", bands=["random", "nearest_neighbour"], params=params, show_progress=False)
    assert encoder.encoded == len(TEXTS), "a nearest-neighbour band needs the whole pool's vectors"
    assert all(r["anchor_negative_sim"] is not None for r in read_triplets(tmp_path / "nn").to_pylist())


def test_the_setting_is_recorded_only_when_set():
    assert "similarity_sample" not in MiningParams().as_dict()
    assert MiningParams(similarity_sample=64).as_dict()["similarity_sample"] == 64


def test_with_a_teacher_judging_positives_the_student_encodes_only_the_sample(corpus, vectors, tmp_path):
    """configs/domain_unlabeled.yaml's round: the random band and mined positives the teacher judges. The student's
    vectors of the pool would serve only the statistics, so only a sample is encoded; the triplets, the mined
    positives and every row's teacher scores are those of a round that encodes the whole pool."""
    # A teacher that sees pairs of paraphrases (i and i + 60 close), so mined positives exist.
    rng = np.random.default_rng(1)
    base = [rng.standard_normal(8) for _ in range(60)]
    teacher_vectors = {t: (base[i % 60] + 0.01 * rng.standard_normal(8)).tolist() for i, t in enumerate(TEXTS)}
    params = MiningParams(mined_positives=True, positive_min_score=0.9)
    kw = dict(bands=["random"], show_progress=False)
    full_student, sample_student = CountingEncoder(vectors), CountingEncoder(vectors)
    mine(corpus, full_student, tmp_path / "full", params=params, teacher=TableEncoder(teacher_vectors), **kw)
    mine(corpus, sample_student, tmp_path / "sample", teacher=TableEncoder(teacher_vectors),
         params=params.model_copy(update={"similarity_sample": 10}), **kw)
    assert full_student.encoded == len(TEXTS) and 0 < sample_student.encoded <= 30
    key = ("anchor", "positive", "negative", "positive_source", "teacher_score", "teacher_positive_score")
    full = sorted(tuple(r[k] for k in key) for r in read_triplets(tmp_path / "full").to_pylist())
    sample = sorted(tuple(r[k] for k in key) for r in read_triplets(tmp_path / "sample").to_pylist())
    assert sample == full and sum(1 for r in sample if r[3] == "mined") >= 50
    assert all(r[4] is not None and r[5] is not None for r in sample), "every row keeps its teacher scores"
    # The student as the judge needs its own vectors of the whole pool: no sample then.
    student_judge = CountingEncoder(vectors)
    mine(corpus, student_judge, tmp_path / "student", params=params.model_copy(update={"similarity_sample": 10}),
         **kw)
    assert student_judge.encoded == len(TEXTS)
    # Nor when the student judges beside the teacher (positive_judge: both).
    ensemble = CountingEncoder(vectors)
    mine(corpus, ensemble, tmp_path / "both", teacher=TableEncoder(teacher_vectors),
         params=params.model_copy(update={"similarity_sample": 10, "positive_judge": "both"}), **kw)
    assert ensemble.encoded == len(TEXTS)
