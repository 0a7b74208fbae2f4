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
