"""Reading a mined round: its manifest (band statistics, file list) and the files it lists.

Layout (the mining contract): `<root>/round=<r>/band=<b>/part-<n>.parquet` plus
`<root>/round=<r>/manifest.json`, written last; a round without a manifest is incomplete and is never read.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curriculum.errors import TripletDataError, load_json_model

MANIFEST_NAME = "manifest.json"
_ROUND_DIR = re.compile(r"^round=(\d+)$")


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str
    rows: int = Field(ge=0)
    band: str
    sha256: str | None = None


class BandStats(BaseModel):
    model_config = ConfigDict(extra="allow")
    rows: int = Field(ge=0)
    mean_anchor_negative_sim: float | None = None
    skipped: dict[str, int] = Field(default_factory=dict)


class RoundManifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    round: int = Field(ge=0)
    files: list[ManifestFile]
    bands: dict[str, BandStats]
    model_fingerprint: str | None = None
    corpus_fingerprint: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None

    def difficulties(self) -> dict[str, float]:
        """Measured difficulty (mean anchor-negative similarity) of each band that has rows."""
        return {
            band: float(stats.mean_anchor_negative_sim)
            for band, stats in self.bands.items()
            if stats.rows > 0 and stats.mean_anchor_negative_sim is not None
            and math.isfinite(stats.mean_anchor_negative_sim)
        }

    def band_rows(self) -> dict[str, int]:
        return {band: stats.rows for band, stats in self.bands.items()}


def round_dir(root: str | Path, round_: int) -> Path:
    return Path(root) / f"round={round_}"


def complete_rounds(root: str | Path) -> list[int]:
    """Rounds under `root` whose manifest exists (complete), ascending."""
    rounds = []
    root = Path(root)
    if not root.is_dir():
        return []
    for child in root.iterdir():
        match = _ROUND_DIR.match(child.name)
        if match and (child / MANIFEST_NAME).is_file():
            rounds.append(int(match.group(1)))
    return sorted(rounds)


def read_manifest(root: str | Path, round_: int) -> RoundManifest:
    """The manifest of a complete round; `TripletDataError` naming the file if absent or malformed."""
    path = round_dir(root, round_) / MANIFEST_NAME
    if not path.is_file():
        raise TripletDataError(f"{path}: no manifest, so round {round_} is not complete; mine it (again) first")
    manifest = load_json_model(path, RoundManifest, TripletDataError, f"re-mine round {round_}")
    if manifest.round != round_:
        raise TripletDataError(f"{path}: says round {manifest.round} but sits in round={round_}; re-mine round {round_}")
    return manifest


def resolve_file(root: str | Path, round_: int, rel: str) -> Path:
    """A manifest file path: relative to the round folder, or to `root` when it starts with `round=`."""
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise TripletDataError(f"{round_dir(root, round_) / MANIFEST_NAME}: file path {rel!r} must stay inside the round")
    if rel_path.parts and _ROUND_DIR.match(rel_path.parts[0]):
        return Path(root) / rel_path
    return round_dir(root, round_) / rel_path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
