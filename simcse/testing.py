"""A tiny random BERT folder for fast tests (here and in the other packages' tests); never for real use."""

from __future__ import annotations

import os
from pathlib import Path


def build_tiny_model(folder: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                     dropout: float = 0.1) -> Path:
    """Write a 2-layer BERT (random weights, the offline MiniLM's WordPiece tokenizer) as an HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from simcse.model import _quiet_transformers, default_model_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    with _quiet_transformers():
        BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
