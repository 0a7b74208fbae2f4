"""A tiny random BERT folder for fast tests (here and in the other packages' tests); never for real use."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def build_tiny_model(folder: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                     dropout: float = 0.1) -> Path:
    """Write a 2-layer BERT (random weights, the offline MiniLM's WordPiece tokenizer) as an HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from simcse.model import default_model_path
    from simcse.model_folder import quiet_transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    with quiet_transformers():
        BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with `n` torch threads, then restore: tiny test models gain nothing from more, and on a shared
    machine extra threads spin against other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
