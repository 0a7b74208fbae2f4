"""Writing a mined round as Hive-partitioned Parquet: `<root>/round=<r>/band=<b>/part-<n>.parquet`.

Every file is written under a hidden temporary name in its folder and renamed when complete, so readers
never see a partial file; the round's `manifest.json` (files, rows, sha256, band statistics, fingerprints,
parameters) is written last and is what marks the round complete. Each file also carries the provenance in
its Parquet key-value metadata (keys prefixed `simcse_curriculum.`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mining.bands import BandResult
from mining.corpus import MiningCorpus
from simcse.io import atomic_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
META_PREFIX = "simcse_curriculum."
SCHEMA = pa.schema([
    ("anchor_id", pa.string()), ("anchor", pa.string()),
    ("positive_id", pa.string()), ("positive", pa.string()),
    ("negative_id", pa.string()), ("negative", pa.string()),
    ("band", pa.string()),
    ("anchor_positive_sim", pa.float32()), ("anchor_negative_sim", pa.float32()),
    ("negative_rank", pa.int32()), ("round", pa.int32()),
])
_PART = re.compile(r"^part-\d+\.parquet$")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("simcse-curriculum")
    except ImportError:  # pragma: no cover
        return "0+unknown"
    except Exception:  # noqa: BLE001 - PackageNotFoundError when running from a source tree
        return "0+unknown"


def readable_by_all(path: Path) -> None:
    """Temporary files are created owner-only (0600); give the final file the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def round_dir(root: str | os.PathLike, round_: int) -> Path:
    return Path(root) / f"round={int(round_)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class FileEntry:
    path: str
    rows: int
    sha256: str
    band: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "sha256": self.sha256, "band": self.band}


