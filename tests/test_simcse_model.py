"""The encoder: loading, pooling, dropout views, fast encode, sentence-transformers save, fingerprint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataio.errors import InputError
from simcse.losses import unsup_simcse_loss
from simcse.model import SimCSEEncoder
from simcse.testing import build_tiny_model
from simcse.tokenizing import pad_batch

SENTENCES = ["A man is playing a guitar.", "Two dogs run across a snowy field while children watch them.",
             "A woman slices an onion.", "x", "The stock market fell sharply on Monday after the report.",
             "A man plays the guitar."]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread: two threads fighting other load were ~3x slower per step."""


@pytest.fixture(scope="module")
def tiny_no_dropout(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny0") / "bert", dropout=0.0))


def _load(path: str, **kwargs) -> SimCSEEncoder:
    torch.manual_seed(0)
    return SimCSEEncoder.from_pretrained(path, device="cpu", **kwargs)


def test_hf_folder_defaults_to_simcse_cls_pooling_with_a_training_only_head(tiny):
    enc = _load(tiny)
    assert enc.pooling == "cls" and enc.mlp is not None and enc.mlp_only_train
    ids, mask = pad_batch(enc.tokenize(SENTENCES[:2]), enc.pad_id)
    enc.eval()
    with torch.no_grad():
        cls_vec = enc.backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        torch.testing.assert_close(enc(ids, mask), cls_vec)  # test time: [CLS] before the head
        enc.train()
        enc.backbone.eval()  # dropout off, head on: training output is the MLP of the same vector
        torch.testing.assert_close(enc(ids, mask), torch.tanh(enc.mlp.dense(cls_vec)))
    assert _load(tiny, pooling="mean").mlp is None
    assert _load(tiny, pooling="cls_before_pooler").mlp is None


def test_two_dropout_views_differ_and_eval_views_match(tiny):
    enc = _load(tiny)
    ids, mask = pad_batch(enc.tokenize(SENTENCES * 2), enc.pad_id)
    enc.train()
    z = enc(ids, mask)
    n = len(SENTENCES)
    assert not torch.allclose(z[:n], z[n:]), "the same sentence twice in one forward must get two dropout masks"
    enc.eval()
    with torch.no_grad():
        z = enc(ids, mask)
    torch.testing.assert_close(z[:n], z[n:])


def test_without_dropout_the_views_are_identical_and_the_positive_is_trivially_first(tiny_no_dropout):
    enc = _load(tiny_no_dropout)
    enc.train()
    ids, mask = pad_batch(enc.tokenize(SENTENCES * 2), enc.pad_id)
    z = enc(ids, mask)
    n = len(SENTENCES)
    torch.testing.assert_close(z[:n], z[n:])
    _, acc = unsup_simcse_loss(z[:n], z[n:], 0.05)
    assert acc.item() == 1.0  # cos(h, h) = 1 is the largest possible logit: nothing to learn (paper, sec. 3)
    cos = torch.nn.functional.normalize(z[:n], dim=-1) @ torch.nn.functional.normalize(z[n:], dim=-1).T
    assert torch.allclose(cos.diagonal(), torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_before_pooler"])
def test_encode_is_order_preserving_and_padding_free(tiny, pooling):
    enc = _load(tiny, pooling=pooling)
    batch = enc.encode(SENTENCES, batch_size=4)
    assert batch.dtype == np.float32 and batch.shape == (len(SENTENCES), enc.dim)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([enc.encode([s])[0] for s in SENTENCES])
    np.testing.assert_allclose(batch, one_by_one, atol=2e-5)
    raw = enc.encode(SENTENCES, normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert enc.encode([]).shape == (0, enc.dim)


def test_encode_truncates_at_encode_max_length_not_the_training_length(tiny):
    enc = _load(tiny, max_length=8, encode_max_length=64)
    long = " ".join(["word"] * 40)
    assert len(enc.tokenize([long])[0]) == 8
    assert len(enc.tokenize([long], enc.encode_max_length)[0]) == 42
    short = _load(tiny, max_length=8, encode_max_length=8)
    assert not np.allclose(enc.encode([long]), short.encode([long]))


@pytest.mark.parametrize("pooling,mlp_only_train", [("cls", True), ("cls", False), ("mean", True)])
def test_saved_folder_loads_in_sentence_transformers_with_the_same_embeddings(tiny, tmp_path, pooling,
                                                                              mlp_only_train):
    from sentence_transformers import SentenceTransformer

    enc = _load(tiny, pooling=pooling, mlp_only_train=mlp_only_train)
    with torch.no_grad():
        for p in enc.parameters():  # move off the initialisation so a missed module would show
            p.add_(0.01 * torch.randn_like(p))
    out = enc.save(tmp_path / "model")
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not [p for p in tmp_path.iterdir() if p.name != "model"], "no temporary folder left behind"
    st = SentenceTransformer(str(out), device="cpu")
    ours = enc.encode(SENTENCES)
    theirs = st.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == (["Transformer", "Pooling", "Dense"] if not mlp_only_train else ["Transformer", "Pooling"])


def test_encode_takes_sentence_transformers_keywords(tiny, tmp_path):
    """Code written for `SentenceTransformer.encode` calls `SimCSEEncoder.encode` the same way and gets the same
    embeddings (mining and evaluation call both without looking at the signature)."""
    from sentence_transformers import SentenceTransformer

    enc = _load(tiny, pooling="mean")
    st = SentenceTransformer(str(enc.save(tmp_path / "model")), device="cpu")
    keywords = {"batch_size": 4, "show_progress_bar": False, "normalize_embeddings": True, "convert_to_numpy": True}
    np.testing.assert_allclose(enc.encode(SENTENCES, **keywords), st.encode(SENTENCES, **keywords), atol=1e-5)
    raw = enc.encode(SENTENCES, normalize_embeddings=False, convert_to_tensor=True)
    assert isinstance(raw, torch.Tensor) and raw.shape == (len(SENTENCES), enc.dim)
    np.testing.assert_allclose(raw.numpy(), st.encode(SENTENCES, convert_to_numpy=True), atol=1e-5)
    assert isinstance(enc.encode([], convert_to_numpy=False), torch.Tensor)
    with pytest.raises(TypeError):
        enc.encode(SENTENCES, show_progress=False)  # the old name is gone, not silently ignored


def test_reload_restores_pooling_head_and_fingerprint(tiny, tmp_path):
    enc = _load(tiny)
    with torch.no_grad():
        enc.mlp.dense.weight.add_(1.0)
    enc.save(tmp_path / "m")
    torch.manual_seed(123)  # a different fresh head, which the saved one must replace
    again = SimCSEEncoder.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert again.pooling == "cls" and again.mlp_only_train
    torch.testing.assert_close(again.mlp.dense.weight, enc.mlp.dense.weight)
    assert again.fingerprint() == enc.fingerprint()
    np.testing.assert_allclose(again.encode(SENTENCES), enc.encode(SENTENCES), atol=1e-6)
    enc.save(tmp_path / "m")  # saving over an existing folder replaces it atomically
    assert SimCSEEncoder.from_pretrained(str(tmp_path / "m"), device="cpu").fingerprint() == enc.fingerprint()


def test_fingerprint_tracks_weights_pooling_and_length(tiny):
    a, b = _load(tiny), _load(tiny)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 32
    assert _load(tiny, pooling="mean").fingerprint() != a.fingerprint()
    assert _load(tiny, max_length=16).fingerprint() != a.fingerprint()
    with torch.no_grad():
        b.backbone.embeddings.word_embeddings.weight[5, 0] += 1e-3
    assert b.fingerprint() != a.fingerprint()
    c = _load(tiny)
    with torch.no_grad():  # the training-only head does not change what encode returns: same key
        c.mlp.dense.weight.add_(1.0)
    assert c.fingerprint() == a.fingerprint()


def test_bad_model_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such model folder"):
        SimCSEEncoder.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        SimCSEEncoder.from_pretrained(str(tmp_path / "empty"))
    (tmp_path / "file.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="not a model folder"):
        SimCSEEncoder.from_pretrained(str(tmp_path / "file.csv"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(InputError, match="cannot load a model"):
        SimCSEEncoder.from_pretrained(str(broken))


def test_unknown_pooling_is_refused(tiny):
    with pytest.raises(InputError, match="unknown pooling"):
        _load(tiny, pooling="max")


def test_offline_minilm_reads_mean_pooling_and_matches_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer

    enc = SimCSEEncoder.from_pretrained(device="cpu")
    assert enc.pooling == "mean" and enc.normalize_output and enc.mlp is None
    assert enc.encode_max_length == 256 and enc.max_length == 32
    st = SentenceTransformer(minilm_path, device="cpu")
    np.testing.assert_allclose(enc.encode(SENTENCES), st.encode(SENTENCES), atol=1e-5)


def test_chunked_and_threaded_tokenising_give_the_same_embeddings(tiny, monkeypatch):
    import simcse.model as model_module

    enc = _load(tiny, pooling="mean")
    texts = [f"{s} number {i}" for i, s in enumerate(SENTENCES * 40)]
    whole = enc.encode(texts, batch_size=16)
    monkeypatch.setattr(model_module, "ENCODE_CHUNK", 37)
    monkeypatch.setattr(model_module, "TOKENIZE_MIN_PER_THREAD", 5)
    monkeypatch.setattr(model_module.os, "cpu_count", lambda: 4)
    assert enc._tokenize_parallel(texts, 64) == enc.tokenize(texts, 64)
    np.testing.assert_allclose(enc.encode(texts, batch_size=16), whole, atol=1e-6)
