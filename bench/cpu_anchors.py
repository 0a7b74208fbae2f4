"""The CPU anchors: sentence-transformers encoding on ONNX Runtime and OpenVINO, fp32, beside its torch path.

`SentenceTransformer(path, backend="onnx" | "openvino")` exports the model through Optimum (optimum-onnx,
optimum-intel) and runs the export in an ONNX Runtime session or an OpenVINO compiled model, with
sentence-transformers' own tokenisation, pooling and normalisation around it. That loader is used where Optimum
imports. Where it does not (optimum-onnx 0.1 needs transformers < 4.58 and optimum-intel 2.2 < 5.6, so neither
loads beside transformers 5.x; sentence-transformers 6 needs transformers >= 5), the same thing is built
directly: the model's transformer exported with `torch.onnx.export` or `openvino.convert_model`, run in the same
runtime, and put in place of the transformer inside the SentenceTransformer, so `encode` and
`mine_hard_negatives` run unchanged around it. Each anchor says which way it was built.

Precision. `torch`, `onnx`, `onnx-O2` and `openvino` are fp32. OpenVINO's CPU plugin computes in bf16 by default
on CPUs with AMX or avx512_bf16, and sentence-transformers' loader keeps that default, so the `openvino` anchor
asks for `INFERENCE_PRECISION_HINT: f32`; `openvino-default` is the plugin's default, a lossy row where the CPU
has bf16. `onnx-O2` is ONNX Runtime's transformer fusions without GELU approximation (what
`export_optimized_onnx_model(..., "O2")` runs through Optimum); `onnx-qint8` is dynamic int8 quantisation (as
`export_dynamic_quantized_onnx_model`), lossy. Only lossless anchors (max |1 - cos| <= 1e-4 against torch and
the same kNN windows) may be the strongest anchor.

Threads: every runtime gets `torch.get_num_threads()` intra-op threads, so all encoders run on the same cores.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ANCHORS = ("torch", "onnx", "onnx-O2", "openvino", "openvino-default", "onnx-qint8")
LOSSY = {"openvino-default": "OpenVINO's default precision (bf16 on CPUs with AMX/avx512_bf16)",
         "onnx-qint8": "int8 dynamic quantisation"}
MAX_COS_DIFF = 1e-4
RUNTIME_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Anchor:
    """A SentenceTransformer on one runtime, and how it was built."""

    name: str
    model: Any
    built_by: str
    precision: str
    build_s: float = 0.0

    @property
    def lossy(self) -> bool:
        return self.name in LOSSY


def parse_backends(text: str) -> list[str]:
    """`--backends` as a list; torch is always measured (the other anchors are checked against it)."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in ANCHORS]
    if unknown:
        raise SystemExit(f"--backends: unknown {', '.join(unknown)}; use some of {', '.join(ANCHORS)}")
    return ["torch"] + [b for b in names if b != "torch"]


def optimum_problem(runtime: str) -> str | None:
    """Why sentence-transformers' own loader cannot run `runtime` here, or None when it can."""
    try:
        if runtime == "onnx":
            import optimum.onnxruntime  # noqa: F401
        else:
            import optimum.intel.openvino  # noqa: F401
    except Exception as exc:  # a missing package, or one built against another transformers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{type(exc).__name__}: {first[:160]}"
    return None


def runtime_versions() -> str:
    """The versions that decide how the anchors are built, and whether Optimum's loaders import here."""
    import importlib.metadata as md

    parts = []
    for dist in ("onnxruntime", "openvino", "optimum", "optimum-onnx", "optimum-intel", "transformers",
                 "sentence-transformers"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} -")
    loaders = "; ".join(f"{rt} loader: {optimum_problem(rt) or 'imports'}" for rt in ("onnx", "openvino"))
    return ", ".join(parts) + f"\nsentence-transformers' Optimum loaders (else the anchor is built directly): {loaders}"


