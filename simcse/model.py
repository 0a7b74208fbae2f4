"""The SimCSE sentence encoder: a Hugging Face transformer, a pooling, and SimCSE's training-only MLP head.

It loads from a Hugging Face model folder/name or a sentence-transformers folder, encodes fast (tokenise the
whole list once, length-sorted batches, no gradient, bf16 autocast on CUDA), and saves as a
sentence-transformers folder that `SentenceTransformer(path)` loads with no project code. Its helpers live
beside it by job: the folder format (simcse.model_folder), tokenising (simcse.tokenizing), devices and
precision (simcse.devices).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dataio.errors import InputError
from simcse.devices import auto_device, autocast_dtype
from simcse.model_folder import (
    SIMCSE_CONFIG,
    check_weights,
    default_model_path,
    dist_version,
    quiet_transformers,
    read_sentence_transformers_folder,
    write_json,
)
from simcse.tokenizing import TruncatingBackends, pad_batch, position_limit, truncating_backends

if TYPE_CHECKING:
    from simcse.model_card import ModelCardInfo
    from simcse.packing import PackedBatch

POOLINGS = ("cls", "mean", "cls_before_pooler")
ENCODE_CHUNK = 65536  # texts tokenised per chunk in `encode` (the next chunk while this one encodes)
TOKENIZE_THREADS = 8
TOKENIZE_MIN_PER_THREAD = 2048
# Extra files in a saved folder, ignored by sentence-transformers: our settings and the training-only head.
SIMCSE_HEAD = "simcse_head.safetensors"


class MLPHead(nn.Module):
    """SimCSE's projection (dense + tanh) on the [CLS] vector; with `mlp_only_train` it is dropped at test."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class SimCSEEncoder(nn.Module):
    """Transformer + pooling (+ MLP head for `cls` pooling, in training only unless `mlp_only_train=False`).

    `max_length` truncates training inputs (SimCSE uses 32); `encode_max_length` truncates at encode time
    (default: the folder's sentence-transformers `max_seq_length`, else the model's position limit), so
    evaluation sees whole sentences as `SentenceTransformer.encode` does.
    """

    def __init__(self, backbone: nn.Module, tokenizer: Any, *, pooling: str = "cls", mlp_only_train: bool = True,
                 max_length: int = 32, encode_max_length: int | None = None, normalize_output: bool = False,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        if max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.mlp_only_train = mlp_only_train
        self.max_length = int(max_length)
        self.encode_max_length = int(encode_max_length or position_limit(backbone, tokenizer))
        # Saved models keep a Normalize module when the source had one (all-MiniLM-L6-v2 does).
        self.normalize_output = normalize_output
        # "torch", or "openvino" to run `encode`'s batches through an fp32 OpenVINO graph on the CPU
        # (simcse.runtimes; set with `use_encode_runtime`)
        self.encode_runtime = "torch"
        dim = int(backbone.config.hidden_size)
        self.dim = dim
        self.mlp = MLPHead(dim) if pooling == "cls" else None
        self._backend = truncating_backends(tokenizer)
        self.to(auto_device(device if device is None else str(device)))

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, pooling: str | None = None,
                        mlp_only_train: bool = True, max_length: int = 32, trust_remote_code: bool = False,
                        device: str | None = None, encode_max_length: int | None = None) -> SimCSEEncoder:
        """Load a Hugging Face model folder/name or a sentence-transformers folder (None: the offline MiniLM).

        With `pooling=None` the pooling comes from the folder (sentence-transformers pooling config or our
        saved settings), else SimCSE's `cls`.
        """
        from transformers import AutoModel, AutoTokenizer

        source = str(name_or_path) if name_or_path is not None else default_model_path()
        path = Path(source).expanduser()
        st = read_sentence_transformers_folder(path) if path.is_dir() else {}
        if path.is_dir():
            backbone_dir = path / st.get("transformer_path", "")
            if not (backbone_dir / "config.json").exists():
                raise InputError("not a model folder (no config.json); pass a Hugging Face model folder or a "
                                 "sentence-transformers folder", path=path)
            check_weights(backbone_dir)
            if backbone_dir != path:
                check_weights(path)  # the training head (simcse_head.safetensors) sits at the top
            load_from = str(backbone_dir)
        elif path.exists():
            raise InputError("a file, not a model folder; pass a Hugging Face or sentence-transformers folder",
                             path=path)
        elif _looks_like_path(source):
            raise InputError("no such model folder; check the path", path=source)
        else:
            load_from = source
        from safetensors import SafetensorError

        try:
            with quiet_transformers():
                backbone = AutoModel.from_pretrained(load_from, dtype=torch.float32, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
                tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, SafetensorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load a model from here ({first}); pass a model folder or, with hub "
                             f"access, a model name", path=source) from None
        saved = st.get("simcse", {})
        chosen = pooling or saved.get("pooling") or st.get("pooling") or "cls"
        if chosen == "cls" and st.get("dense") is not None:
            mlp_only_train = False  # the folder applies the head at inference, so keep doing so
        model = cls(backbone, tokenizer, pooling=chosen, mlp_only_train=mlp_only_train, max_length=max_length,
                    encode_max_length=encode_max_length or st.get("max_seq_length"),
                    normalize_output=bool(st.get("normalize", False)), device=device)
        if model.mlp is not None:
            _load_head(model.mlp, path, st)
        model.source = source
        return model

    # ----------------------------------------------------------------------------------------- forward
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def uses_mlp(self) -> bool:
        return self.mlp is not None and (self.training or not self.mlp_only_train)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence embeddings [batch, dim] (not normalised)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        else:
            pooled = hidden[:, 0]
        if self.uses_mlp():
            pooled = self.mlp(pooled)
        return pooled

    def packing_position_offset(self) -> int | None:
        """Where position ids start if this backbone can take packed rows (see simcse.packing), else None."""
        from simcse.packing import PACKABLE_ATTENTION, PACKABLE_MODEL_TYPES

        config = self.backbone.config
        model_type = getattr(config, "model_type", "")
        if model_type not in PACKABLE_MODEL_TYPES or getattr(config, "_attn_implementation", None) not in \
                PACKABLE_ATTENTION:
            return None
        offset = PACKABLE_MODEL_TYPES[model_type]
        if offset is None:  # RoBERTa family: positions start after the padding index
            offset = int(config.pad_token_id) + 1
        return offset

    def forward_packed(self, packed: PackedBatch) -> torch.Tensor:
        """Pooled embeddings [n, dim] (float32) of packed sequences: one forward, no padding between them."""
        from simcse.packing import block_diagonal_mask, pool_packed

        sdpa = self.backbone.config._attn_implementation == "sdpa"
        mask = block_diagonal_mask(packed.segments, None if sdpa else next(self.parameters()).dtype)
        out = self.backbone(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pooled = pool_packed(hidden, packed, "mean" if self.pooling == "mean" else "cls")
        if self.uses_mlp():
            pooled = self.mlp(pooled)
        return pooled

    # -------------------------------------------------------------------------------------- tokenising
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids (with special tokens, truncated, unpadded) for many texts in one tokenizer call."""
        limit = int(max_length or self.max_length)
        texts = [str(t) for t in texts]
        if not texts:
            return []
        if self._backend is not None:
            backend = self._backend.get(limit)
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            return [e.ids for e in encode(texts)]
        return self.tokenizer(texts, truncation=True, max_length=limit, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]

    def make_tokenizer(self, max_length: int | None = None) -> Callable[[Sequence[str]], list[list[int]]]:
        """A tokenising function with its own Rust tokenizer copy, safe to run on a background thread."""
        limit = int(max_length or self.max_length)
        if self._backend is None:
            return lambda texts: self.tokenize(texts, limit)
        backend = TruncatingBackends(self.tokenizer).get(limit)
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)

        def tokenize(texts: Sequence[str]) -> list[list[int]]:
            return [e.ids for e in encode([str(t) for t in texts])] if len(texts) else []

        return tokenize

    # -------------------------------------------------------------------------------------- encoding
    def encode(self, texts: str | Sequence[str], batch_size: int = 256, show_progress_bar: bool = False,
               normalize_embeddings: bool = True, convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               max_length: int | None = None) -> np.ndarray | torch.Tensor:
        """Embeddings [len(texts), dim] as float32, in input order.

        The keywords are sentence-transformers' (`SentenceTransformer.encode`), so code written for either
        encoder calls both the same way; `normalize_embeddings` defaults to True here (unit vectors, what
        every caller of this project wants). `convert_to_tensor=True` (or `convert_to_numpy=False`) returns a
        torch tensor on the encoder's device instead of a numpy array. `max_length` overrides
        `encode_max_length` for this call.

        Fast path: tokenise ahead (chunks of `ENCODE_CHUNK` texts, split over threads, the next chunk while
        the current one encodes), sort each chunk by token length so batches carry almost no padding, run
        under inference_mode (bf16/fp16 autocast on CUDA).
        """
        as_tensor = convert_to_tensor or not convert_to_numpy
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            empty = torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
            return empty if as_tensor else empty.cpu().numpy()
        from simcse.runtimes import encode_forward

        limit = int(max_length or self.encode_max_length)
        starts = list(range(0, len(texts), ENCODE_CHUNK))
        device = self.device
        dtype = autocast_dtype(device)
        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=device)
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode", unit="sent")
        was_training = self.training
        self.eval()
        forward = encode_forward(self)
        try:
            with ThreadPoolExecutor(1) as ahead, torch.inference_mode(), \
                    torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                future = ahead.submit(self._tokenize_parallel, texts[:ENCODE_CHUNK], limit)
                for k, first in enumerate(starts):
                    ids = future.result()
                    if k + 1 < len(starts):
                        nxt = starts[k + 1]
                        future = ahead.submit(self._tokenize_parallel, texts[nxt:nxt + ENCODE_CHUNK], limit)
                    order = np.argsort([-len(x) for x in ids], kind="stable")
                    for start in range(0, len(order), batch_size):
                        idx = order[start:start + batch_size]
                        input_ids, mask = pad_batch([ids[i] for i in idx], self.pad_id)
                        emb = forward(input_ids.to(device, non_blocking=True), mask.to(device, non_blocking=True))
                        emb = emb.float()
                        if normalize_embeddings:
                            emb = torch.nn.functional.normalize(emb, dim=-1)
                        out[torch.from_numpy(idx + first).to(device)] = emb
                        if bar is not None:
                            bar.update(len(idx))
        finally:
            self.train(was_training)
            if bar is not None:
                bar.close()
        return out if as_tensor else out.cpu().numpy()

    def use_encode_runtime(self, runtime: str) -> SimCSEEncoder:
        """Encode through `runtime` from now on: "torch" (default) or "openvino" (fp32 on the CPU, converted
        on the first `encode` and again whenever the weights change; CUDA encoding stays on torch)."""
        from simcse.runtimes import check_encode_runtime

        self.encode_runtime = check_encode_runtime(runtime)
        return self

    def _tokenize_parallel(self, texts: list[str], limit: int) -> list[list[int]]:
        """`tokenize` split over threads: the Rust tokenizer releases the GIL, so this scales with cores
        even where TOKENIZERS_PARALLELISM=false (set by the CLI, for fork safety) turns its own pool off."""
        workers = min(TOKENIZE_THREADS, os.cpu_count() or 1)
        if self._backend is None or workers < 2 or len(texts) < 4 * TOKENIZE_MIN_PER_THREAD:
            return self.tokenize(texts, limit)
        size = max(TOKENIZE_MIN_PER_THREAD, -(-len(texts) // (workers * 4)))
        parts = [texts[i:i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(workers) as pool:
            return [ids for part in pool.map(lambda p: self.tokenize(p, limit), parts) for ids in part]

    # --------------------------------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A stable content hash of the weights used at inference, pooling and lengths (cache key)."""
        h = hashlib.sha256()
        settings = {"pooling": self.pooling, "mlp_at_inference": self.mlp is not None and not self.mlp_only_train,
                    "max_length": self.max_length, "encode_max_length": self.encode_max_length,
                    "normalize_output": self.normalize_output}
        h.update(json.dumps(settings, sort_keys=True).encode())
        state = self.state_dict()
        for name in sorted(state):
            if name.startswith("mlp.") and not settings["mlp_at_inference"]:
                continue
            tensor = state[name].detach().to("cpu").contiguous()
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return h.hexdigest()[:32]

    # -------------------------------------------------------------------------------------------- save
    def save(self, path: str | os.PathLike, card: ModelCardInfo | None = None) -> Path:
        """Write a sentence-transformers folder (safetensors) with its model card, atomically; returns its path.

        `SentenceTransformer(path)` loads it with no project code and gives the same embeddings as `encode`.
        The training-only MLP head is kept beside it (ignored by sentence-transformers) so training can go on.
        `README.md` is the model card (simcse.model_card): the base model and its licence, from where this
        encoder was loaded, plus whatever `card` says (data, loss, curriculum, metrics).
        """
        from dataio.atomic import atomic_dir
        from simcse.card_writer import write_model_card
        from simcse.model_card import ModelCardInfo, describe_base

        path = Path(path)
        source = getattr(self, "source", None)  # set by from_pretrained; unknown for an encoder built by hand
        info = (describe_base(source) if source else ModelCardInfo()).merged(card)
        with atomic_dir(path) as tmp:
            self._write_folder(tmp)
            write_model_card(tmp, info, location=path)
        return path

    def _write_folder(self, folder: Path) -> None:
        from safetensors.torch import save_file

        with quiet_transformers():
            self.backbone.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        (folder / "1_Pooling").mkdir()
        write_json(folder / "1_Pooling" / "config.json", {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling != "mean",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        mlp_at_inference = self.mlp is not None and not self.mlp_only_train
        if mlp_at_inference:
            dense_dir = folder / "2_Dense"
            dense_dir.mkdir()
            write_json(dense_dir / "config.json", {"in_features": self.dim, "out_features": self.dim, "bias": True,
                                                    "activation_function": "torch.nn.modules.activation.Tanh"})
            save_file({"linear.weight": self.mlp.dense.weight.detach().cpu().contiguous(),
                       "linear.bias": self.mlp.dense.bias.detach().cpu().contiguous()},
                      str(dense_dir / "model.safetensors"))
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        if self.normalize_output:
            n = len(modules)
            (folder / f"{n}_Normalize").mkdir()
            modules.append({"idx": n, "name": str(n), "path": f"{n}_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        write_json(folder / "modules.json", modules)
        write_json(folder / "sentence_bert_config.json",
                    {"max_seq_length": self.encode_max_length, "do_lower_case": False})
        import transformers

        write_json(folder / "config_sentence_transformers.json", {
            "__version__": {"sentence_transformers": dist_version("sentence-transformers"),
                            "transformers": transformers.__version__, "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
        if self.mlp is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()},
                      str(folder / SIMCSE_HEAD))
        write_json(folder / SIMCSE_CONFIG, {"pooling": self.pooling, "mlp_only_train": self.mlp_only_train,
                                             "max_length": self.max_length,
                                             "encode_max_length": self.encode_max_length})


# --------------------------------------------------------------------------------------------- helpers
def _looks_like_path(source: str) -> bool:
    """A local path rather than a hub name (`name` or `org/name`)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def _load_head(mlp: MLPHead, path: Path, st: dict[str, Any]) -> None:
    """Restore the MLP head from a folder's Dense module or our saved head; keep the fresh one otherwise."""
    from safetensors.torch import load_file

    dense = st.get("dense")
    if dense is not None:
        check_weights(Path(dense))
        weights = dense / "model.safetensors"
        if not weights.exists():
            raise InputError("the Dense module has no model.safetensors; save it again with sentence-transformers "
                             ">= 3 (safetensors by default)", path=dense)
        state = load_file(str(weights))
        mlp.dense.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    elif (path / SIMCSE_HEAD).exists():
        mlp.load_state_dict(load_file(str(path / SIMCSE_HEAD)))
