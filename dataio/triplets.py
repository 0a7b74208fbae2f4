"""The triplet contract: how mined triplets are laid out, described and read, in one place for every package.

A triplets folder is a Hive-partitioned Parquet dataset, one folder per round and band:

    <root>/round=<r>/band=<b>/part-<n>.parquet     rows of `SCHEMA`
    <root>/round=<r>/.manifest.json                 the round's manifest, written last

As the engines people read Parquet with expect: the partition values `round` and `band` live in the path
only (pyarrow, pandas, polars and DuckDB add them as columns), and nothing but Parquet sits in the tree under a
name a reader would open. The manifest's name starts with a dot because that is the one convention all of
them honour: pyarrow (and so pandas) and Spark skip names starting with `_` or `.`, but `datasets` skips
only `.` (a `_manifest.json` breaks `load_dataset("parquet", data_dir=...)`), and glob reads (`**/*.parquet`)
skip any other name. So `pandas.read_parquet(root)`, `pyarrow.dataset.dataset(root, partitioning="hive")`,
`datasets.load_dataset("parquet", data_dir=root)`, polars and DuckDB (`root/**/*.parquet` with Hive
partitioning) each read a folder in one line.

Every file is written under a hidden temporary name and renamed when complete, and the manifest (files,
row counts, sha256, band statistics, fingerprints, parameters) is written last: a round without one is
incomplete and no reader here looks at it. Each Parquet file also carries the provenance in its key-value
metadata (keys prefixed `simcse_curriculum.`).

Folders written before schema version 2 (`round=<r>/manifest.json`, `round` and `band` also as file
columns) are refused with a one-line message naming `simcse-curriculum triplets upgrade DIR`, which converts
them in place (`dataio.triplet_upgrade`). Files of schema version 2 (before the judge's columns) need no
upgrade: every reader here adds `positive_source`, `teacher_score` and `teacher_positive_score` to them as
nulls (`conform`).

`mining` writes rounds with `TripletWriter` (through `mining.parquet`), `curriculum.synthetic` writes test
fixtures with the same writer; the sampler, `inspect`, the flows and the report read them with
`read_manifest`, `resolve_file` and `read_triplets`. The batch the sampler hands the trainer is
`dataio.triplet_layout.TripletBatch` (no pyarrow needed to name it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from dataio.atomic import atomic_path, atomic_write_text
from dataio.errors import TripletDataError, load_json_model
from dataio.hashing import sha256_file
from dataio.triplet_layout import (
    LEGACY_MANIFEST_NAME,
    MANIFEST_NAME,
    DifficultyMeasure,
    band_dir,
    manifest_path,
    part_name,
    round_dir,
)

# 2: round and band only in the path, the manifest named .manifest.json; 3: the judge's columns
# (positive_source, teacher_score, teacher_positive_score). Files of version 2 read with those columns null.
SCHEMA_VERSION = 3
META_PREFIX = "simcse_curriculum."  # the Parquet key-value metadata keys of the provenance
ROW_GROUP_ROWS = 100_000  # row groups of 100k rows keep a writer's memory flat

SCHEMA = pa.schema([
    ("anchor_id", pa.string()), ("anchor", pa.string()),
    ("positive_id", pa.string()), ("positive", pa.string()),
    ("negative_id", pa.string()), ("negative", pa.string()),
    ("anchor_positive_sim", pa.float32()), ("anchor_negative_sim", pa.float32()),
    ("negative_rank", pa.int32()),
    # Why the row's positive is what it is: "anchor" (the anchor itself: a dropout or word-deletion view),
    # "pair" or "nli" (labeled), "mined" (a judge paired two corpus texts, mining.judge).
    ("positive_source", pa.string()),
    # The teacher's cosine of anchor-negative and anchor-positive; null when the round had no teacher.
    ("teacher_score", pa.float32()), ("teacher_positive_score", pa.float32()),
])
# Columns a file written before schema version 3 lacks: readers add them as nulls (`conform`).
JUDGE_COLUMNS = ("positive_source", "teacher_score", "teacher_positive_score")
# The partition keys as readers add them from the path (pyarrow's Hive partitioning infers these types).
PARTITION_SCHEMA = pa.schema([("round", pa.int32()), ("band", pa.string())])

_ROUND_DIR = re.compile(r"^round=(\d+)$")
_PART = re.compile(r"^part-\d+\.parquet$")


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`table` (read from one file) with the judge's columns a schema-2 file lacks added as nulls, in the
    contract's order, or in `columns`' order when given."""
    wanted = list(columns) if columns is not None else [c for c in SCHEMA.names]
    for name in JUDGE_COLUMNS:
        if name in wanted and name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type))
    return table.select([c for c in wanted if c in SCHEMA.names])


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simcse-curriculum")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


