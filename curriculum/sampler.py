"""TripletSampler: training batches drawn from one mined round with the scheduler's band mixture.

Why hand-written: no library sampler draws per-batch band mixtures that change during training while
keeping every text unique within a batch and resuming exactly from a small JSON position.

How it stays exact and fast:
- All texts of the round are dictionary-encoded once (pyarrow), so each row is three integer codes and
  "the same text twice in a batch" is an integer-set test; texts are looked up only for chosen rows.
- Each band is walked in a shuffled order per epoch, permutation seeded by (seed, round, band, epoch), so
  only (epoch, cursor) needs saving. A row that would repeat a text already in the batch is deferred to
  the band's `pending` list and tried first next time, so no row is lost from the epoch.
- The band of each batch slot comes from a generator seeded by (seed, round, batch index): the position
  is a handful of integers, and the same position + the same mixture gives the same batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curriculum.dataset import (
    MANIFEST_NAME,
    RoundManifest,
    read_manifest,
    resolve_file,
    round_dir,
    sha256_file,
)
from curriculum.errors import StateError, TripletDataError

TEXT_COLUMNS = ("anchor", "positive", "negative")


class PlanLike(Protocol):
    mixture: Mapping[str, float]
    alpha: Mapping[str, float]


class TripletSampler:
    """Batches `{"anchor", "positive", "negative", "alpha", "band"}` (lists, one item a row) from one round.

    A row whose `positive` is null is unsupervised: its positive is the anchor text (SimCSE's dropout
    positive). Rows are never split: a batch holds no text twice, whichever column it appears in.
    """

    def __init__(self, root: str | Path, round_: int, *, batch_size: int, seed: int = 0,
                 state: Mapping[str, Any] | None = None, verify_checksums: bool = False,
                 max_scan: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.root, self.round, self.batch_size, self.seed = Path(root), int(round_), int(batch_size), int(seed)
        self.manifest: RoundManifest = read_manifest(self.root, self.round)
        self._load(verify_checksums)
        # How many fresh rows one slot may examine before the band counts as exhausted for this batch.
        self.max_scan = max_scan if max_scan is not None else 8 * self.batch_size + 64
        self._batches = 0
        self._epoch = {b: 0 for b in self.bands}
        self._cursor = {b: 0 for b in self.bands}
        self._pending: dict[str, list[int]] = {b: [] for b in self.bands}
        self._perm: dict[str, tuple[int, np.ndarray]] = {}
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- loading
    def _load(self, verify_checksums: bool) -> None:
        manifest_path = round_dir(self.root, self.round) / MANIFEST_NAME
        by_band: dict[str, list[pa.Table]] = {}
        for entry in self.manifest.files:
            path = resolve_file(self.root, self.round, entry.path)
            if not path.is_file():
                raise TripletDataError(f"{path}: listed in {manifest_path} but missing; re-mine round {self.round}")
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as err:
                raise TripletDataError(f"{path}: not a readable Parquet file ({err}); re-mine round {self.round}") from None
            if parquet.metadata.num_rows != entry.rows:
                raise TripletDataError(f"{path}: has {parquet.metadata.num_rows} rows, manifest says {entry.rows}; "
                                       f"re-mine round {self.round}")
            if verify_checksums and entry.sha256 and sha256_file(path) != entry.sha256:
                raise TripletDataError(f"{path}: sha256 differs from {manifest_path}; the file changed after mining")
            schema = parquet.schema_arrow
            for column in TEXT_COLUMNS:
                if column not in schema.names:
                    raise TripletDataError(f"{path}: column '{column}' is missing; re-mine round {self.round}")
                if not (pa.types.is_string(schema.field(column).type) or pa.types.is_large_string(schema.field(column).type)):
                    raise TripletDataError(f"{path}: column '{column}' is {schema.field(column).type}, expected string")
            table = parquet.read(columns=list(TEXT_COLUMNS))
            for column in ("anchor", "negative"):
                nulls = table.column(column).null_count
                if nulls:
                    raise TripletDataError(f"{path}: column '{column}' has {nulls} null values; re-mine round {self.round}")
            by_band.setdefault(entry.band, []).append(table)

        for band, stats in self.manifest.bands.items():
            rows = sum(t.num_rows for t in by_band.get(band, []))
            if rows != stats.rows:
                raise TripletDataError(f"{manifest_path}: bands.{band}.rows is {stats.rows} but its files hold {rows} "
                                       f"rows; re-mine round {self.round}")
        unknown = sorted(set(by_band) - set(self.manifest.bands))
        if unknown:
            raise TripletDataError(f"{manifest_path}: files of band '{unknown[0]}' have no entry under 'bands'")

        # Bands in a fixed order (by name) so codes and states do not depend on manifest order.
        self.bands: dict[str, int] = {b: sum(t.num_rows for t in by_band[b]) for b in sorted(by_band)
                                      if sum(t.num_rows for t in by_band[b]) > 0}
        chunks: list[pa.Array] = []
        spans: list[tuple[str, int, int]] = []  # (band, first chunk, end chunk) per column, columns in order
        for band in self.bands:
            table = pa.concat_tables(by_band[band])
            anchor = table.column("anchor").cast(pa.large_string())
            positive = pc.coalesce(table.column("positive").cast(pa.large_string()), anchor)
            negative = table.column("negative").cast(pa.large_string())
            for column in (anchor, positive, negative):
                spans.append((band, len(chunks), len(chunks) + column.num_chunks))
                chunks.extend(column.chunks)
        self._codes: dict[str, np.ndarray] = {}
        if not chunks:
            self._dictionary = pa.array([], type=pa.large_string())
            return
        encoded = pa.chunked_array(chunks, type=pa.large_string()).dictionary_encode().unify_dictionaries()
        self._dictionary = encoded.chunks[0].dictionary
        per_band: dict[str, list[np.ndarray]] = {b: [] for b in self.bands}
        for band, start, end in spans:
            parts = [encoded.chunks[i].indices.to_numpy(zero_copy_only=False) for i in range(start, end)]
            per_band[band].append(np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))
        for band, columns in per_band.items():
            self._codes[band] = np.stack(columns, axis=1).astype(np.int64)  # rows x (anchor, positive, negative)

    @property
    def distinct_texts(self) -> int:
        return len(self._dictionary)

    # --------------------------------------------------------------- drawing
    def _permutation(self, band: str, epoch: int) -> np.ndarray:
        cached = self._perm.get(band)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, self.round, zlib.crc32(band.encode()), epoch])
            cached = (epoch, rng.permutation(self.bands[band]))
            self._perm[band] = cached
        return cached[1]

    def _take_row(self, band: str, used: set[int]) -> list[int] | None:
        """Codes of the next row of `band` sharing no text with `used`, deferring rows that do; None if none."""
        codes = self._codes[band]
        pending = self._pending[band]
        for i, row in enumerate(pending):
            row_codes = codes[row].tolist()
            if used.isdisjoint(row_codes):
                del pending[i]
                return row_codes
        rows = self.bands[band]
        epoch, cursor = self._epoch[band], self._cursor[band]
        perm = self._permutation(band, epoch)
        found = None
        for _ in range(min(self.max_scan, rows)):
            if cursor >= rows:
                epoch, cursor = epoch + 1, 0
                perm = self._permutation(band, epoch)
            row = int(perm[cursor])
            cursor += 1
            row_codes = codes[row].tolist()
            if used.isdisjoint(row_codes):
                found = row_codes
                break
            pending.append(row)
        self._epoch[band], self._cursor[band] = epoch, cursor
        return found

    def draw(self, plan: PlanLike) -> dict[str, list]:
        """The next batch under `plan.mixture` (band -> probability) and `plan.alpha` (band -> weight)."""
        mixture = {b: float(p) for b, p in plan.mixture.items() if p > 0}
        missing = [b for b in mixture if b not in self.bands]
        if missing:
            raise TripletDataError(f"{round_dir(self.root, self.round) / MANIFEST_NAME}: band '{missing[0]}' is in "
                                   f"the mixture but has no rows in round {self.round}")
        if not mixture:
            raise ValueError("the mixture gives no band a positive probability")
        names = list(mixture)
        probs = np.array([mixture[b] for b in names], dtype=np.float64)
        probs /= probs.sum()
        rng = np.random.default_rng([self.seed, self.round, self._batches])
        slots = rng.choice(len(names), size=self.batch_size, p=probs)

        used: set[int] = set()
        flat: list[int] = []  # anchor, positive, negative codes of each chosen row, in order
        bands: list[str] = []
        exhausted: set[int] = set()
        for slot in slots.tolist():
            while True:
                row_codes = None if slot in exhausted else self._take_row(names[slot], used)
                if row_codes is not None:
                    break
                exhausted.add(slot)
                left = [i for i in range(len(names)) if i not in exhausted]
                if not left:
                    raise TripletDataError(
                        f"round {self.round}: cannot fill a batch of {self.batch_size} rows without repeating a text "
                        f"({self.distinct_texts} distinct texts in bands {', '.join(names)}); use a smaller batch")
                weights = probs[left] / probs[left].sum()
                slot = left[int(rng.choice(len(left), p=weights))]
            used.update(row_codes)
            flat.extend(row_codes)
            bands.append(names[slot])
        self._batches += 1

        texts = self._dictionary.take(pa.array(flat, type=pa.int64())).to_pylist()
        alpha = plan.alpha
        return {
            "anchor": texts[0::3],
            "positive": texts[1::3],
            "negative": texts[2::3],
            "alpha": [float(alpha[b]) if b in alpha else 1.0 for b in bands],
            "band": bands,
        }

    def batches(self, plan: PlanLike, n: int) -> Iterator[dict[str, list]]:
        """`n` batches under a fixed plan (for per-step pacing, call `draw` with each new plan instead)."""
        for _ in range(n):
            yield self.draw(plan)

    # ------------------------------------------------------------------ state
    @property
    def batches_drawn(self) -> int:
        return self._batches

    def state_dict(self) -> dict[str, Any]:
        """The position, as JSON-ready integers: restoring it makes the next batches identical."""
        return {
            "round": self.round,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "batches": self._batches,
            "bands": {b: {"rows": self.bands[b], "epoch": self._epoch[b], "cursor": self._cursor[b],
                          "pending": list(self._pending[b])} for b in self.bands},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = {"round": self.round, "seed": self.seed, "batch_size": self.batch_size}
        for key, value in expected.items():
            if state.get(key) != value:
                raise StateError(f"sampler position: {key} is {state.get(key)!r} but this sampler has {value!r}; "
                                 f"it belongs to another round or run")
        bands = state.get("bands", {})
        rows = {b: s.get("rows") for b, s in bands.items()}
        if rows != self.bands:
            raise StateError(f"sampler position: band rows {rows} differ from round {self.round}'s {self.bands}; "
                             f"the round was re-mined after the position was saved")
        self._batches = int(state["batches"])
        for band, position in bands.items():
            self._epoch[band] = int(position["epoch"])
            self._cursor[band] = int(position["cursor"])
            self._pending[band] = [int(r) for r in position["pending"]]