class RoundWriter:
    """Writes one round: `begin()` (round marked incomplete), `write_band()` per band, `finish()` (manifest)."""

    def __init__(self, root: str | os.PathLike, round_: int, corpus: MiningCorpus, *, model_fingerprint: str,
                 corpus_fingerprint: str, params: dict[str, Any], rows_per_file: int = 500_000) -> None:
        self.root = Path(root)
        self.round = int(round_)
        self.dir = round_dir(root, round_)
        self.corpus = corpus
        self.rows_per_file = int(rows_per_file)
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.fingerprints = {"model_fingerprint": model_fingerprint, "corpus_fingerprint": corpus_fingerprint}
        self.params = params
        self.files: list[FileEntry] = []
        self._texts: pa.Array | None = None
        self._ids: pa.Array | None = None

    def file_metadata(self, band: str) -> dict[bytes, bytes]:
        meta = {"schema_version": str(SCHEMA_VERSION), **self.fingerprints,
                "params": json.dumps(self.params, sort_keys=True), "created": self.created,
                "package_version": package_version(), "round": str(self.round), "band": band}
        return {(META_PREFIX + k).encode(): str(v).encode() for k, v in meta.items()}

    def begin(self) -> None:
        """Remove the manifest first (the round is now incomplete), then old parts and stale temporary files."""
        (self.dir / MANIFEST_NAME).unlink(missing_ok=True)
        if not self.dir.is_dir():
            return
        for band_dir in self.dir.glob("band=*"):
            if not band_dir.is_dir():
                continue
            for f in band_dir.iterdir():
                if f.is_file() and (_PART.match(f.name) or (f.name.startswith(".") and f.name.endswith(".tmp"))):
                    f.unlink()
        for f in self.dir.iterdir():
            if f.is_file() and f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink()

    def _arrays(self) -> tuple[pa.Array, pa.Array]:
        if self._texts is None:
            self._texts = pa.array(self.corpus.texts, type=pa.string())
            self._ids = pa.array(self.corpus.ids, type=pa.string())
        return self._texts, self._ids

    def table(self, result: BandResult, start: int, stop: int) -> pa.Table:
        texts, ids = self._arrays()
        a = pa.array(result.anchor[start:stop])
        p = pa.array(result.positive[start:stop])
        n = pa.array(result.negative[start:stop])
        rows = stop - start
        return pa.Table.from_arrays([
            ids.take(a), texts.take(a), ids.take(p), texts.take(p), ids.take(n), texts.take(n),
            pa.array(np.full(rows, result.band, dtype=object), type=pa.string()),
            pa.array(result.anchor_positive_sim[start:stop].astype(np.float32)),
            pa.array(result.anchor_negative_sim[start:stop].astype(np.float32)),
            pa.array(result.rank[start:stop].astype(np.int32)),
            pa.array(np.full(rows, self.round, dtype=np.int32)),
        ], schema=SCHEMA)

    def write_band(self, result: BandResult) -> list[FileEntry]:
        """Write a band's rows in parts of `rows_per_file`; a band without rows writes no file."""
        entries = []
        band_dir = self.dir / f"band={result.band}"
        schema = SCHEMA.with_metadata(self.file_metadata(result.band))
        for part, start in enumerate(range(0, result.rows, self.rows_per_file)):
            stop = min(result.rows, start + self.rows_per_file)
            path = band_dir / f"part-{part}.parquet"
            with atomic_path(path) as tmp:
                with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                    for s in range(start, stop, 100_000):  # row groups of 100k keep memory flat
                        writer.write_table(self.table(result, s, min(stop, s + 100_000)).replace_schema_metadata(
                            schema.metadata))
                digest = sha256_file(tmp)
                readable_by_all(tmp)
            entry = FileEntry(path.relative_to(self.dir).as_posix(), stop - start, digest, result.band)
            entries.append(entry)
            log.debug("wrote %s (%d rows)", path, entry.rows)
        self.files.extend(entries)
        return entries

    def finish(self, bands: dict[str, dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
        """Write the manifest last: from now on the round is complete."""
        manifest = {"round": self.round, "files": [f.as_dict() for f in self.files], "bands": bands,
                    **self.fingerprints, "params": self.params, "created": self.created,
                    "schema_version": SCHEMA_VERSION, "package_version": package_version(), **(extra or {})}
        path = self.dir / MANIFEST_NAME
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
            readable_by_all(tmp)
        return path


def read_manifest(root: str | os.PathLike, round_: int) -> dict[str, Any] | None:
    """The round's manifest, or None when the round is incomplete or the manifest unreadable."""
    path = round_dir(root, round_) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def complete_rounds(root: str | os.PathLike) -> list[int]:
    root = Path(root)
    out = []
    if root.is_dir():
        for d in root.iterdir():
            m = re.fullmatch(r"round=(\d+)", d.name)
            if m and (d / MANIFEST_NAME).is_file():
                out.append(int(m.group(1)))
    return sorted(out)


def manifest_files_intact(root: str | os.PathLike, manifest: dict[str, Any], check_sha: bool = False) -> bool:
    """Every file the manifest lists exists with its row count (and checksum when asked)."""
    base = round_dir(root, manifest["round"])
    for f in manifest.get("files", []):
        path = base / f["path"]
        if not path.is_file():
            return False
        try:
            if pq.ParquetFile(path).metadata.num_rows != f["rows"]:
                return False
        except (OSError, pa.ArrowException):
            return False
        if check_sha and sha256_file(path) != f["sha256"]:
            return False
    return True


def read_triplets(root: str | os.PathLike, rounds: list[int] | None = None, bands: list[str] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """All rows of the complete rounds (files listed in their manifests), optionally filtered by band."""
    tables = []
    for r in rounds if rounds is not None else complete_rounds(root):
        manifest = read_manifest(root, r)
        if manifest is None:
            continue
        for f in manifest["files"]:
            if bands is None or f["band"] in bands:
                tables.append(pq.read_table(round_dir(root, r) / f["path"], columns=columns))
    if not tables:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