# ---------------------------------------------------------------------------------------------- manifest
class ManifestFile(BaseModel):
    """One Parquet file of the round: its path relative to the round folder, rows, band and checksum."""

    model_config = ConfigDict(extra="allow")
    path: str
    rows: int = Field(ge=0)
    band: str
    sha256: str | None = None


class BandStats(BaseModel):
    """A band's rows, measured difficulty (mean anchor-negative similarity) and skipped candidates by reason."""

    model_config = ConfigDict(extra="allow")
    rows: int = Field(ge=0)
    mean_anchor_negative_sim: float | None = None
    skipped: dict[str, int] = Field(default_factory=dict)
    note: str | None = None


class RoundManifest(BaseModel):
    """A round's manifest: what marks the round complete and describes it. Unknown keys are kept."""

    model_config = ConfigDict(extra="allow")
    round: int = Field(ge=0)
    files: list[ManifestFile]
    bands: dict[str, BandStats]
    model_fingerprint: str | None = None
    corpus_fingerprint: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="the miner's parameters, seed and bands")
    created: str | None = None
    schema_version: int | None = None
    package_version: str | None = None
    index: dict[str, Any] | None = Field(None, description="the kNN index: backend, device, recall@k, seconds")
    corpus: dict[str, Any] | None = Field(None, description="the pool, anchor rows by kind and each source file")
    embeddings: dict[str, Any] | None = Field(None, description="whether the embeddings came from the cache")
    timings: dict[str, float] | None = None
    exclude_pairs: dict[str, Any] | None = Field(None, description="the excluded-pairs file, when one was given")

    def difficulties(self, measure: DifficultyMeasure = "student") -> dict[str, float]:
        """Measured difficulty of each band that has rows: the mean anchor-negative cosine by the student (the
        encoder that mined the round) or, with `measure="teacher"`, by the round's teacher (`mean_teacher_score`;
        a round mined without a teacher has none, which is an error)."""
        import math

        out = {}
        for band, stats in self.bands.items():
            value = stats.mean_anchor_negative_sim if measure == "student" else (stats.model_extra or {}).get(
                "mean_teacher_score")
            if measure == "teacher" and value is None and stats.rows > 0:
                raise TripletDataError(f"round {self.round}: band {band} has no teacher scores (mined without a "
                                       f"teacher), so its difficulty cannot be graded by the teacher; set the run's "
                                       f"teacher or curriculum.difficulty: student")
            if stats.rows > 0 and value is not None and math.isfinite(float(value)):
                out[band] = float(value)
        return out

    def band_rows(self) -> dict[str, int]:
        return {band: stats.rows for band, stats in self.bands.items()}

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def to_json(self) -> str:
        """The manifest file's text: the keys that were set, in declaration order, extras after."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2, default=str) + "\n"


def _round_dirs(root: Path) -> dict[int, Path]:
    if not root.is_dir():
        return {}
    return {int(m.group(1)): child for child in root.iterdir() if (m := _ROUND_DIR.match(child.name))}


def legacy_rounds(root: str | os.PathLike) -> list[int]:
    """Rounds under `root` written in the schema-1 layout (`round=<r>/manifest.json`), ascending."""
    return sorted(r for r, d in _round_dirs(Path(root)).items() if (d / LEGACY_MANIFEST_NAME).is_file())


def upgrade_hint(root: str | os.PathLike, rounds: Iterable[int]) -> str:
    listed = ", ".join(str(r) for r in rounds)
    return (f"{root}: round {listed} uses the triplet layout of older versions (round=<r>/{LEGACY_MANIFEST_NAME}, "
            f"round and band also as file columns); convert the folder once with "
            f"`simcse-curriculum triplets upgrade {root}`")


def check_layout(root: str | os.PathLike) -> None:
    """`TripletDataError` with the one-line upgrade command when any round under `root` is in the old layout."""
    legacy = legacy_rounds(root)
    if legacy:
        raise TripletDataError(upgrade_hint(root, legacy))


def complete_rounds(root: str | os.PathLike) -> list[int]:
    """Rounds under `root` whose manifest exists (complete), ascending; old-layout folders are refused."""
    check_layout(root)
    return sorted(r for r, d in _round_dirs(Path(root)).items() if (d / MANIFEST_NAME).is_file())


def is_complete(root: str | os.PathLike, round_: int) -> bool:
    """Whether round `round_` has its manifest (an old-layout round is refused with the upgrade command)."""
    if (round_dir(root, round_) / LEGACY_MANIFEST_NAME).is_file():
        raise TripletDataError(upgrade_hint(root, [round_]))
    return manifest_path(root, round_).is_file()


def read_manifest(root: str | os.PathLike, round_: int) -> RoundManifest:
    """The manifest of a complete round; `TripletDataError` naming the file if absent or malformed."""
    path = manifest_path(root, round_)
    if not is_complete(root, round_):
        raise TripletDataError(f"{path}: no manifest, so round {round_} is not complete; mine it (again) first")
    manifest = load_json_model(path, RoundManifest, TripletDataError, f"re-mine round {round_}")
    if manifest.round != round_:
        raise TripletDataError(f"{path}: says round {manifest.round} but sits in round={round_}; "
                               f"re-mine round {round_}")
    return manifest


def write_manifest(root: str | os.PathLike, manifest: RoundManifest) -> Path:
    """Write a round's manifest atomically; call it last, when every file it lists is in place."""
    path = manifest_path(root, manifest.round)
    atomic_write_text(path, manifest.to_json())
    return path


