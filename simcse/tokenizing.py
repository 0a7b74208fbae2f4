"""Tokenising helpers of the encoder: truncating copies of the fast tokenizer, the length limit, padding.

The encoder tokenises with the Rust tokenizer directly (one call for many texts, no Python per text) and needs
one copy of it per truncation length (training's `max_length`, encoding's `encode_max_length`), so the Hugging
Face tokenizer it was loaded with is never mutated and a background thread can own a copy of its own.
`pad_batch` turns token id lists into the padded (input_ids, attention_mask) the transformer takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one: (input_ids, attention_mask) as int64 tensors."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


class TruncatingBackends:
    """Copies of the fast (Rust) tokenizer, one per truncation length, so the HF tokenizer is never mutated."""

    def __init__(self, tokenizer: Any) -> None:
        self._source = tokenizer.backend_tokenizer.to_str()
        self._by_length: dict[int, Any] = {}

    def get(self, max_length: int) -> Any:
        backend = self._by_length.get(max_length)
        if backend is None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(self._source)
            backend.no_padding()
            backend.enable_truncation(max_length)
            self._by_length[max_length] = backend
        return backend


def truncating_backends(tokenizer: Any) -> TruncatingBackends | None:
    """`TruncatingBackends` of a fast tokenizer; None for a slow (Python) one, which is called as it is."""
    if getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "backend_tokenizer", None) is not None:
        return TruncatingBackends(tokenizer)
    return None


def position_limit(backbone: nn.Module, tokenizer: Any) -> int:
    """The longest input the model takes: its position embeddings, the tokenizer's limit, and at most 512."""
    limits = [512]
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style models reserve two positions for the padding offset.
        limits.append(int(positions) - (2 if getattr(backbone.config, "model_type", "") in
                                          ("roberta", "xlm-roberta", "camembert") else 0))
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 10**6:
        limits.append(int(tok_limit))
    return min(limits)
