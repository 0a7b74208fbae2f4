"""Embeddings cache (keys, resume after a failure) and the kNN backends (exact agreement, measured IVF recall)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mining.corpus import load_corpus
from mining.embeddings import embed_corpus, encode_texts, model_fingerprint
from mining.index import choose_backend, knn
from mining.testing import HashEncoder, toy_sentences
from mining.torch_search import exact_torch


@pytest.fixture
def corpus(tmp_path):
    sents = toy_sentences(300, seed=2, unique=False)
    (tmp_path / "c.txt").write_text("\n".join(sents) + "\n", encoding="utf-8")
    return load_corpus([tmp_path / "c.txt"])


def test_cached_matrix_is_float16_unit_norm_and_reused(corpus, tmp_path):
    enc = HashEncoder(16)
    e1 = embed_corpus(corpus, enc, tmp_path / "cache", chunk_size=64, show_progress=False)
    assert e1.matrix.dtype == np.float16 and e1.matrix.shape == (len(corpus), 16) and not e1.cached
    assert np.allclose(np.linalg.norm(e1.matrix.astype(np.float32), axis=1), 1, atol=2e-3)
    assert isinstance(e1.matrix, np.memmap)
    folder = e1.path.parent
    assert json.loads((folder / "ids.json").read_text()) == corpus.ids
    calls = enc.calls
    e2 = embed_corpus(corpus, enc, tmp_path / "cache", show_progress=False)
    assert e2.cached and enc.calls == calls and np.array_equal(e1.matrix, e2.matrix)
    e3 = embed_corpus(corpus, HashEncoder(16, salt="other"), tmp_path / "cache", show_progress=False)
    assert not e3.cached and e3.path != e1.path


def test_a_cache_changed_on_disk_is_encoded_again_not_used(corpus, tmp_path, caplog):
    """Negated rows decode as a valid matrix: only the sha256 written with the cache can tell."""
    enc = HashEncoder(16)
    first = embed_corpus(corpus, enc, tmp_path / "cache", show_progress=False)
    expected = np.array(first.matrix)
    path = first.path
    del first
    tampered = np.load(path, mmap_mode="r+")
    tampered[:10] = -tampered[:10]
    tampered.flush()
    del tampered
    calls = enc.calls
    with caplog.at_level("WARNING", logger="mining.embeddings"):
        again = embed_corpus(corpus, enc, tmp_path / "cache", show_progress=False)
    assert not again.cached and enc.calls > calls
    assert np.array_equal(np.asarray(again.matrix), expected)
    assert "changed on disk" in caplog.text
    assert embed_corpus(corpus, enc, tmp_path / "cache", show_progress=False).cached  # the rewritten cache is good


def test_interrupted_encoding_resumes_from_last_chunk(corpus, tmp_path):
    class Failing(HashEncoder):
        def encode(self, texts, batch_size=32, **keywords):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().encode(texts, batch_size, **keywords)

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus, Failing(16), tmp_path / "cache", chunk_size=100, show_progress=False)
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and not (folders[0] / "meta.json").exists()
    assert json.loads((folders[0] / "progress.json").read_text())["done"] == 200
    enc = HashEncoder(16)
    resumed = embed_corpus(corpus, enc, tmp_path / "cache", chunk_size=100, show_progress=False)
    assert enc.encoded == len(corpus) - 200
    fresh = embed_corpus(corpus, HashEncoder(16), None, show_progress=False)
    assert np.array_equal(np.asarray(resumed.matrix), fresh.matrix)


def test_encode_texts_calls_encode_with_sentence_transformers_keywords():
    """One call for every encoder (SimCSEEncoder and SentenceTransformer take the same keywords), and whatever
    comes back (a list, a tensor, unnormalised) becomes unit float32 rows."""
    import torch

    class Plain:
        def __init__(self, out):
            self.out, self.keywords = out, None

        def encode(self, texts, **keywords):
            self.keywords = keywords
            return self.out(texts)

    for make in (lambda texts: [[3.0, 4.0] for _ in texts], lambda texts: torch.tensor([[3.0, 4.0]] * len(texts))):
        enc = Plain(make)
        out = encode_texts(enc, ["a", "b"], batch_size=7)
        assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0.6, 0.8]])
        assert enc.keywords == {"batch_size": 7, "show_progress_bar": False, "normalize_embeddings": True,
                                "convert_to_numpy": True}


def test_model_fingerprint_sources():
    import torch

    assert model_fingerprint(HashEncoder(8)) == "hash-encoder-8-"
    assert model_fingerprint(object(), "given") == "given"
    lin = torch.nn.Linear(2, 2)
    fp = model_fingerprint(lin)
    with torch.no_grad():
        lin.weight[0, 0] += 1
    assert model_fingerprint(lin) != fp
    with pytest.raises(TypeError, match="fingerprint"):
        model_fingerprint(object())


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_exact_backends_agree_with_brute_force():
    emb = unit_rows(700, 24)
    q = np.array([0, 5, 699, 333])
    brute = emb[q].astype(np.float32) @ emb.astype(np.float32).T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    for backend in ("torch", "faiss-flat"):
        res = knn(emb, q, 10, backend)
        assert res.backend == backend and res.recall is None
        for row, exp, sc in zip(res.indices, expected, brute):
            assert np.allclose(np.sort(sc[row])[::-1], np.sort(sc[exp])[::-1], atol=1e-4)
        assert (res.indices[:, 0] == q).all()  # each query finds itself first
    # blocked search over the pool gives the same answer as one block
    s1, _i1 = exact_torch(emb, q, 10, block_bytes=1 << 30)
    s2, _i2 = exact_torch(emb, q, 10, block_bytes=4 * 64 * 16)
    assert np.allclose(s1, s2, atol=1e-5)


def test_k_larger_than_pool_is_padded():
    emb = unit_rows(5, 8)
    res = knn(emb, np.arange(5), 8, "torch")
    assert res.indices.shape == (5, 8) and (res.indices[:, 5:] == -1).all() and np.isneginf(res.scores[:, 5:]).all()


def test_ivf_recall_is_measured_and_returned():
    # clustered data, as real embeddings are
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 32))
    x = centers[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 32))
    emb = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    q = np.arange(0, 4000, 7)
    res = knn(emb, q, 10, "faiss-ivf", nprobe=4, recall_sample=200)
    assert res.backend == "faiss-ivf" and 0 < res.recall <= 1
    assert res.details["nlist"] >= 16 and res.details["nprobe"] == 4 and res.details["recall_sample"] == 200
    # the reported recall is the real one: recompute it on all queries
    exact = knn(emb, q, 10, "torch").indices
    true = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(res.indices, exact)])
    assert abs(true - res.recall) < 0.05
    wide = knn(emb, q, 10, "faiss-ivf", nprobe=64, recall_sample=200)
    assert wide.recall >= res.recall
    # the clustered torch search: same contract, its own measured recall
    clustered = knn(emb, q, 10, "torch-ivf", nprobe=2, recall_sample=200)
    true = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(clustered.indices, exact)])
    assert clustered.backend == "torch-ivf" and abs(true - clustered.recall) < 0.05
    assert 0 < clustered.details["scanned_fraction"] < 1
    assert knn(emb, q, 10, "torch-ivf", nprobe=clustered.details["nlist"]).recall == pytest.approx(1.0, abs=1e-3)


def test_auto_choice_by_size_and_hardware():
    assert choose_backend(10_000, 10_000, 384, cuda=False, faiss_gpus=0)[0] == "faiss-flat"
    assert choose_backend(1_000_000, 1_000_000, 384, cuda=False, faiss_gpus=0)[0] == "torch-ivf"
    assert choose_backend(1_000_000, 1_000_000, 384, cuda=False, faiss_gpus=1)[0] == "faiss-flat"


def clustered_rows(n: int = 4000, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, dim))
    x = centers[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


@pytest.mark.parametrize("backend", ["faiss-ivf", "torch-ivf"])
def test_ivf_nprobe_is_raised_until_the_recall_target(backend):
    emb = clustered_rows()
    q = np.arange(0, 4000, 7)
    res = knn(emb, q, 10, backend, recall_sample=200, recall_target=0.95)
    tried = res.details["nprobe_tried"]
    assert res.details["nprobe_tuned"] and tried[-1][0] == res.details["nprobe"]
    assert tried[-1][1] >= 0.95 and all(r < 0.95 for _, r in tried[:-1])  # the smallest nprobe that reaches it
    exact = knn(emb, q, 10, "torch").indices
    true = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(res.indices, exact)])
    assert true >= 0.93 and res.recall >= 0.95  # on every query, not just the sample it was tuned on
    fixed = knn(emb, q, 10, backend, recall_sample=200, recall_target=None)
    assert not fixed.details["nprobe_tuned"]


def test_quantized_ivf_candidates_are_rescored_exactly():
    emb = clustered_rows()
    q = np.arange(0, 4000, 11)
    res = knn(emb, q, 10, "faiss-ivf", ivf_codec="sq8", nprobe=1000, recall_sample=100)
    assert res.details["refined"] and res.details["codec"] == "sq8"
    full = emb.astype(np.float32)
    exact = np.einsum("qkd,qd->qk", full[res.indices], full[q])
    np.testing.assert_allclose(res.scores, exact, atol=1e-5)  # 8-bit codes alone are off by ~1e-3
    assert res.recall == pytest.approx(1.0, abs=1e-3)
