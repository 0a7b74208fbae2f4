"""The evaluation files: STS pairs with a graded score and labeled pairs (0/1, or yes/no and true/false:
`parse_label`), read through `dataio.tables.read_columns` so a bad row is one line naming file, row and column.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataio.errors import InputError
from dataio.tables import INPUT_COLUMNS, Table, read_columns


@dataclass
class StsData:
    """Sentence pairs with a graded similarity score (STS-B layout)."""

    path: Path
    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]


def _floats(table: Table, column: str) -> list[float]:
    values: list[float] = []
    for i, raw in enumerate(table.columns[column]):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise table.error(i, column, f"{raw!r} is not a number") from None
        if math.isnan(value):
            raise table.error(i, column, "NaN is not a usable score")
        values.append(value)
    return values


def _texts(table: Table, column: str) -> list[str]:
    values = table.columns[column]
    for i, v in enumerate(values):
        if v is None or not str(v).strip():
            raise table.error(i, column, "empty text; remove the row or fill it in")
    return [str(v) for v in values]


def read_sts(path: str | os.PathLike, columns: Mapping[str, str | None] | None = None) -> StsData:
    """An STS file: `sentence1, sentence2, score` (score any numeric scale); `columns` maps those names to the
    file's own (e.g. `{"score": "similarity"}`)."""
    table = read_columns(path, *INPUT_COLUMNS["sts"], columns=columns)
    if len(table) < 2:
        raise InputError("an STS file needs at least 2 scored pairs", path=table.path)
    return StsData(table.path, _texts(table, "sentence1"), _texts(table, "sentence2"), _floats(table, "score"))


@dataclass
class LabeledPairs:
    """Sentence pairs labeled 1 (same meaning / relevant) or 0."""

    path: Path
    sentence1: list[str]
    sentence2: list[str]
    labels: list[int]


# Words read as a label: what spreadsheets and annotation tools write for yes / no.
LABEL_WORDS = {"1": 1, "0": 0, "yes": 1, "no": 0, "y": 1, "n": 0, "true": 1, "false": 0}
LABEL_HELP = "0 or 1 (yes/no and true/false are read as 1/0)"


def parse_label(value: Any) -> int | None:
    """A 0/1 label: 0 or 1 as a number or text (`1.0` too), yes/no, y/n, true/false in any case; None for
    anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in LABEL_WORDS:
            return LABEL_WORDS[word]
        try:
            number = float(word)
        except ValueError:
            return None
        return int(number) if number in (0.0, 1.0) else None
    return None


def read_labeled_pairs(path: str | os.PathLike, columns: Mapping[str, str | None] | None = None) -> LabeledPairs:
    """A labeled-pair file: `sentence1, sentence2, label` with labels 0/1 (or yes/no, true/false: `parse_label`);
    `columns` maps those names to the file's own (e.g. `{"label": "is_paraphrase"}`)."""
    table = read_columns(path, *INPUT_COLUMNS["labeled_pairs"], columns=columns)
    labels = []
    for i, raw in enumerate(table.columns["label"]):
        label = parse_label(raw)
        if label is None:
            raise table.error(i, "label", f"label {raw!r} is not {LABEL_HELP}")
        labels.append(label)
    if len(set(labels)) < 2:
        raise InputError("labeled pairs need both labels (0 and 1) for average precision", path=table.path)
    return LabeledPairs(table.path, _texts(table, "sentence1"), _texts(table, "sentence2"), labels)