def resolve_file(root: str | os.PathLike, round_: int, rel: str) -> Path:
    """A manifest's file path, which is relative to the round folder and may never leave it."""
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts or not rel_path.parts:
        raise TripletDataError(f"{manifest_path(root, round_)}: file path {rel!r} must stay inside the round "
                               f"(relative, without '..'); re-mine round {round_}")
    return round_dir(root, round_) / rel_path


# Files this process has hashed and found as their manifest says, keyed by path, size and modification time: a
# round is hashed once per process however often it is opened (a rewrite changes the key).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def sha256_matches(path: Path, expected: str | None) -> bool:
    """Whether a listed file's bytes are the ones its manifest recorded (no recorded sha256: nothing to check).

    Changed bytes usually decode fine (of 300 random single-bit flips in a part, 197 read without error as
    different text), so size and row count alone cannot tell."""
    if not expected:
        return True
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return True
    if sha256_file(path) != expected:
        return False
    _VERIFIED.add(key)
    return True


def round_problem(root: str | os.PathLike, manifest: RoundManifest, check_sha: bool = True) -> str | None:
    """What is wrong with a complete round's files, as a one-line reason naming the file, or None when every
    file its manifest lists is in place with its row count (and its sha256, when `check_sha`)."""
    for entry in manifest.files:
        try:
            path = resolve_file(root, manifest.round, entry.path)
        except TripletDataError as err:
            return str(err)
        if not path.is_file():
            return f"{path}: listed in the manifest but missing"
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as err:
            return f"{path}: not a readable Parquet file ({' '.join(str(err).split())[:120]})"
        if rows != entry.rows:
            return f"{path}: has {rows} rows, the manifest says {entry.rows}"
        if check_sha and not sha256_matches(path, entry.sha256):
            return f"{path}: changed after mining (its sha256 differs from the manifest's)"
    return None