# ------------------------------------------------------------------------------------------ runtimes
def export_onnx(module: torch.nn.Module, example: dict[str, torch.Tensor], output: str, path: Path) -> Path:
    """`module(**example) -> tensor` as an ONNX graph with dynamic batch and sequence axes."""
    names = list(example)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if output == "sentence_embedding" else {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(_Positional(module, names), tuple(example[n] for n in names), str(path),
                          input_names=names, output_names=[output], dynamic_axes=axes, opset_version=17,
                          dynamo=False)
    return path


def onnx_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    return lambda feed: session.run(None, {n: feed[n] for n in wanted})[0]


def optimize_onnx(path: Path, out: Path, config: Any) -> Path:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU kept exact): Optimum's O2, fp32."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False
    optimize_model(str(path), model_type="bert", num_heads=int(config.num_attention_heads),
                   hidden_size=int(config.hidden_size), optimization_options=options,
                   opt_level=1, use_gpu=False).save_model_to_file(str(out))
    return out


def quantize_onnx(path: Path, out: Path) -> Path:
    """int8 weights, activations quantised on the fly: lossy."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def openvino_runner(module: torch.nn.Module, example: dict[str, torch.Tensor], threads: int,
                    precision: str | None) -> Runner:
    """`module` converted by OpenVINO and compiled for the CPU; `precision` None keeps the plugin's default."""
    import openvino as ov

    with torch.no_grad():
        converted = ov.convert_model(module, example_input=example)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(converted, "CPU", config)
    wanted = [i.get_any_name() for i in compiled.inputs]
    return lambda feed: np.array(compiled({n: feed[n] for n in wanted})[0])


def openvino_precision(hint: str | None) -> str:
    import openvino as ov

    """What precision an OpenVINO CPU model computes in: `hint` when given, else the plugin's default here."""
    if hint:
        return hint
    return f"{ov.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').get_type_name()} (OpenVINO's default here)"


