"""The CPU anchors of bench/mine_throughput.py (bench/cpu_anchors.py): sentence-transformers on ONNX Runtime and
OpenVINO, and our encoder's forward on ONNX Runtime, give the torch fp32 embeddings of the offline MiniLM within the
bench's equality bar; the equality check itself rejects what is not equal; the shared model folder is never
written. Skipped where the runtimes (the `cpu-anchors` extra) are not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import cpu_anchors as anchors

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument on a stage.",
             "The stock market fell sharply on Monday.", "Shares dropped at the start of the week.",
             "A cat sleeps on the warm windowsill.", "lol cant believe this game last night",
             "Photosynthesis turns light into chemical energy in plants."]


def _folder_state(path: str) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in Path(path).rglob("*")}


def _cos_diff(a: np.ndarray, b: np.ndarray) -> float:
    return anchors.agreement(a, b, n_queries=len(a), k=2)["max_cos_diff"]


def test_agreement_accepts_equal_and_rejects_moved_neighbours():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    same = anchors.agreement(emb, emb.copy(), n_queries=10, k=5)
    assert same["max_cos_diff"] < 1e-6 and same["windows_same"] == 1.0 and anchors.is_equal(same)
    # a near tie for the query's nearest neighbour, flipped by a change far below the cos bar: the window
    # check catches what the cos bar lets through
    t = 0.5
    tie = np.array([[1, 0, 0], [np.cos(t), np.sin(t), 0], [np.cos(t + 1e-4), 0, np.sin(t + 1e-4)]], np.float32)
    flipped = tie.copy()
    flipped[2] = [np.cos(t - 1e-4), 0, np.sin(t - 1e-4)]
    check = anchors.agreement(tie, flipped, n_queries=1, k=1)
    assert check["max_cos_diff"] <= anchors.MAX_COS_DIFF
    assert check["windows_same"] == 0.0 and not anchors.is_equal(check)
    far = emb + rng.normal(scale=0.05, size=emb.shape).astype(np.float32)
    assert not anchors.is_equal(anchors.agreement(emb, far, n_queries=10, k=5))  # cos differs by more than 1e-4


def test_parse_backends_always_measures_torch_and_refuses_unknown_names():
    assert anchors.parse_backends("onnx,openvino") == ["torch", "onnx", "openvino"]
    assert anchors.parse_backends("openvino,torch") == ["torch", "openvino"]
    with pytest.raises(SystemExit, match="onnxx"):
        anchors.parse_backends("torch,onnxx")


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_sentence_transformers_on_a_runtime_gives_the_torch_embeddings(name, minilm_path, tmp_path,
                                                                        one_torch_thread_module):
    pytest.importorskip("onnxruntime" if name == "onnx" else "openvino")
    if name == "onnx":
        pytest.importorskip("onnx")
    before = _folder_state(minilm_path)
    torch_st = anchors.load_anchor("torch", minilm_path, tmp_path, 32, 1).model
    anchor = anchors.load_anchor(name, minilm_path, tmp_path, 32, 1)
    assert anchor.precision in ("fp32", "f32") and not anchor.lossy
    ref = torch_st.encode(SENTENCES, normalize_embeddings=True)
    got = anchor.model.encode(SENTENCES, normalize_embeddings=True)
    assert _cos_diff(ref, got) <= anchors.MAX_COS_DIFF
    assert _folder_state(minilm_path) == before  # exports go to the copy in tmp_path


@pytest.mark.e2e
def test_our_encoder_on_onnx_runtime_gives_its_torch_embeddings(minilm_path, tmp_path, one_torch_thread_module):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mining.encoders import load_encoder

    ours = load_encoder(minilm_path, max_length=32, device="cpu")
    attention = ours.backbone.config._attn_implementation
    hooked = anchors.ours_on_runtime(ours, "onnx", tmp_path, 1)
    got = hooked.encode(SENTENCES, batch_size=4)
    ref = ours.encode(SENTENCES, batch_size=4)
    assert _cos_diff(ref, got) <= anchors.MAX_COS_DIFF
    assert ours.backbone.config._attn_implementation == attention  # the export worked on a copy
    assert "forward" not in vars(ours)


@pytest.mark.e2e
def test_sentence_transformers_own_loader_where_optimum_imports(minilm_path, tmp_path, one_torch_thread_module):
    """sentence-transformers' `backend="openvino"` through Optimum, fp32 asked for (where optimum-intel
    imports beside this transformers)."""
    problem = anchors.optimum_problem("openvino")
    if problem:
        pytest.skip(f"optimum-intel does not import here: {problem}")
    torch_st = anchors.load_anchor("torch", minilm_path, tmp_path, 32, 1).model
    anchor = anchors.load_anchor("openvino", minilm_path, tmp_path, 32, 1)
    assert "Optimum" in anchor.built_by
    got = anchor.model.encode(SENTENCES, normalize_embeddings=True)
    assert _cos_diff(torch_st.encode(SENTENCES, normalize_embeddings=True), got) <= anchors.MAX_COS_DIFF
