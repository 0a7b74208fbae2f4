"""Write a mined round in the triplet contract without running mining: fixtures for tests and benchmarks
of the consumers (sampler, flows). The layout and columns are exactly what `mining` writes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curriculum.dataset import MANIFEST_NAME, round_dir, sha256_file

SCHEMA = pa.schema([
    ("anchor_id", pa.string()), ("anchor", pa.string()),
    ("positive_id", pa.string()), ("positive", pa.string()),
    ("negative_id", pa.string()), ("negative", pa.string()),
    ("band", pa.string()),
    ("anchor_positive_sim", pa.float32()), ("anchor_negative_sim", pa.float32()),
    ("negative_rank", pa.int32()), ("round", pa.int32()),
])


def _ids(*columns: pa.Array) -> list[pa.Array]:
    # Text-derived ids, shared by the columns: the same text gets the same id, as in a deduplicated corpus.
    codes = pa.concat_arrays(list(columns)).dictionary_encode()
    ids = pc.take(pa.array([f"t{i}" for i in range(len(codes.dictionary))], type=pa.string()), codes.indices)
    out, start = [], 0
    for column in columns:
        out.append(ids.slice(start, len(column)))
        start += len(column)
    return out


def band_table(round_: int, band: str, anchor: Sequence[str] | pa.Array, positive: Sequence[str | None] | pa.Array,
               negative: Sequence[str] | pa.Array, anchor_negative_sim: Sequence[float] | np.ndarray) -> pa.Table:
    """One band's rows with every contract column (ids derived from texts, ranks -1)."""
    anchor = pa.array(anchor, type=pa.string())
    positive = pa.array(positive, type=pa.string())
    negative = pa.array(negative, type=pa.string())
    n = len(anchor)
    anchor_id, positive_id, negative_id = _ids(anchor, pc.coalesce(positive, anchor), negative)
    return pa.Table.from_arrays([
        anchor_id, anchor, positive_id, positive, negative_id, negative,
        pa.array([band] * n, type=pa.string()),
        pa.array(np.full(n, 0.8, dtype=np.float32)), pa.array(np.asarray(anchor_negative_sim, dtype=np.float32)),
        pa.array(np.full(n, -1, dtype=np.int32)), pa.array(np.full(n, round_, dtype=np.int32)),
    ], schema=SCHEMA)


def write_round(root: str | Path, round_: int, tables: Mapping[str, pa.Table], *, rows_per_file: int | None = None,
                empty_bands: Sequence[str] = (), params: Mapping | None = None) -> Path:
    """Write `tables` (band -> `band_table(...)`) as `round=<r>/band=<b>/part-<n>.parquet`, manifest last."""
    rdir = round_dir(root, round_)
    files, bands = [], {}
    for band, table in tables.items():
        bdir = rdir / f"band={band}"
        bdir.mkdir(parents=True, exist_ok=True)
        step = rows_per_file or max(table.num_rows, 1)
        for part, start in enumerate(range(0, table.num_rows, step)):
            path = bdir / f"part-{part}.parquet"
            tmp = path.with_name(f".{path.name}.tmp")
            pq.write_table(table.slice(start, step), tmp)
            os.replace(tmp, path)
            rows = min(step, table.num_rows - start)
            files.append({"path": f"band={band}/{path.name}", "rows": rows, "sha256": sha256_file(path), "band": band})
        sims = table.column("anchor_negative_sim").to_numpy()
        bands[band] = {"rows": table.num_rows, "mean_anchor_negative_sim": float(sims.mean()) if len(sims) else None,
                       "skipped": {}}
    for band in empty_bands:
        bands[band] = {"rows": 0, "mean_anchor_negative_sim": None, "skipped": {"no_source": 1}}
    manifest = {"round": round_, "files": files, "bands": bands,
                "model_fingerprint": hashlib.sha256(b"synthetic-model").hexdigest()[:16],
                "corpus_fingerprint": hashlib.sha256(b"synthetic-corpus").hexdigest()[:16],
                "params": dict(params or {"synthetic": True}),
                "created": datetime.now(timezone.utc).isoformat()}
    path = rdir / MANIFEST_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path