class _Positional(torch.nn.Module):
    """Keyword inputs in a fixed order, one tensor out (what the exporters trace)."""

    def __init__(self, module: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.module(**dict(zip(self.names, args)))
        return out if isinstance(out, torch.Tensor) else out[0]


class _LastHidden(torch.nn.Module):
    """A Hugging Face transformer as `last_hidden_state` only (what Optimum exports for feature extraction)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


class RuntimeTransformer(torch.nn.Module):
    """Stands in for the transformer inside a SentenceTransformer: token features in, `last_hidden_state` out,
    computed by an ONNX Runtime or OpenVINO runner (what Optimum's ORTModel/OVModel return)."""

    def __init__(self, run: Runner, names: list[str], config: Any) -> None:
        super().__init__()
        self.run, self.names, self.config = run, names, config
        self.register_buffer("_where", torch.zeros(0), persistent=False)  # SentenceTransformer.device reads it

    def forward(self, **features: Any) -> dict[str, torch.Tensor]:
        feed = {n: features[n].cpu().numpy().astype(np.int64) for n in self.names}
        return {"last_hidden_state": torch.from_numpy(self.run(feed))}


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy computing attention with plain ops, for the ONNX export: ONNX Runtime's optimizer fuses those into
    its Attention kernel, while SDPA exports into a graph it cannot fuse."""
    out = copy.deepcopy(model).eval()
    if hasattr(out, "set_attn_implementation"):
        out.set_attn_implementation("eager")
    return out


# ------------------------------------------------------------------------------------------- anchors
def load_anchor(name: str, model_path: str, work: Path, max_length: int, threads: int) -> Anchor:
    """A SentenceTransformer for anchor `name` on the CPU, max length set. The model folder is copied into
    `work` first: sentence-transformers' loader exports into the folder it is given."""
    import time

    from sentence_transformers import SentenceTransformer

    t = time.perf_counter()
    if name == "torch":
        st = SentenceTransformer(model_path, device="cpu")
        st.max_seq_length = max_length
        return Anchor(name, st, "SentenceTransformer(path)", "fp32", time.perf_counter() - t)
    runtime = "onnx" if name.startswith("onnx") else "openvino"
    folder = work / f"model-{name}"
    shutil.copytree(model_path, folder, dirs_exist_ok=True)
    problem = optimum_problem(runtime)
    precision = "fp32"
    if problem is None and name in ("onnx", "openvino", "openvino-default"):
        kwargs: dict[str, Any] = {}
        if runtime == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
        else:
            ov_config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
            if name == "openvino":
                ov_config["INFERENCE_PRECISION_HINT"] = "f32"
            kwargs = {"ov_config": ov_config}
            precision = openvino_precision(ov_config.get("INFERENCE_PRECISION_HINT"))
        st = SentenceTransformer(str(folder), device="cpu", backend=runtime, model_kwargs=kwargs)
        st.max_seq_length = max_length
        return Anchor(name, st, f'SentenceTransformer(path, backend="{runtime}"), Optimum', precision,
                      time.perf_counter() - t)
    st = SentenceTransformer(str(folder), device="cpu")
    st.max_seq_length = max_length
    module = st[0]
    tokenize = getattr(st, "preprocess", None) or st.tokenize  # `tokenize` before sentence-transformers 6
    features = tokenize(["an example sentence", "and a second, longer example sentence"])
    names = [n for n in RUNTIME_INPUTS if n in features]
    example = {n: features[n].to(torch.int64) for n in names}
    if runtime == "onnx":
        traced = _LastHidden(eager_copy(module.model))
        path = export_onnx(traced, example, "last_hidden_state", folder / "model.onnx")
        if name == "onnx-O2":
            path = optimize_onnx(path, folder / "model_O2.onnx", module.model.config)
        elif name == "onnx-qint8":
            path = quantize_onnx(path, folder / "model_qint8.onnx")
            precision = "int8 weights (lossy)"
        run = onnx_runner(path, threads)
    else:
        hint = "f32" if name == "openvino" else None
        # the model's own attention (SDPA), as Optimum converts it; OpenVINO has its own SDPA kernel
        run = openvino_runner(_LastHidden(copy.deepcopy(module.model).eval()), example, threads, hint)
        precision = openvino_precision(hint)
    config = module.model.config
    module.model = RuntimeTransformer(run, names, config)
    module.model_forward_params = None  # pass every token feature; the runner picks its inputs
    how = "torch.onnx.export + ORT session" if runtime == "onnx" else "openvino.convert_model + compile_model"
    return Anchor(name, st, f"direct: {how} in the SentenceTransformer", precision, time.perf_counter() - t)


def ours_on_runtime(encoder: Any, runtime: str, work: Path, threads: int) -> Any:
    """Our encoder with its forward (transformer + pooling) run by ONNX Runtime (fp32), its tokenisation and
    length-sorted batching unchanged: would moving our encoding onto ONNX Runtime pay? (OpenVINO is the
    product's own setting, `SimCSEEncoder.use_encode_runtime("openvino")`.)"""
    if runtime != "onnx":
        raise ValueError(f"no bench hook for {runtime!r}; OpenVINO is simcse.runtimes")
    enc = copy.copy(encoder)  # shares the weights; only `forward` is set, on the copy's own __dict__
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2178, 102, 0]], dtype=torch.int64)
    example = {"input_ids": ids, "attention_mask": (ids != 0).to(torch.int64)}
    traced = copy.deepcopy(encoder).eval()  # a copy: switching attention must not touch the encoder measured
    if hasattr(traced.backbone, "set_attn_implementation"):
        traced.backbone.set_attn_implementation("eager")  # see eager_copy
    work.mkdir(parents=True, exist_ok=True)
    run = onnx_runner(export_onnx(traced, example, "sentence_embedding", work / "ours.onnx"), threads)

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(run(feed))

    enc.forward = forward
    return enc


# ---------------------------------------------------------------------------------------- agreement
def agreement(ref: np.ndarray, emb: np.ndarray, n_queries: int, k: int) -> dict[str, float]:
    """Max |1 - cos| per sentence against `ref`, and the share of a sample of queries whose top-k neighbour
    ids over the same sentences are the same set (and the same order) with both embeddings."""
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos_diff = float(np.abs(1.0 - (ref * emb).sum(1)).max())
    n = len(ref)
    k = min(k, n - 1)
    queries = np.linspace(0, n - 1, min(n_queries, n)).astype(int)
    same_set = same_order = 0
    for q in queries:
        a, b = _top_k(ref @ ref[q], q, k), _top_k(emb @ emb[q], q, k)
        same_set += set(a) == set(b)
        same_order += bool(np.array_equal(a, b))
    return {"max_cos_diff": cos_diff, "windows_same": same_set / len(queries),
            "windows_same_order": same_order / len(queries), "queries": len(queries), "k": k}


def _top_k(scores: np.ndarray, query: int, k: int) -> np.ndarray:
    scores = scores.copy()
    scores[query] = -np.inf  # the query itself is no neighbour
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]  # by score, ties by id


def is_equal(check: dict[str, float]) -> bool:
    return check["max_cos_diff"] <= MAX_COS_DIFF and check["windows_same"] == 1.0
