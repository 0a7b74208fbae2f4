"""Packed rows give the same embeddings as a padded batch, with less padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simcse.model import SimCSEEncoder
from simcse.packing import block_diagonal_mask, pack_sequences
from simcse.tokenizing import pad_batch

TEXTS = ["a b c d e f g h i j k l", "x", "hello world", "one two three four", "z y",
         "the quick brown fox jumps over the lazy dog", "ok"] * 2


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread: two threads fighting other load were ~3x slower per step."""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=40))
def test_packing_places_every_token_once_within_rows(lengths):
    ids = [[(i * 7 + j) % 50 + 1 for j in range(n)] for i, n in enumerate(lengths)]
    p = pack_sequences(ids, pad_id=0)
    assert p.input_ids.shape[1] == max(lengths)
    flat_ids, flat_pos, seg = p.input_ids.view(-1), p.position_ids.view(-1), p.segments.view(-1)
    for i, seq in enumerate(ids):
        start = int(p.starts[i])
        assert flat_ids[start:start + len(seq)].tolist() == seq
        assert flat_pos[start:start + len(seq)].tolist() == list(range(len(seq)))
        assert (seg == i).sum().item() == len(seq)
        assert start // p.input_ids.shape[1] == (start + len(seq) - 1) // p.input_ids.shape[1]  # one row
    assert (seg >= 0).sum().item() == sum(lengths)
    # best-fit decreasing never needs more rows than one per sequence, and fills them well
    assert p.input_ids.shape[0] <= len(lengths)
    assert p.input_ids.shape[0] <= 2 * (sum(lengths) // max(lengths) + 1)


def test_mask_is_block_diagonal_and_padding_sees_only_itself():
    seg = torch.tensor([[0, 0, 1, -1], [2, 2, 2, -1]])
    m = block_diagonal_mask(seg)[:, 0]
    assert m[0, 0].tolist() == [True, True, False, False]
    assert m[0, 2].tolist() == [False, False, True, False]
    assert m[0, 3].tolist() == [False, False, False, True]
    additive = block_diagonal_mask(seg, torch.float32)[:, 0]
    assert additive[0, 0, 0] == 0 and additive[0, 0, 2] == torch.finfo(torch.float32).min


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_forward_equals_padded_forward(tiny, attention, pooling):
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu", pooling=pooling)
    enc.backbone.config._attn_implementation = attention
    enc.eval()
    ids = enc.tokenize(TEXTS)
    packed = pack_sequences(ids, enc.pad_id, position_offset=enc.packing_position_offset())
    assert packed.padding_ratio() < 0.7 * pad_batch(ids, enc.pad_id)[0].numel() / sum(map(len, ids))
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_packed(packed), enc(*pad_batch(ids, enc.pad_id)), atol=1e-5,
                                   rtol=1e-5)


def test_packed_gradients_match_padded(tiny):
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu", pooling="mean")
    enc.eval()  # no dropout: the two paths must then agree on gradients too
    ids = enc.tokenize(TEXTS[:6])
    enc.forward_packed(pack_sequences(ids, enc.pad_id)).pow(2).sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad()
    enc(*pad_batch(ids, enc.pad_id)).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        if name in packed_grads:
            torch.testing.assert_close(packed_grads[name], p.grad, atol=1e-5, rtol=1e-4)


def test_roberta_positions_start_after_the_padding_index(tmp_path):
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from simcse.model import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path())
    config = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path / "roberta")
    tok.save_pretrained(tmp_path / "roberta")
    enc = SimCSEEncoder.from_pretrained(str(tmp_path / "roberta"), device="cpu", pooling="mean")
    assert enc.packing_position_offset() == tok.pad_token_id + 1
    enc.eval()
    ids = enc.tokenize(TEXTS)
    with torch.no_grad():
        packed = enc.forward_packed(pack_sequences(ids, enc.pad_id, position_offset=enc.packing_position_offset()))
        np.testing.assert_allclose(packed.numpy(), enc(*pad_batch(ids, enc.pad_id)).numpy(), atol=1e-5)


def test_unknown_backbones_are_not_packed(tiny):
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu")
    enc.backbone.config._attn_implementation = "flash_attention_2"
    assert enc.packing_position_offset() is None
