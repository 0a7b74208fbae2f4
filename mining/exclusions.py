"""Pairs a team marked as false negatives (anchor_id, negative_id), which later mining must never pick again.

The file is what `simcse-curriculum inspect --html` downloads (or any table with those two columns: csv, tsv,
jsonl, parquet, so a Parquet file of mined triplets works too). Ids are the pool ids written in the triplet
files (`anchor_id`, `negative_id`), so a pair is excluded in every band and every later round; ids that are not
in the current pool (a sentence removed since) are counted and ignored. The file's sha256 joins the mining
parameters recorded in the manifest, so a round mined before the file changed is mined again, not reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataio.hashing import sha256_file
from dataio.tables import read_table
from mining.corpus import MiningCorpus, _cell_text


def pair_keys(pairs: np.ndarray | None, n_pool: int) -> np.ndarray:
    """Sorted unique `anchor * n_pool + other` keys of (anchor, other) pool-index pairs: one searchsorted per
    lookup (the bands' guard, the judge's mined positives)."""
    if pairs is None or not len(pairs):
        return np.empty(0, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64)
    return np.unique(pairs[:, 0] * n_pool + pairs[:, 1])

COLUMNS = ("anchor_id", "negative_id")


@dataclass(frozen=True)
class ExcludedPairs:
    """The (anchor_id, negative_id) pairs of one exclusion file, with the file's sha256."""

    path: Path
    sha256: str
    anchor_ids: tuple[str, ...]
    negative_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.anchor_ids)

    def pool_pairs(self, corpus: MiningCorpus) -> tuple[np.ndarray, int]:
        """(pairs x 2) pool indices of the pairs whose two ids are in `corpus`, and how many are not."""
        index = {ident: i for i, ident in enumerate(corpus.ids)}
        out = [(index[a], index[n]) for a, n in zip(self.anchor_ids, self.negative_ids) if a in index and n in index]
        pairs = np.array(out, dtype=np.int64).reshape(-1, 2)
        return pairs, len(self) - len(pairs)

    def describe(self) -> dict[str, object]:
        return {"path": str(self.path), "sha256": self.sha256, "pairs": len(self)}


def read_excluded_pairs(path: str | os.PathLike) -> ExcludedPairs:
    """Read an exclusion file; InputError naming the file, line and column on a missing column or empty id."""
    path = Path(path)
    table = read_table(path, list(COLUMNS))
    columns = {}
    for name in COLUMNS:
        values = []
        for i, value in enumerate(table.columns[name]):
            text = _cell_text(table, i, name, value)
            if not text:
                raise table.error(i, name, "empty id; every row needs an anchor_id and a negative_id (the ids of "
                                           "the triplet files); fill it in or delete the row")
            values.append(text)
        columns[name] = tuple(values)
    return ExcludedPairs(path, sha256_file(path), columns["anchor_id"], columns["negative_id"])


def as_excluded_pairs(value: str | os.PathLike | ExcludedPairs | None) -> ExcludedPairs | None:
    if value is None or isinstance(value, ExcludedPairs):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_excluded_pairs(value)
    raise TypeError(f"exclude_pairs must be a path or ExcludedPairs, got {type(value).__name__}")
