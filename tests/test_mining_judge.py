"""The judge (mining.judge): mined positives by the rule (score, margin, mutual), never each other's negatives,
rejected pairs honoured, the teacher's scores on every row, its embeddings cached once, and the false-negative
filter judged by the teacher. Hand-built geometry (TableEncoder), so each case is decided by the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from dataio.errors import InputError
from dataio.triplets import read_manifest, read_triplets
from mining.corpus import MINED, load_corpus
from mining.embeddings import embed_corpus
from mining.judge import judge_embeddings, mine_positives, with_mined_positives
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import CountingEncoder, TableEncoder


def unit(*values: float, dim: int = 8) -> list[float]:
    v = list(values) + [0.0] * (dim - len(values))
    return v


# a0/a1: a clear paraphrase pair (cos 0.999). b0/b1: related, below 0.9 (cos 0.80). x -> y -> z: x's nearest is y
# (0.944) but y's nearest is z (0.995), so x/y is not mutual, and x's runner-up z (0.906) is within 0.05 of y.
STUDENT = {
    "alpha one": unit(1, 0.2), "alpha uno": unit(1, 0.25),
    "beta one": unit(0, 0, 1, 0.6), "beta uno": unit(0, 0, 1, -0.1),
    "ex": unit(0, 0, 0, 0, 1, -0.35), "why": unit(0, 0, 0, 0, 1, 0), "zed": unit(0, 0, 0, 0, 1, 0.1),
    "gee": unit(0, 0, 0, 0, 0, 0, 1), "aitch": unit(0, 0, 0, 0, 0, 0, 0, 1),
}
TEXTS = list(STUDENT)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return load_corpus([path])


def judged(corpus, tmp_path, vectors=STUDENT, **params):
    emb = embed_corpus(corpus, TableEncoder(vectors), tmp_path / "cache", show_progress=False)
    return mine_positives(corpus, emb, MiningParams(range_max=5, **params))


def pairs_of(corpus, mined) -> set[tuple[str, str]]:
    return {(corpus.texts[corpus.anchor[r]], corpus.texts[p]) for r, p in zip(mined.rows, mined.positive)}


def test_mutual_confident_neighbours_become_positives(corpus, tmp_path):
    mined = judged(corpus, tmp_path)
    assert pairs_of(corpus, mined) == {("alpha one", "alpha uno"), ("alpha uno", "alpha one"), ("why", "zed"),
                                       ("zed", "why")}
    assert mined.candidates == len(TEXTS)
    assert mined.rejected["not_mutual"] == 1  # ex -> why, but why -> zed
    assert mined.rejected["below_min_score"] >= 2  # beta one / beta uno (0.80) and the isolated texts
    assert np.all(mined.score >= 0.9)


def test_the_rule_settings_each_change_the_outcome(corpus, tmp_path):
    one_way = pairs_of(corpus, judged(corpus, tmp_path, positive_mutual=False))
    assert ("ex", "why") in one_way, "without the mutual rule a one-way confident neighbour counts"
    with_margin = pairs_of(corpus, judged(corpus, tmp_path, positive_mutual=False, positive_min_margin=0.05))
    assert ("ex", "why") not in with_margin, "its runner-up (zed) is within the margin"
    assert ("beta one", "beta uno") in pairs_of(corpus, judged(corpus, tmp_path, positive_min_score=0.7))


def test_a_rejected_pair_is_never_mined(corpus, tmp_path):
    emb = embed_corpus(corpus, TableEncoder(STUDENT), tmp_path / "cache", show_progress=False)
    n = len(corpus)
    a, b = corpus.texts.index("alpha one"), corpus.texts.index("alpha uno")
    mined = mine_positives(corpus, emb, MiningParams(range_max=5), excluded_keys=np.array(sorted([a * n + b])))
    pairs = pairs_of(corpus, mined)
    assert ("alpha one", "alpha uno") not in pairs and ("alpha uno", "alpha one") not in pairs


def test_mined_rows_train_as_pairs_and_never_as_each_others_negatives(corpus, tmp_path):
    params = MiningParams(range_max=5, mined_positives=True, unsupervised_range_min=0)
    result = mine(corpus, TableEncoder(STUDENT), tmp_path / "out", params=params, bands=["random", "nearest_neighbour"],
                  show_progress=False)
    rows = read_triplets(tmp_path / "out").to_pylist()
    by_anchor = {r["anchor"]: r for r in rows if r["band"] == "nearest_neighbour"}
    assert by_anchor["alpha one"]["positive"] == "alpha uno" and by_anchor["alpha one"]["positive_source"] == "mined"
    assert by_anchor["gee"]["positive"] == "gee" and by_anchor["gee"]["positive_source"] == "anchor"
    mined = {("alpha one", "alpha uno"), ("alpha uno", "alpha one"), ("why", "zed"), ("zed", "why")}
    assert not {(r["anchor"], r["negative"]) for r in rows} & mined
    stats = result.manifest.model_extra["mined_positives"]
    assert stats["judge"] == "student" and stats["mined"] == 4 and stats["candidates"] == len(TEXTS)
    assert all(r["teacher_score"] is None for r in rows), "no teacher: no teacher scores"


def test_mined_positive_settings_stay_out_of_rounds_mined_without_them(corpus, tmp_path):
    result = mine(corpus, TableEncoder(STUDENT), tmp_path / "out", params=MiningParams(range_max=5),
                  bands=["random"], show_progress=False)
    assert "mined_positives" not in result.manifest.params and "positive_min_score" not in result.manifest.params
    assert "mined_positives" not in (result.manifest.model_extra or {})


def test_the_teacher_judges_and_scores_every_row_and_encodes_the_pool_once(corpus, tmp_path):
    # The student sees "alpha one"/"alpha uno" as unrelated; the teacher sees a paraphrase.
    student = {**STUDENT, "alpha uno": unit(0, 0, 0, 0, 0, 1, 0.3)}
    teacher = CountingEncoder(STUDENT)
    params = MiningParams(range_max=5, mined_positives=True, unsupervised_range_min=0)
    first = mine(corpus, TableEncoder(student), tmp_path / "out", params=params, bands=["random", "nearest_neighbour"],
                 show_progress=False, teacher=teacher)
    rows = read_triplets(tmp_path / "out").to_pylist()
    row = next(r for r in rows if r["anchor"] == "alpha one")
    assert row["positive"] == "alpha uno" and row["positive_source"] == "mined"
    t = embed_corpus(corpus, TableEncoder(STUDENT), tmp_path / "t", show_progress=False)
    i = {text: k for k, text in enumerate(corpus.texts)}
    for r in rows:
        expected = t.pair_sims(np.array([i[r["anchor"]]]), np.array([i[r["negative"]]]))[0]
        assert r["teacher_score"] == pytest.approx(float(expected), abs=1e-3)
        expected_pos = t.pair_sims(np.array([i[r["anchor"]]]), np.array([i[r["positive"]]]))[0]
        assert r["teacher_positive_score"] == pytest.approx(float(expected_pos), abs=1e-3)
    assert first.manifest.model_extra["mined_positives"]["judge"] == "teacher"
    assert "teacher_fingerprint" in first.manifest.params
    assert "mean_teacher_score" in first.manifest.bands["nearest_neighbour"].model_extra
    encoded = teacher.encoded
    assert encoded == len(corpus)
    # The next round, with a changed student: the teacher's embeddings come from the cache.
    student2 = {**student, "gee": unit(0, 0, 0, 0, 0, 0, 1, 0.5)}
    second = mine(corpus, TableEncoder(student2), tmp_path / "out", round=1, params=params,
                  bands=["random", "nearest_neighbour"], show_progress=False, teacher=teacher)
    assert teacher.encoded == encoded, "the teacher encodes a corpus once, not once per round"
    assert second.manifest.model_extra["teacher"]["cached"] is True


def test_the_teacher_decides_the_false_negative_filter(corpus, tmp_path):
    # The student ranks "gee" right next to "aitch"; the teacher says they are the same (cos 1 > max_score).
    student = {**STUDENT, "aitch": unit(0, 0, 0, 0, 0, 0, 0.9, 0.3)}
    teacher = {**STUDENT, "aitch": unit(0, 0, 0, 0, 0, 0, 1, 0.01)}
    params = MiningParams(range_max=3, unsupervised_range_min=0, max_score=0.95)
    kw = dict(params=params, bands=["nearest_neighbour"], show_progress=False)
    mine(corpus, TableEncoder(student), tmp_path / "plain", **kw)
    mine(corpus, TableEncoder(student), tmp_path / "judged", teacher=TableEncoder(teacher), **kw)
    plain = {r["anchor"]: r["negative"] for r in read_triplets(tmp_path / "plain").to_pylist()}
    judged_rows = read_triplets(tmp_path / "judged").to_pylist()
    assert plain["gee"] == "aitch", "the student alone takes the teacher's paraphrase as the hardest negative"
    assert {r["anchor"]: r["negative"] for r in judged_rows}["gee"] != "aitch"
    assert all(r["teacher_score"] <= 0.95 + 1e-3 for r in judged_rows)
    assert read_manifest(tmp_path / "judged", 0).bands["nearest_neighbour"].skipped["max_score"] >= 2


def test_with_mined_positives_keeps_the_inputs_fingerprint(corpus, tmp_path):
    mined = judged(corpus, tmp_path)
    changed = with_mined_positives(corpus, mined)
    assert changed.fingerprint() == corpus.fingerprint()
    assert (changed.kind == MINED).sum() == len(mined.rows) and (corpus.kind == MINED).sum() == 0
    assert changed.describe()["anchor_rows"]["mined"] == len(mined.rows)


def test_inspect_shows_the_mined_positives_and_the_teachers_scores(corpus, tmp_path):
    from mining.inspect import format_report, inspect_triplets
    from mining.inspect_html import render_html

    params = MiningParams(range_max=5, mined_positives=True, unsupervised_range_min=0)
    mine(corpus, TableEncoder(STUDENT), tmp_path / "out", params=params, bands=["random", "nearest_neighbour"],
         show_progress=False, teacher=TableEncoder(STUDENT))
    report = inspect_triplets(tmp_path / "out", samples=4)
    rnd = report["rounds"][0]
    assert rnd["mined_positives"]["mined"] == 4 and rnd["mined_positives"]["judge"] == "teacher"
    samples = rnd["mined_positive_samples"]
    assert samples and all(r["positive_source"] == "mined" and r["teacher_positive_score"] > 0.9 for r in samples)
    assert len({r["anchor_id"] for r in samples}) == len(samples)
    text = format_report(report)
    assert "mined positives (teacher judge): 4 of 9 unsupervised anchors (44.4%)" in text
    assert "teacher " in text
    page = render_html(report)
    assert "Mined positives" in page and 'data-negative-id="' + samples[0]["positive_id"] + '"' in page


def test_a_mined_positive_keeps_its_anchors_place_in_the_sampled_order(corpus, tmp_path):
    """Paired sampling across arms: a round with mined positives orders its anchors as the same round without
    them (a mined row is keyed as the unsupervised anchor it stands for); only the positives differ."""
    from curriculum import TripletSampler
    from dataio.hashing import salt_of, splitmix64

    def anchor_order(mined_positives: bool) -> list[str]:
        out = tmp_path / f"mined-{mined_positives}"
        mine(corpus, TableEncoder(STUDENT), out, params=MiningParams(range_max=5, mined_positives=mined_positives),
             bands=["random"], show_progress=False)
        sampler = TripletSampler(out, 0, batch_size=2, seed=7)
        order = np.argsort(splitmix64(sampler._u_key ^ np.uint64(salt_of("anchors", 7, 0, 0))), kind="stable")
        texts = sampler._dictionary.to_pylist()
        return [texts[int(sampler._u_text[u, 0])] for u in order]

    assert anchor_order(True) == anchor_order(False)


def test_both_judges_by_the_mean_of_the_teacher_and_the_student_cosine(corpus, tmp_path):
    # The student sees "alpha one"/"alpha uno" as unrelated, the teacher as a paraphrase: the mean of the two
    # cosines (~0.6) is below 0.9, so only the pair both see (why/zed) is mined; each judge alone differs.
    student = {**STUDENT, "alpha uno": unit(0, 0, 0, 0, 0, 1, 0.3)}
    s = embed_corpus(corpus, TableEncoder(student), tmp_path / "s", show_progress=False)
    t = embed_corpus(corpus, TableEncoder(STUDENT), tmp_path / "t", show_progress=False)
    both = judge_embeddings("both", s, t)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(corpus), 40), rng.integers(0, len(corpus), 40)
    mean = (s.pair_sims(a, b).astype(np.float64) + t.pair_sims(a, b)) / 2
    assert both.pair_sims(a, b) == pytest.approx(mean, abs=2e-3)
    params = MiningParams(range_max=5, mined_positives=True)
    assert pairs_of(corpus, mine_positives(corpus, both, params)) == {("why", "zed"), ("zed", "why")}
    assert ("alpha one", "alpha uno") in pairs_of(corpus, mine_positives(corpus, judge_embeddings("teacher", s, t),
                                                                          params))
    assert judge_embeddings("student", s, t) is s

    def mined_by(judge: str, out: str) -> tuple[set[tuple[str, str]], dict]:
        p = MiningParams(range_max=5, mined_positives=True, positive_judge=judge)
        res = mine(corpus, TableEncoder(student), tmp_path / out, params=p, bands=["random"], show_progress=False,
                   teacher=TableEncoder(STUDENT))
        rows = read_triplets(tmp_path / out).to_pylist()
        return {(r["anchor"], r["positive"]) for r in rows if r["positive_source"] == "mined"}, res.manifest

    pairs, manifest = mined_by("both", "both")
    assert pairs == {("why", "zed"), ("zed", "why")}
    assert manifest.model_extra["mined_positives"]["judge"] == "teacher+student"
    assert manifest.params["positive_judge"] == "both"
    pairs, manifest = mined_by("student", "student")
    assert ("alpha one", "alpha uno") not in pairs and manifest.model_extra["mined_positives"]["judge"] == "student"
    assert ("alpha one", "alpha uno") in mined_by("auto", "auto")[0], "auto: the teacher judges when there is one"


def test_a_judge_that_needs_the_teacher_is_refused_without_one_before_any_work(corpus, tmp_path):
    params = MiningParams(range_max=5, mined_positives=True, positive_judge="both")
    with pytest.raises(InputError, match="positive_judge='both' needs the run's teacher"):
        mine(corpus, TableEncoder(STUDENT), tmp_path / "out", params=params, bands=["random"], show_progress=False)
    assert not (tmp_path / "out").exists()
    # Left at auto, the setting stays out of the recorded parameters (rounds mined before it keep theirs).
    assert "positive_judge" not in MiningParams(mined_positives=True).as_dict()
