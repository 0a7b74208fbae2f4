"""The teacher's vectors kept by text across runs (mining.vector_store), and `embed_corpus` through such a store:
a later pool encodes only the texts no earlier one did, a killed encoding resumes from the store, a damaged
segment is dropped and re-encoded, never read."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import mining.vector_store as vector_store
from dataio.errors import InputError
from mining.corpus import MiningCorpus, load_corpus
from mining.embeddings import embed_corpus
from mining.vector_store import TextVectorStore


class CountingEncoder:
    """A deterministic encoder (a text's vector depends on the text alone) that records what it encoded."""

    def __init__(self, dim: int = 8, fail_after: int | None = None) -> None:
        self.dim, self.fail_after, self.encoded = dim, fail_after, []

    def fingerprint(self) -> str:
        return f"counting-{self.dim}"

    def encode(self, texts, **_kwargs) -> np.ndarray:
        if self.fail_after is not None and len(self.encoded) + len(texts) > self.fail_after:
            raise RuntimeError("killed mid-encoding")
        self.encoded.extend(texts)
        seeds = [int.from_bytes(vector_store.text_key(t)[:4], "little") for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32)


def _corpus(texts: list[str]) -> MiningCorpus:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return load_corpus([path])


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"tweet number {i} about thing {i % 7}" for i in range(start, start + n)]


def test_vectors_are_kept_by_text_and_read_back_by_a_new_store(tmp_path):
    store = TextVectorStore(tmp_path / "vectors", "model-a")
    vectors = np.arange(12, dtype=np.float16).reshape(3, 4)
    store.add(["a", "b", "c"], vectors)
    store.add(["c", "d"], np.full((2, 4), 9, dtype=np.float16))  # "c" is kept: its first vector stays
    again = TextVectorStore(tmp_path / "vectors", "model-a")
    got, found = again.lookup(["d", "x", "a", "c", "a"])
    assert found.tolist() == [True, False, True, True, True]
    assert got[0].tolist() == [9] * 4 and got[2].tolist() == vectors[0].tolist()
    assert got[3].tolist() == vectors[2].tolist() and got[4].tolist() == vectors[0].tolist()
    assert len(again) == 4
    other, found_other = TextVectorStore(tmp_path / "vectors", "model-b").lookup(["a"])
    assert other is None and not found_other.any(), "another model's vectors are never read"


def test_a_changed_segment_is_dropped_with_a_warning_and_its_texts_are_missing(tmp_path, caplog):
    store = TextVectorStore(tmp_path, "m")
    store.add(["a", "b"], np.ones((2, 4), dtype=np.float16))
    store.add(["c"], np.ones((1, 4), dtype=np.float16))
    first = sorted(store.folder.glob("seg-*.safetensors"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # a bit flip in the vectors
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mining.vector_store"):
        _, found = TextVectorStore(tmp_path, "m").lookup(["a", "b", "c"])
    assert found.tolist() == [False, False, True]
    assert "sha256 differs" in caplog.text and not first.exists()


def test_a_store_of_another_model_under_the_same_name_is_refused(tmp_path):
    store = TextVectorStore(tmp_path, "m")
    store.add(["a"], np.ones((1, 4), dtype=np.float16))
    (store.folder / "model.json").write_text(json.dumps({"model_fingerprint": "someone else"}), encoding="utf-8")
    with pytest.raises(InputError, match="another model"):
        TextVectorStore(tmp_path, "m").lookup(["a"])


def test_segments_are_merged_into_one_when_there_are_many(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_store, "MAX_SEGMENTS", 2)
    store = TextVectorStore(tmp_path, "m")
    for i in range(3):
        store.add([f"t{i}"], np.full((1, 4), i, dtype=np.float16))
    assert len(list(store.folder.glob("seg-*.safetensors"))) == 1
    got, found = TextVectorStore(tmp_path, "m").lookup(["t0", "t1", "t2"])
    assert found.all() and got[:, 0].tolist() == [0, 1, 2]
    assert not list(store.folder.glob(".*")), "no temporary file left"


def test_a_first_pool_through_an_empty_store_is_the_plain_encoding(tmp_path):
    texts = _texts(50)
    plain = embed_corpus(_corpus(texts), CountingEncoder(), tmp_path / "plain", chunk_size=16, show_progress=False)
    encoder = CountingEncoder()
    stored = embed_corpus(_corpus(texts), encoder, tmp_path / "cache", chunk_size=16, show_progress=False,
                          store=tmp_path / "vectors")
    assert np.array_equal(np.asarray(stored.matrix), np.asarray(plain.matrix))
    assert encoder.encoded == texts
    meta = json.loads((stored.path.parent / "meta.json").read_text(encoding="utf-8"))
    assert (meta["encoded"], meta["from_store"]) == (50, 0)
    # The pool's own cache works as before: the same pool again encodes nothing.
    assert embed_corpus(_corpus(texts), CountingEncoder(), tmp_path / "cache", show_progress=False,
                        store=tmp_path / "vectors").cached


def test_a_later_pool_encodes_only_the_texts_no_earlier_pool_had(tmp_path):
    first = embed_corpus(_corpus(_texts(40)), CountingEncoder(), tmp_path / "night1", show_progress=False,
                         store=tmp_path / "vectors")
    grown = _texts(5, start=40) + _texts(40)  # 5 new texts, before the old ones
    encoder = CountingEncoder()
    second = embed_corpus(_corpus(grown), encoder, tmp_path / "night2", show_progress=False,
                          store=tmp_path / "vectors")
    assert encoder.encoded == _texts(5, start=40)
    assert np.array_equal(np.asarray(second.matrix)[5:], np.asarray(first.matrix))
    fresh = embed_corpus(_corpus(grown), CountingEncoder(), None, show_progress=False)
    # An encoder whose vectors depend on the text alone: the same matrix as encoding the whole pool.
    assert np.array_equal(np.asarray(second.matrix), np.asarray(fresh.matrix))


def test_a_killed_encoding_resumes_from_the_store(tmp_path):
    texts = _texts(48)
    with pytest.raises(RuntimeError, match="killed"):
        embed_corpus(_corpus(texts), CountingEncoder(fail_after=20), tmp_path / "cache", chunk_size=16,
                     show_progress=False, store=tmp_path / "vectors")
    encoder = CountingEncoder()
    out = embed_corpus(_corpus(texts), encoder, tmp_path / "cache", chunk_size=16, show_progress=False,
                       store=tmp_path / "vectors")
    assert encoder.encoded == texts[16:], "the chunk finished before the kill is not encoded again"
    assert out.matrix.shape == (48, 8)


def test_the_store_must_be_the_encoders(tmp_path):
    with pytest.raises(ValueError, match="vector store holds"):
        embed_corpus(_corpus(_texts(4)), CountingEncoder(), tmp_path, show_progress=False,
                     store=TextVectorStore(tmp_path / "v", "another model"))
