"""Upgrading a triplets folder mined before schema 2 (`mine --upgrade`): each round's files rewritten without
the `round` and `band` columns their path already says, checked against the old manifest first, and the new
manifest written last, so an interrupted upgrade is simply run again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataio.atomic import atomic_path
from dataio.errors import TripletDataError, load_json_model
from dataio.hashing import sha256_file
from dataio.triplet_layout import LEGACY_MANIFEST_NAME, PARTITION_KEYS, round_dir
from dataio.triplets import (
    META_PREFIX,
    SCHEMA,
    SCHEMA_VERSION,
    ManifestFile,
    RoundManifest,
    conform,
    legacy_rounds,
    resolve_file,
    write_manifest,
)


def upgrade_folder(root: str | os.PathLike) -> list[int]:
    """Convert the old-layout rounds under `root` (schema 1) in place; returns the rounds converted.

    Per round: each file its manifest lists is checked against the manifest (rows, sha256; `round` and `band`
    values equal to its path) and rewritten without the two columns, atomically; then the new manifest is
    written (new checksums, the current schema version) and the old one removed, last. Interrupted, it is simply run
    again: a file already rewritten is recognised by its columns, and the old manifest stays until the end.
    """
    root = Path(root)
    done = []
    for r in legacy_rounds(root):
        old_path = round_dir(root, r) / LEGACY_MANIFEST_NAME
        manifest = load_json_model(old_path, RoundManifest, TripletDataError, f"re-mine round {r}")
        if manifest.round != r:
            raise TripletDataError(f"{old_path}: says round {manifest.round} but sits in round={r}; re-mine round {r}")
        for entry in manifest.files:
            path = resolve_file(root, r, entry.path)
            if not path.is_file():
                raise TripletDataError(f"{path}: listed in {old_path} but missing; re-mine round {r}")
            entry.sha256 = _upgrade_file(path, r, entry, old_path)
        manifest.schema_version = SCHEMA_VERSION
        write_manifest(root, manifest)
        old_path.unlink()
        done.append(r)
    return done


def _upgrade_file(path: Path, round_: int, entry: ManifestFile, manifest: Path) -> str:
    """Rewrite one schema-1 file without its `round` and `band` columns; returns the new sha256."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise TripletDataError(f"{path}: not a readable Parquet file ({err}); re-mine round {round_}") from None
    if parquet.metadata.num_rows != entry.rows:
        raise TripletDataError(f"{path}: has {parquet.metadata.num_rows} rows, {manifest} says {entry.rows}; "
                               f"re-mine round {round_}")
    names = parquet.schema_arrow.names
    if not set(PARTITION_KEYS) & set(names):
        return sha256_file(path)  # rewritten by an upgrade that was interrupted later
    if entry.sha256 and sha256_file(path) != entry.sha256:
        raise TripletDataError(f"{path}: sha256 differs from {manifest}; the file changed after mining, re-mine "
                               f"round {round_}")
    metadata = dict(parquet.schema_arrow.metadata or {})
    metadata[(META_PREFIX + "schema_version").encode()] = str(SCHEMA_VERSION).encode()
    schema = SCHEMA.with_metadata(metadata)
    expected = {"round": round_, "band": entry.band}
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group)
                for key, value in expected.items():
                    if key in table.column_names and set(table.column(key).unique().to_pylist()) - {value}:
                        raise TripletDataError(f"{path}: column '{key}' holds values other than {value!r}, the "
                                               f"{key} of its path; re-mine round {round_}")
                table = conform(table.select([c for c in SCHEMA.names if c in table.column_names])).cast(SCHEMA)
                writer.write_table(table.replace_schema_metadata(schema.metadata))
        return sha256_file(tmp)