def read_triplets(root: str | os.PathLike, rounds: list[int] | None = None, bands: list[str] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """All rows of the complete rounds (only the files their manifests list), optionally of some bands only.

    The columns are the files' and then `round` and `band` (int32, string), as a Hive-partitioned reader adds
    them from the path; `columns` picks and orders any of them.
    """
    full = pa.schema(list(SCHEMA) + list(PARTITION_SCHEMA))
    wanted = list(columns) if columns is not None else full.names
    unknown = [c for c in wanted if c not in full.names]
    if unknown:
        raise ValueError(f"unknown triplet column {unknown[0]!r}; the columns are {', '.join(full.names)}")
    file_columns = [c for c in wanted if c in SCHEMA.names]
    tables = []
    for r in rounds if rounds is not None else complete_rounds(root):
        manifest = read_manifest(root, r)
        for entry in manifest.files:
            if bands is not None and entry.band not in bands:
                continue
            path = resolve_file(root, r, entry.path)
            present = set(pq.read_schema(path).names)
            # At least one column is read, so a table of only the judge's columns (absent here) keeps its rows.
            table = pq.read_table(path, columns=[c for c in file_columns if c in present] or ["anchor_id"],
                                  partitioning=None)
            table = conform(table.replace_schema_metadata(None), file_columns)
            table = table.append_column(PARTITION_SCHEMA.field("round"), pa.array([r] * table.num_rows, pa.int32()))
            table = table.append_column(PARTITION_SCHEMA.field("band"),
                                        pa.array([entry.band] * table.num_rows, pa.string()))
            tables.append(table.select(wanted))
    if not tables:
        return full.empty_table().select(wanted)
    return pa.concat_tables(tables)



# The text columns sentence-transformers' trainer takes, in the order its losses read them: every column
# that is not a label is fed to the loss, by position (anchor, positive, then the negatives).
TRAINER_COLUMNS = ("anchor", "positive", "negative")


def to_hf_dataset(root: str | os.PathLike, rounds: list[int] | None = None, bands: list[str] | None = None,
                  columns: list[str] | None = None) -> Any:
    """The complete rounds as one in-memory `datasets.Dataset`, with `round` (int32) and `band` (string) kept.

    `datasets.load_dataset("parquet", data_dir=root)` drops them: its Parquet builder reads each file on its
    own, as a fragment without partitioning, so the Hive partition keys that live only in the path
    (`round=<r>/band=<b>/`) never become columns; it also reads a round still being mined. This reads what
    `read_triplets` reads (the files the manifests list, complete rounds only; `rounds`, `bands` and
    `columns` as there) and hands the Arrow table to `datasets` without a copy.
    """
    import datasets

    return datasets.Dataset(read_triplets(root, rounds=rounds, bands=bands, columns=columns))


def to_trainer_dataset(root: str | os.PathLike, rounds: list[int] | None = None,
                       bands: list[str] | None = None) -> Any:
    """What `SentenceTransformerTrainer(train_dataset=...)` takes: the rows of the complete rounds as a
    `datasets.Dataset` of exactly `TRAINER_COLUMNS` (anchor, positive, negative), in that order, as
    `select_columns` would leave them, every band mixed (no curriculum: `curriculum.CurriculumFeed` draws
    each batch's bands by the schedule instead). A null positive (a row mined for unsupervised SimCSE, whose
    positive is the anchor itself) becomes its anchor text."""
    import datasets
    import pyarrow.compute as pc

    table = read_triplets(root, rounds=rounds, bands=bands, columns=list(TRAINER_COLUMNS))
    positive = pc.coalesce(table.column("positive"), table.column("anchor"))
    table = table.set_column(TRAINER_COLUMNS.index("positive"), "positive", positive)
    return datasets.Dataset(table)


# ------------------------------------------------------------------------------------------------ writer
class TripletWriter:
    """Writes one round: `begin()` (the round becomes incomplete), `write_band()` per band, `finish()` (the
    manifest, last). Parts hold `rows_per_file` rows; each is written under a hidden temporary name, renamed
    when complete, and carries the provenance in its Parquet metadata."""

    def __init__(self, root: str | os.PathLike, round_: int, *, model_fingerprint: str | None,
                 corpus_fingerprint: str | None, params: Mapping[str, Any], rows_per_file: int = 500_000) -> None:
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
        self.root = Path(root)
        self.round = int(round_)
        self.dir = round_dir(root, round_)
        self.rows_per_file = int(rows_per_file)
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.fingerprints = {"model_fingerprint": model_fingerprint, "corpus_fingerprint": corpus_fingerprint}
        self.params = dict(params)
        self.files: list[ManifestFile] = []

    def file_metadata(self, band: str) -> dict[bytes, bytes]:
        meta = {"schema_version": str(SCHEMA_VERSION), **self.fingerprints,
                "params": json.dumps(self.params, sort_keys=True), "created": self.created,
                "package_version": package_version(), "round": str(self.round), "band": band}
        return {(META_PREFIX + k).encode(): str(v).encode() for k, v in meta.items()}

    def begin(self) -> None:
        """Remove the manifest first (the round is now incomplete), then old parts and stale temporary files.

        A folder holding old-layout rounds is refused (the upgrade command converts it): mixing layouts would
        break every reader."""
        check_layout(self.root)
        manifest_path(self.root, self.round).unlink(missing_ok=True)
        if not self.dir.is_dir():
            return
        for folder in self.dir.glob("band=*"):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if f.is_file() and (_PART.match(f.name) or (f.name.startswith(".") and f.name.endswith(".tmp"))):
                    f.unlink()
        for f in self.dir.iterdir():
            if f.is_file() and f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink()

    def write_band(self, band: str, rows: int, rows_between: Callable[[int, int], pa.Table]) -> list[ManifestFile]:
        """Write a band's `rows` rows in parts; `rows_between(start, stop)` gives those rows as a `SCHEMA` table
        (built lazily, a row group at a time). A band without rows writes no file."""
        entries = []
        folder = band_dir(self.root, self.round, band)
        schema = SCHEMA.with_metadata(self.file_metadata(band))
        for part, start in enumerate(range(0, rows, self.rows_per_file)):
            stop = min(rows, start + self.rows_per_file)
            path = folder / part_name(part)
            with atomic_path(path) as tmp:
                with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                    for s in range(start, stop, ROW_GROUP_ROWS):
                        table = rows_between(s, min(stop, s + ROW_GROUP_ROWS))
                        if not table.schema.equals(SCHEMA):
                            raise ValueError(f"band {band}: rows do not have the contract's schema:\n{table.schema}")
                        writer.write_table(table.replace_schema_metadata(schema.metadata))
                digest = sha256_file(tmp)
            entries.append(ManifestFile(path=path.relative_to(self.dir).as_posix(), rows=stop - start,
                                        sha256=digest, band=band))
        self.files.extend(entries)
        return entries

    def finish(self, bands: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> Path:
        """Write the manifest last: from now on the round is complete."""
        manifest = RoundManifest.model_validate({
            "round": self.round, "files": [f.model_dump(exclude_unset=True) for f in self.files],
            "bands": dict(bands), **self.fingerprints, "params": self.params, "created": self.created,
            "schema_version": SCHEMA_VERSION, "package_version": package_version(), **(extra or {})})
        return write_manifest(self.root, manifest)
