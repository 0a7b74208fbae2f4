"""Batches: length-bucketed, no repeated text inside a batch, deterministic; data loading rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataio.errors import InputError
from simcse.batching import BucketedBatches, triplet_batches, unsupervised_batches
from simcse.data import load_sentences, load_triplets


def _texts_of(batch: dict, i: int) -> set[str]:
    texts = {batch["anchor"][i]}
    for name in ("positive", "negative"):
        if name in batch:
            value = batch[name][i]
            texts.update(value if isinstance(value, list) else [value])
    return texts


def _assert_no_repeats(batch: dict) -> None:
    seen: set[str] = set()
    for i in range(len(batch["anchor"])):
        texts = _texts_of(batch, i)
        assert seen.isdisjoint(texts), f"repeated text in a batch: {seen & texts}"
        seen |= texts


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([f"s{i}" * (i % 7 + 1) for i in range(30)]), min_size=2, max_size=120),
       st.integers(2, 9), st.integers(0, 3))
def test_every_row_lands_once_and_no_batch_repeats_a_text(texts, batch_size, seed):
    batches = unsupervised_batches(texts, batch_size, seed=seed, bucket_batches=2)
    rows = sorted(i for b in range(len(batches)) for i in batches.row_indices(b))
    for b in batches:
        _assert_no_repeats(b)
        assert 2 <= len(b["anchor"]) <= batch_size
    # rows are dropped only where they cannot have an in-batch negative (a text repeated everywhere)
    assert len(rows) == len(set(rows))
    distinct = len(set(texts))
    if distinct >= 2:
        assert len(rows) >= len(texts) - max(texts.count(t) for t in set(texts))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 150), st.integers(3, 17), st.integers(0, 5))
def test_distinct_rows_all_land(n, batch_size, seed):
    # (with batch_size 2 an odd row out has no donor batch and is dropped, as documented)
    texts = [f"row {i} " + "y" * (i * 7 % 23) for i in range(n)]
    batches = unsupervised_batches(texts, batch_size, seed=seed, bucket_batches=3)
    rows = sorted(i for b in range(len(batches)) for i in batches.row_indices(b))
    assert rows == list(range(n))


def test_triplet_batches_keep_rows_together_and_carry_extra_columns():
    n = 50
    cols = {"anchor": [f"a{i}" for i in range(n)], "positive": [f"p{i}" for i in range(n)],
            "negative": [[f"n{i}", f"m{i}"] for i in range(n)], "alpha": [float(i) for i in range(n)],
            "band": ["random"] * n}
    batches = BucketedBatches(cols, 8, seed=1)
    seen = 0
    for b in batches:
        for a, p, neg, alpha in zip(b["anchor"], b["positive"], b["negative"], b["alpha"]):
            i = int(a[1:])
            assert (p, neg, alpha) == (f"p{i}", [f"n{i}", f"m{i}"], float(i))
        seen += len(b["anchor"])
    assert seen == n


def test_shared_premises_never_meet_in_one_batch():
    # SNLI-style: each premise has several hypotheses; a premise twice in a batch is a false negative
    anchors = [f"premise {i // 3}" for i in range(60)]
    batches = triplet_batches(anchors, [f"hyp {i}" for i in range(60)], [f"con {i}" for i in range(60)], 8,
                              seed=0)
    for b in batches:
        assert len(set(b["anchor"])) == len(b["anchor"])
    assert sum(len(b["anchor"]) for b in batches) == 60


def test_batches_are_deterministic_for_a_seed_and_reshuffle_per_epoch():
    texts = [f"sentence number {i} " + "x" * (i % 13) for i in range(200)]
    a, b = unsupervised_batches(texts, 16, seed=3), unsupervised_batches(texts, 16, seed=3)
    assert list(a) == list(b)
    assert list(unsupervised_batches(texts, 16, seed=4)) != list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


def test_length_bucketing_cuts_padding():
    rng = np.random.default_rng(0)
    texts = ["w" * int(n) + str(i) for i, n in enumerate(rng.integers(5, 300, size=2000))]

    def padded(batches) -> int:
        return sum(max(map(len, b["anchor"])) * len(b["anchor"]) for b in batches)

    bucketed = padded(unsupervised_batches(texts, 32, seed=0))
    random_order = padded(unsupervised_batches(texts, 32, seed=0, bucket_batches=1))
    assert bucketed < 0.6 * random_order


def test_bad_batch_arguments():
    with pytest.raises(ValueError):
        BucketedBatches({"anchor": ["a", "b"], "positive": ["x"]}, 2)
    with pytest.raises(ValueError):
        BucketedBatches({"anchor": ["a", "b"]}, 1)


def test_load_sentences_drops_empty_and_repeats(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one\n\n  \ntwo\none\nthree\n", encoding="utf-8")
    corpus = load_sentences(path)
    assert corpus.texts == ["one", "two", "three"]
    assert (corpus.dropped_empty, corpus.duplicates) == (2, 1)
    csv = tmp_path / "c.csv"
    csv.write_text("id,sentence\n1,alpha\n2,beta\n", encoding="utf-8")
    assert load_sentences(csv).texts == ["alpha", "beta"]


def test_load_sentences_errors(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(InputError, match="no sentences"):
        load_sentences(empty)
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"b\.txt: line 2.*UTF-8"):
        load_sentences(bad)
    with pytest.raises(InputError, match="no such file"):
        load_sentences(tmp_path / "missing.txt")


@pytest.mark.parametrize("header", ["anchor,positive,negative", "sent0,sent1,hard_neg",
                                    "premise,entailment,contradiction"])
def test_load_triplets_accepts_the_three_layouts(tmp_path, header):
    path = tmp_path / "t.csv"
    path.write_text(f"{header}\na,b,c\nd,e,f\na,b,c\ng,,i\nj,k,j\n", encoding="utf-8")
    t = load_triplets(path)
    assert (t.anchor, t.positive, t.negative) == (["a", "d"], ["b", "e"], ["c", "f"])
    assert t.dropped == {"empty": 1, "duplicate": 1, "negative_repeats_anchor_or_positive": 1}


def test_load_triplets_missing_column_names_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sent0,sent1\na,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="column 'negative'.*hard_neg"):
        load_triplets(path)
    pairs = load_triplets(path, require_negative=False)
    assert pairs.negative is None and pairs.anchor == ["a"]


def test_shared_nli_file_loads(shared_data):
    t = load_triplets(shared_data / "nli" / "triplets.csv")
    assert len(t) > 7000 and t.negative is not None
