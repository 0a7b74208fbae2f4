"""Write a mined round in the triplet contract without running mining: fixtures for tests and benchmarks
of the consumers (sampler, flows). Rows go through the contract's own writer (`dataio.triplets`), so the
layout, columns and manifest are exactly what `mining` writes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataio.triplets import SCHEMA, TripletWriter


def _ids(*columns: pa.Array) -> list[pa.Array]:
    # Text-derived ids, shared by the columns: the same text gets the same id, as in a deduplicated corpus.
    codes = pa.concat_arrays(list(columns)).dictionary_encode()
    ids = pc.take(pa.array([f"t{i}" for i in range(len(codes.dictionary))], type=pa.string()), codes.indices)
    out, start = [], 0
    for column in columns:
        out.append(ids.slice(start, len(column)))
        start += len(column)
    return out


def band_table(anchor: Sequence[str] | pa.Array, positive: Sequence[str | None] | pa.Array,
               negative: Sequence[str] | pa.Array, anchor_negative_sim: Sequence[float] | np.ndarray) -> pa.Table:
    """One band's rows with every column of the contract's files (ids derived from texts, ranks -1); the round
    and band are given to `write_round`, which puts them in the path."""
    anchor = pa.array(anchor, type=pa.string())
    positive = pa.array(positive, type=pa.string())
    negative = pa.array(negative, type=pa.string())
    n = len(anchor)
    anchor_id, positive_id, negative_id = _ids(anchor, pc.coalesce(positive, anchor), negative)
    return pa.Table.from_arrays([
        anchor_id, anchor, positive_id, positive, negative_id, negative,
        pa.array(np.full(n, 0.8, dtype=np.float32)), pa.array(np.asarray(anchor_negative_sim, dtype=np.float32)),
        pa.array(np.full(n, -1, dtype=np.int32)),
        pc.if_else(pc.is_null(positive), "anchor", "pair"),
        pa.nulls(n, pa.float32()), pa.nulls(n, pa.float32()),
    ], schema=SCHEMA)


def write_round(root: str | Path, round_: int, tables: Mapping[str, pa.Table], *, rows_per_file: int | None = None,
                empty_bands: Sequence[str] = (), params: Mapping | None = None) -> Path:
    """Write `tables` (band -> `band_table(...)`) as `round=<r>/band=<b>/part-<n>.parquet`, manifest last."""
    largest = max((t.num_rows for t in tables.values()), default=1)
    writer = TripletWriter(root, round_, model_fingerprint=hashlib.sha256(b"synthetic-model").hexdigest()[:16],
                           corpus_fingerprint=hashlib.sha256(b"synthetic-corpus").hexdigest()[:16],
                           params=dict(params or {"synthetic": True}), rows_per_file=rows_per_file or max(largest, 1))
    writer.begin()
    bands = {}
    for band, table in tables.items():
        writer.write_band(band, table.num_rows, lambda start, stop, t=table: t.slice(start, stop - start))
        sims = table.column("anchor_negative_sim").to_numpy()
        bands[band] = {"rows": table.num_rows, "mean_anchor_negative_sim": float(sims.mean()) if len(sims) else None,
                       "skipped": {}}
    for band in empty_bands:
        bands[band] = {"rows": 0, "mean_anchor_negative_sim": None, "skipped": {"no_source": 1}}
    return writer.finish(bands)
