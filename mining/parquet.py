"""Writing a mined round in the triplet contract (`dataio.triplets`): band results become Parquet rows.

The contract's `TripletWriter` owns the layout, the atomic writes, the file metadata and the manifest; this
module only turns a `BandResult` (pool indices and similarities) into rows of the contract's schema, a row
group at a time, so a band of millions of rows is never materialised as text at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dataio.triplets import SCHEMA, ManifestFile, TripletWriter
from mining.band_context import BandResult
from mining.corpus import POSITIVE_SOURCES, MiningCorpus


def _optional_floats(values: np.ndarray | None, start: int, stop: int) -> pa.Array:
    """Rows `start:stop` of a float32 column, or nulls where the round did not compute it (no teacher)."""
    if values is None:
        return pa.nulls(stop - start, pa.float32())
    return pa.array(values[start:stop].astype(np.float32))


class RoundWriter:
    """Writes one mined round: `begin()` (round marked incomplete), `write_band()` per band, `finish()` (manifest)."""

    def __init__(self, root: str | os.PathLike, round_: int, corpus: MiningCorpus, *, model_fingerprint: str,
                 corpus_fingerprint: str, params: dict[str, Any], rows_per_file: int = 500_000) -> None:
        self.writer = TripletWriter(root, round_, model_fingerprint=model_fingerprint,
                                    corpus_fingerprint=corpus_fingerprint, params=params, rows_per_file=rows_per_file)
        self.round = self.writer.round
        self.corpus = corpus
        self.sources = [POSITIVE_SOURCES[k] for k in sorted(POSITIVE_SOURCES)]  # indexed by the row's kind
        self._texts: pa.Array | None = None
        self._ids: pa.Array | None = None

    def begin(self) -> None:
        self.writer.begin()

    def _arrays(self) -> tuple[pa.Array, pa.Array]:
        if self._texts is None:
            self._texts = pa.array(self.corpus.texts, type=pa.string())
            self._ids = pa.array(self.corpus.ids, type=pa.string())
        return self._texts, self._ids

    def table(self, result: BandResult, start: int, stop: int) -> pa.Table:
        """Rows `start:stop` of a band as a table of the contract's schema (round and band go in the path)."""
        texts, ids = self._arrays()
        a = pa.array(result.anchor[start:stop])
        p = pa.array(result.positive[start:stop])
        n = pa.array(result.negative[start:stop])
        return pa.Table.from_arrays([
            ids.take(a), texts.take(a), ids.take(p), texts.take(p), ids.take(n), texts.take(n),
            # NaN (a row outside a similarity sample) is written as null
            pa.array(result.anchor_positive_sim[start:stop].astype(np.float32), from_pandas=True),
            pa.array(result.anchor_negative_sim[start:stop].astype(np.float32), from_pandas=True),
            pa.array(result.rank[start:stop].astype(np.int32)),
            pa.array(np.asarray(self.sources, dtype=object)[self.corpus.kind[result.row[start:stop]]],
                     type=pa.string()),
            _optional_floats(result.teacher_score, start, stop),
            _optional_floats(result.teacher_positive_score, start, stop),
        ], schema=SCHEMA)

    def write_band(self, result: BandResult) -> list[ManifestFile]:
        """Write a band's rows in parts of `rows_per_file`; a band without rows writes no file."""
        return self.writer.write_band(result.band, result.rows, lambda start, stop: self.table(result, start, stop))

    def finish(self, bands: dict[str, dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
        """Write the manifest last: from now on the round is complete."""
        return self.writer.finish(bands, extra)
