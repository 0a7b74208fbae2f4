"""The names of the triplet contract, apart from its Parquet code: the bands easy to hard, the folder layout and
the batch the sampler hands the trainer (`TripletBatch`).

    <root>/round=<r>/band=<b>/part-<n>.parquet
    <root>/round=<r>/.manifest.json

Configs, the mining parameters, the scheduler's preview, the run folder and the command line name bands and
find rounds without reading a Parquet file; with the names here they do so without importing pyarrow.
`dataio.triplets` (the schema, the manifest, readers and writer) builds on this module; see its docstring for
why the layout is what it is.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypedDict

# The graded bands split each anchor's nearest-neighbour window in thirds by the judge's score (mining.bands).
BandName = Literal["random", "in_domain", "nli_contradiction", "nearest_neighbour", "graded_easy", "graded_medium",
                   "graded_hard"]
BANDS: tuple[str, ...] = typing.get_args(BandName)  # easy to hard
GRADED_BANDS: tuple[str, ...] = ("graded_easy", "graded_medium", "graded_hard")
DifficultyMeasure = Literal["student", "teacher"]
# The weight α of a row's hard negative in the loss when nothing names one (a plan without the row's band, a
# training config that sets none): the plain SimCSE loss. The one default of α, for the sampler, the trainer, the
# losses and the model card.
DEFAULT_ALPHA = 1.0

MANIFEST_NAME = ".manifest.json"
LEGACY_MANIFEST_NAME = "manifest.json"  # schema version 1
PARTITION_KEYS = ("round", "band")


def band_order(bands: Iterable[str]) -> list[str]:
    """Band names easy to hard (`BANDS`' order), names the contract does not know last, by name."""
    return sorted(bands, key=lambda b: (BANDS.index(b) if b in BANDS else len(BANDS), b))


# ------------------------------------------------------------------------------------------------ layout
def round_dir(root: str | os.PathLike, round_: int) -> Path:
    return Path(root) / f"round={int(round_)}"


def band_dir(root: str | os.PathLike, round_: int, band: str) -> Path:
    return round_dir(root, round_) / f"band={band}"


def part_name(part: int) -> str:
    return f"part-{int(part)}.parquet"


def manifest_path(root: str | os.PathLike, round_: int) -> Path:
    return round_dir(root, round_) / MANIFEST_NAME


class _Anchors(TypedDict):
    anchor: list[str]


class TripletBatch(_Anchors, total=False):
    """One training batch, a list per column with one item per row (`curriculum.TripletSampler.draw`, consumed
    by `simcse.train`).

    - `anchor`: the anchor texts (always present).
    - `positive`: each anchor's positive text; for an unsupervised row it is the anchor itself (SimCSE's
      dropout positive). Absent: every row is unsupervised.
    - `negative`: one hard-negative text per row, or a list of k per row (k negatives per anchor).
    - `alpha`: the weight of each hard negative in the loss (a float per row, or k per row); 0 marks a padding
      column the loss removes exactly.
    - `band`: the band each negative came from (a name per row, or k per row; "none" for padding).
    """

    positive: list[str]
    negative: list[str] | list[list[str]]
    alpha: list[float] | list[list[float]]
    band: list[str] | list[list[str]]
