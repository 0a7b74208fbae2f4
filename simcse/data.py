"""Training data: sentences for unsupervised SimCSE and (anchor, positive, negative) triplets for supervised.

Rows with an empty text are dropped and counted, exact repeats collapsed and counted, as the design's
validation rules say; undecodable bytes and missing columns are InputErrors from `dataio.tables`. Columns are
read under the names of `dataio.tables.COLUMN_ALIASES`, the table `mine` and the flows read with too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dataio.errors import InputError
from dataio.tables import read_columns


@dataclass
class Sentences:
    """Unique non-empty sentences of a corpus file, in file order."""

    path: Path
    texts: list[str]
    dropped_empty: int = 0
    duplicates: int = 0


@dataclass
class Triplets:
    """Unique (anchor, positive[, negative]) rows of a file, in file order."""

    path: Path
    anchor: list[str]
    positive: list[str]
    negative: list[str] | None
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.anchor)


def load_sentences(path: str | os.PathLike, *, keep_duplicates: bool = False) -> Sentences:
    """Sentences from `.txt` (one a line) or a table with a `text` column (or an alias: sentence, sent0, ...)."""
    table = read_columns(path, ["text"])
    texts: list[str] = []
    seen: set[str] = set()
    empty = duplicates = 0
    for value in table.columns["text"]:
        text = "" if value is None else str(value).strip()
        if not text:
            empty += 1
            continue
        if text in seen and not keep_duplicates:
            duplicates += 1
            continue
        seen.add(text)
        texts.append(text)
    if not texts:
        raise InputError("no sentences (every row is empty); give a corpus with text in it", path=table.path)
    return Sentences(table.path, texts, empty, duplicates)


def load_triplets(path: str | os.PathLike, *, require_negative: bool = True) -> Triplets:
    """NLI-style rows: columns anchor/positive/negative, or SimCSE's sent0/sent1/hard_neg, or
    premise/entailment/contradiction (or any alias of `COLUMN_ALIASES`). With `require_negative=False` the
    negative column is optional."""
    wanted = ["anchor", "positive"] + (["negative"] if require_negative else [])
    optional = [] if require_negative else ["negative"]
    table = read_columns(path, wanted, optional)
    has_negative = "negative" in table.columns
    names = ["anchor", "positive"] + (["negative"] if has_negative else [])
    out: dict[str, list[str]] = {name: [] for name in names}
    dropped = {"empty": 0, "duplicate": 0, "negative_repeats_anchor_or_positive": 0}
    seen: set[tuple[str, ...]] = set()
    for i in range(len(table)):
        row = tuple("" if table.columns[n][i] is None else str(table.columns[n][i]).strip() for n in names)
        if not all(row):
            dropped["empty"] += 1
            continue
        if has_negative and row[2] in (row[0], row[1]):
            dropped["negative_repeats_anchor_or_positive"] += 1
            continue
        if row in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(row)
        for name, text in zip(names, row):
            out[name].append(text)
    if not out["anchor"]:
        raise InputError("no usable rows (every row has an empty text); fill in the texts", path=table.path)
    return Triplets(table.path, out["anchor"], out["positive"], out.get("negative"), dropped)
