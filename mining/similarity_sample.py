"""Similarities of a sample of rows, for rounds whose bands need no embeddings of the pool.

The random and nli_contradiction bands pick their negatives without looking at any vector; the embeddings of
the whole pool serve them only to fill the similarity columns and the band statistics (the curriculum's
measured difficulty). A run that trains on such bands alone (in-batch negatives over the random band, or the
NLI contradictions) would encode its whole corpus every round for numbers nobody trains on. With
`MiningParams.similarity_sample` set, only a seeded sample of each band's rows is encoded and scored: those rows
carry their similarities, the others null, and each band's statistics say how many rows they come from
(`similarity_rows`). The draw is counter-based (seed, round, band, anchor and positive ids), so it repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dataio.hashing import salt_of, splitmix64
from mining.band_context import BandContext, BandResult
from mining.embeddings import encode_texts


def sample_rows(ctx: BandContext, result: BandResult, size: int) -> np.ndarray:
    """Positions of up to `size` rows of `result`, the same for the same ids, seed and round."""
    if result.rows <= size:
        return np.arange(result.rows)
    salt = np.uint64(salt_of(ctx.seed, ctx.round, result.band, "similarity_sample"))
    keys = splitmix64(ctx.row_key[result.row] ^ splitmix64(ctx.id_key[result.negative] ^ salt))
    return np.sort(np.argsort(keys, kind="stable")[:size])


def add_sampled_similarities(ctx: BandContext, results: Mapping[str, BandResult], encoder: Any, size: int,
                             batch_size: int) -> dict[str, int]:
    """Encode the texts of a sample of every band's rows (once each) and set their similarities; the other rows
    get NaN (written as null). Returns the texts encoded per band's sample, for the manifest."""
    picks = {band: sample_rows(ctx, res, size) for band, res in results.items()}
    needed = np.unique(np.concatenate([np.concatenate([res.anchor[i], res.positive[i], res.negative[i]])
                                       for band, res in results.items() for i in (picks[band],)] or [[]])
                       ).astype(np.int64)
    vectors = encode_texts(encoder, [ctx.corpus.texts[i] for i in needed], batch_size) if len(needed) else None

    def sims(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # `needed` is sorted: a pool index's row is its rank
        if not len(a):
            return np.empty(0, dtype=np.float32)
        return np.einsum("ij,ij->i", vectors[np.searchsorted(needed, a)], vectors[np.searchsorted(needed, b)])

    for band, res in results.items():
        pick = picks[band]
        res.anchor_negative_sim = np.full(res.rows, np.nan, dtype=np.float32)
        res.anchor_positive_sim = np.full(res.rows, np.nan, dtype=np.float32)
        res.anchor_negative_sim[pick] = sims(res.anchor[pick], res.negative[pick])
        res.anchor_positive_sim[pick] = sims(res.anchor[pick], res.positive[pick])
        res.similarity_rows = len(pick)
    return {"texts_encoded": int(len(needed)), "rows_per_band": int(size)}
