"""The graded bands (mining.bands.graded_band): each anchor's nearest-neighbour window cut in thirds by the judge's
score, the teacher's when the round has one; their difficulty as the teacher measures it; the curriculum setting
that orders bands by the teacher; and the settings staying out of what older runs recorded."""

from __future__ import annotations

import numpy as np
import pytest

from dataio.errors import TripletDataError
from dataio.triplet_layout import GRADED_BANDS
from dataio.triplets import read_manifest, read_triplets
from mining.corpus import load_corpus
from mining.embeddings import embed_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import TableEncoder

TEXTS = [f"text number {i}" for i in range(40)]
PARAMS = MiningParams(range_max=12, unsupervised_range_min=0, max_score=None)
BANDS = ["nearest_neighbour", *GRADED_BANDS]


def vectors(seed: int, dim: int = 6) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal(dim).tolist() for t in TEXTS}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return load_corpus([path])


def cosine(table: dict[str, list[float]], a: str, b: str) -> float:
    x, y = np.asarray(table[a]), np.asarray(table[b])
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def by_grade(rows: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r["anchor"], {})[r["band"]] = r
    return out


def test_each_anchor_gets_one_negative_from_each_third_of_its_window_by_the_students_score(corpus, tmp_path):
    student = vectors(0)
    mine(corpus, TableEncoder(student), tmp_path / "out", params=PARAMS, bands=BANDS, show_progress=False)
    rows = read_triplets(tmp_path / "out").to_pylist()
    graded = by_grade(rows)
    assert len(graded) == len(TEXTS)
    for anchor, bands in graded.items():
        assert set(GRADED_BANDS) <= set(bands), anchor
        easy, medium, hard = (cosine(student, anchor, bands[b]["negative"]) for b in GRADED_BANDS)
        assert easy <= medium <= hard, (anchor, easy, medium, hard)
        assert all(bands[b]["negative_rank"] < PARAMS.range_max for b in GRADED_BANDS)
        # The window is the student's nearest neighbours: its hardest third holds the nearest one.
        assert bands["graded_hard"]["negative"] != bands["graded_easy"]["negative"]
    manifest = read_manifest(tmp_path / "out", 0)
    d = manifest.difficulties()
    assert d["graded_easy"] < d["graded_medium"] < d["graded_hard"]
    with pytest.raises(TripletDataError, match="mined without a teacher"):
        manifest.difficulties("teacher")


def test_with_a_teacher_the_grades_are_the_teachers(corpus, tmp_path):
    student, teacher = vectors(0), vectors(1)
    mine(corpus, TableEncoder(student), tmp_path / "out", params=PARAMS, bands=BANDS, show_progress=False,
         teacher=TableEncoder(teacher))
    graded = by_grade(read_triplets(tmp_path / "out").to_pylist())
    student_ordered = 0
    for anchor, bands in graded.items():
        scores = [bands[b]["teacher_score"] for b in GRADED_BANDS]
        assert scores == sorted(scores), (anchor, scores)
        student_ordered += [cosine(student, anchor, bands[b]["negative"]) for b in GRADED_BANDS] == sorted(
            cosine(student, anchor, bands[b]["negative"]) for b in GRADED_BANDS)
    assert student_ordered < len(graded), "an unrelated teacher grades differently from the student somewhere"
    manifest = read_manifest(tmp_path / "out", 0)
    by_teacher = manifest.difficulties("teacher")
    assert by_teacher["graded_easy"] < by_teacher["graded_medium"] < by_teacher["graded_hard"]
    assert by_teacher == pytest.approx({b: s.model_extra["mean_teacher_score"] for b, s in manifest.bands.items()})


def test_the_graded_bands_need_the_same_neighbours_as_nearest_neighbour(corpus, tmp_path):
    from mining.band_context import BandContext

    emb = embed_corpus(corpus, TableEncoder(vectors(0)), tmp_path / "cache", show_progress=False)
    ctx = BandContext(corpus, emb, PARAMS, seed=0, round_=0)
    assert ctx.knn_depth(["graded_hard"]) == ctx.knn_depth(["nearest_neighbour"]) > 0


def test_grading_by_the_teacher_is_a_setting_that_needs_a_teacher_and_stays_out_of_old_records(tmp_path):
    from curriculum.config import CurriculumConfig
    from dataio.errors import UserError
    from flows.run.config import config_from_mapping

    assert "difficulty" not in CurriculumConfig().model_dump(mode="json")
    assert CurriculumConfig(difficulty="teacher").model_dump(mode="json")["difficulty"] == "teacher"
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\nb\n", encoding="utf-8")
    base = {"output_dir": str(tmp_path / "run"), "data": {"corpus": str(corpus)},
            "curriculum": {"difficulty": "teacher"}}
    with pytest.raises(UserError, match="curriculum.difficulty: teacher"):
        config_from_mapping(base)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    assert config_from_mapping({**base, "teacher": {"path": str(teacher)}}).curriculum.difficulty == "teacher"


def test_the_three_grades_share_one_pass_over_each_window(corpus, tmp_path, monkeypatch):
    """The graded bands of a round look at each block's window once (not once per grade), and a grade asked for
    alone on a fresh context is the same band as one drawn beside the others."""
    import mining.bands as bands
    from mining.band_context import BandContext
    from mining.index import knn

    emb = embed_corpus(corpus, TableEncoder(vectors(0)), tmp_path / "cache", show_progress=False)

    def context() -> BandContext:
        ctx = BandContext(corpus, emb, PARAMS, seed=0, round_=0)
        ctx.set_knn(knn(emb.matrix, ctx.uq, ctx.knn_depth(["graded_hard"]), "faiss-flat", seed=0,
                        show_progress=False), ctx.uq)
        return ctx

    calls = []
    real = bands._neighbour_window
    monkeypatch.setattr(bands, "_neighbour_window", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = context()
    together = [bands.BAND_FUNCTIONS[b](ctx) for b in GRADED_BANDS]
    assert len(calls) == 1, "one block of 40 anchors, one window for the three grades"
    for grade, band in enumerate(GRADED_BANDS):
        alone = bands.graded_band(context(), grade=grade)
        assert alone.band == together[grade].band == band
        assert np.array_equal(alone.negative, together[grade].negative) and alone.skipped == together[grade].skipped
