"""Encoding on OpenVINO instead of torch, on the CPU, in fp32: an optional runtime for `SimCSEEncoder.encode`.

The encoder's forward (transformer + pooling) is converted once per set of weights and compiled for the CPU
with fp32 precision asked for explicitly (OpenVINO's CPU plugin otherwise computes in bf16 on CPUs with AMX or
AVX-512 BF16, which changes nearest-neighbour windows). Tokenisation and length-sorted batching stay the
encoder's. The weights are checked before each `encode`: a model trained in place since the conversion is
converted again, so a stale graph never encodes. Measured against torch in docs/benchmarks.md ("The strongest
CPU anchor"); torch stays the default.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

import numpy as np
import torch

from dataio.errors import InputError

ENCODE_RUNTIMES = ("torch", "openvino")
# encoder -> its compiled graph; kept outside the module so copying or saving an encoder never touches it
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# What a runtime needs installed beside torch, and how to get it.
_RUNTIME_PACKAGES = {"openvino": "openvino"}
RUNTIME_INSTALL_HINT = "pip install 'simcse-curriculum[cpu-anchors]'"


class RuntimeEncoder(Protocol):
    """What a runtime needs of `simcse.model.SimCSEEncoder` (named by what it does, so this module never imports
    the encoder that imports it): a module called with (input_ids, attention_mask), its runtime, device and pad id."""

    encode_runtime: str
    device: torch.device
    pad_id: int

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Any: ...

    def buffers(self) -> Any: ...


def missing_runtime_package(runtime: str) -> str | None:
    """The package `runtime` needs that is not installed here, else None. Looked up, not imported, so a config
    check costs no import of a large library."""
    import importlib.util

    package = _RUNTIME_PACKAGES.get(runtime)
    return package if package is not None and importlib.util.find_spec(package) is None else None


def check_encode_runtime(runtime: str) -> str:
    """`runtime` when it is known and usable here, else one clear InputError."""
    if runtime not in ENCODE_RUNTIMES:
        raise InputError(f"unknown encode runtime {runtime!r}; use one of {', '.join(ENCODE_RUNTIMES)}")
    package = missing_runtime_package(runtime)
    if package is not None:
        raise InputError(f"encode runtime {runtime!r} needs the {package} package; {RUNTIME_INSTALL_HINT} or "
                         f"choose torch")
    return runtime


def weights_key(module: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (optimizer steps included)."""
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))


class OpenVinoForward:
    """`encoder.forward` (eval mode) compiled by OpenVINO for the CPU, fp32: token ids and mask in, pooled
    embeddings out, as torch tensors."""

    def __init__(self, encoder: RuntimeEncoder, threads: int | None = None) -> None:
        import copy

        import openvino as ov

        self.key = weights_key(encoder)
        traced = copy.deepcopy(encoder).eval()  # eval: the training-only head and dropout stay out of the graph
        ids = torch.tensor([[encoder.pad_id + 1] * 4, [encoder.pad_id + 1] * 3 + [encoder.pad_id]])
        example = {"input_ids": ids, "attention_mask": (torch.arange(4) < torch.tensor([[4], [3]])).long()}
        with torch.no_grad():
            converted = ov.convert_model(traced, example_input=example)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self._compiled = ov.Core().compile_model(converted, "CPU", config)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self._compiled({"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
        return torch.from_numpy(np.array(out))


def encode_forward(encoder: RuntimeEncoder) -> Any:
    """What `encode` runs each batch through: the encoder itself, or its OpenVINO graph (CPU only), converted
    again when the weights changed since the last conversion."""
    if encoder.encode_runtime == "torch" or encoder.device.type != "cpu":
        return encoder
    compiled = _COMPILED.get(encoder)
    if compiled is None or compiled.key != weights_key(encoder):
        compiled = _COMPILED[encoder] = OpenVinoForward(encoder)
    return compiled
