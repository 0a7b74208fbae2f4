"""`SimCSEEncoder.encode` on OpenVINO (simcse.runtimes): the torch embeddings within 1e-4 cos, a graph that
follows the weights when they change, and unknown runtimes refused before any model is loaded. Skipped where
openvino is not installed (the `cpu-anchors` extra), except the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataio.errors import InputError
from simcse.model import SimCSEEncoder

SENTENCES = ["A man is playing a guitar.", "Two dogs run across a snowy field while children watch them.",
             "A woman slices an onion.", "x", "The stock market fell sharply on Monday after the report."]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread."""


def _max_cos_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(1.0 - (a * b).sum(1)).max())  # encode returns unit vectors


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_openvino_encode_gives_the_torch_embeddings(tiny, pooling):
    pytest.importorskip("openvino")
    enc = SimCSEEncoder.from_pretrained(tiny, pooling=pooling, device="cpu")
    ref = enc.encode(SENTENCES, batch_size=2)
    got = enc.use_encode_runtime("openvino").encode(SENTENCES, batch_size=2)
    assert enc.encode_runtime == "openvino"
    assert _max_cos_diff(ref, got) <= 1e-4


def test_openvino_graph_follows_weights_changed_in_place(tiny):
    pytest.importorskip("openvino")
    enc = SimCSEEncoder.from_pretrained(tiny, pooling="mean", device="cpu").use_encode_runtime("openvino")
    before = enc.encode(SENTENCES)
    with torch.no_grad():  # what an optimizer step does: the same tensors, new values
        for p in enc.backbone.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after = enc.encode(SENTENCES)
    torch_after = enc.use_encode_runtime("torch").encode(SENTENCES)
    assert _max_cos_diff(before, torch_after) > 1e-3  # the change is visible
    assert _max_cos_diff(after, torch_after) <= 1e-4  # and the OpenVINO graph was rebuilt for it


def test_unknown_runtime_is_refused_before_loading(tmp_path):
    from mining.encoders import load_encoder

    with pytest.raises(InputError, match="unknown encode runtime 'onnx'"):
        load_encoder(tmp_path / "no-such-model", encode_runtime="onnx")  # the runtime is checked first


def test_mine_refuses_an_unknown_encode_runtime_in_one_line(tmp_path, capsys):
    from flows.cli.app import main
    from mining.testing import toy_sentences

    (tmp_path / "a.txt").write_text("\n".join(toy_sentences(60, seed=5)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["mine", "--out", str(out), "--quiet", "--corpus", str(tmp_path / "a.txt"),
                 "--encode-runtime", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown encode runtime 'tensorrt'" in err[0]
    assert not out.exists()
