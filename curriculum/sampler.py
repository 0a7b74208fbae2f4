"""TripletSampler: paired training batches from one mined round, negatives drawn by the scheduler's mixture.

Paired sampling, so that two arms of an experiment (or two curricula) with one seed differ only in their
negatives:
- The *anchors* of every batch depend on (seed, round, epoch) alone. Each anchor (an anchor text with its
  positive; unsupervised rows are their own positive) gets a counter-based hash key; an epoch visits the
  round's anchors in the order of their keys salted by (seed, round, epoch), packed greedily into batches
  whose anchors and positives never repeat a text (a row that would is deferred to the next batch).
  Anchors are the union over the round's bands, so any mixture sees the same anchor sequence.
- The *negative* of each slot comes from a band drawn from the plan's mixture, restricted to the bands that
  have a row for that anchor (exponential races keyed by (seed, round, epoch, anchor, band), so arms with
  different mixtures share their random numbers), and then that anchor's row in the band. An anchor with no
  row in any band of the mixture takes its row from the band whose measured difficulty is closest to the
  mixture's (counted as `fallbacks`).
- `negatives_per_anchor = k > 1` draws k distinct bands per anchor (one negative each, α per band); an anchor
  with fewer than k bands gets padding columns of weight α = 0, which the loss removes exactly.
A negative may equal another row's anchor or positive text; the trainer masks such candidates for that row
(`simcse.train`), so the batch itself stays a function of the anchors.

Why hand-written: no library sampler pairs anchors across band mixtures that change during training and
resumes exactly from a small JSON position (epoch and batch index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curriculum.errors import StateError
from dataio.errors import TripletDataError
from dataio.hashing import hash_strings, salt_of, splitmix64, uniform_open
from dataio.triplet_layout import DEFAULT_ALPHA, DifficultyMeasure, TripletBatch, manifest_path
from dataio.triplets import RoundManifest, read_manifest, resolve_file, sha256_matches

TEXT_COLUMNS = ("anchor", "positive", "negative")
PADDING_BAND = "none"  # the band name of an α = 0 padding column (k > 1, too few bands for an anchor)

class PlanLike(Protocol):
    mixture: Mapping[str, float]
    alpha: Mapping[str, float]


class TripletSampler:
    """Batches (`dataio.triplet_layout.TripletBatch`: anchor, positive, negative, alpha, band; one item a row) from one
    mined round.

    With `negatives_per_anchor` k > 1, "negative", "alpha" and "band" hold k items per row. A row whose
    `positive` is null is unsupervised: its positive is the anchor text (SimCSE's dropout positive).
    """

    def __init__(self, root: str | Path, round_: int, *, batch_size: int, seed: int = 0,
                 state: Mapping[str, Any] | None = None, verify_checksums: bool = False,
                 negatives_per_anchor: int = 1, difficulty: DifficultyMeasure = "student") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if negatives_per_anchor < 1:
            raise ValueError(f"negatives_per_anchor must be >= 1, got {negatives_per_anchor}")
        self.root, self.round, self.batch_size, self.seed = Path(root), int(round_), int(batch_size), int(seed)
        self.k = int(negatives_per_anchor)
        self.difficulty = difficulty  # what the bands' difficulties are (a band an anchor lacks: the closest)
        self.manifest: RoundManifest = read_manifest(self.root, self.round)
        self._load(verify_checksums)
        self._epoch, self._index, self._batches, self.fallbacks = 0, 0, 0, 0
        self._plan: tuple[int, list[np.ndarray]] | None = None
        if state is not None:
            self.load_state_dict(state)

    # ---------------------------------------------------------------- loading
    def _load(self, verify_checksums: bool) -> None:
        manifest_file = manifest_path(self.root, self.round)
        by_band: dict[str, list[pa.Table]] = {}
        for entry in self.manifest.files:
            path = resolve_file(self.root, self.round, entry.path)
            if not path.is_file():
                raise TripletDataError(f"{path}: listed in {manifest_file} but missing; re-mine round {self.round}")
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as err:
                raise TripletDataError(f"{path}: not a readable Parquet file ({err}); "
                                       f"re-mine round {self.round}") from None
            if parquet.metadata.num_rows != entry.rows:
                raise TripletDataError(f"{path}: has {parquet.metadata.num_rows} rows, manifest says {entry.rows}; "
                                       f"re-mine round {self.round}")
            if verify_checksums and not sha256_matches(path, entry.sha256):
                raise TripletDataError(f"{path}: changed after mining (its sha256 differs from {manifest_file}); "
                                       f"re-mine round {self.round}")
            schema = parquet.schema_arrow
            for column in TEXT_COLUMNS:
                if column not in schema.names:
                    raise TripletDataError(f"{path}: column '{column}' is missing; re-mine round {self.round}")
                column_type = schema.field(column).type
                if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
                    raise TripletDataError(f"{path}: column '{column}' is {column_type}, expected string")
            # positive_source (schema 3): a mined positive does not make its row another anchor (see below)
            table = parquet.read(columns=list(TEXT_COLUMNS) + (["positive_source"] if "positive_source" in
                                                              schema.names else []))
            for column in ("anchor", "negative"):
                nulls = table.column(column).null_count
                if nulls:
                    raise TripletDataError(f"{path}: column '{column}' has {nulls} null values; "
                                           f"re-mine round {self.round}")
            by_band.setdefault(entry.band, []).append(table)

        for band, stats in self.manifest.bands.items():
            rows = sum(t.num_rows for t in by_band.get(band, []))
            if rows != stats.rows:
                raise TripletDataError(f"{manifest_file}: bands.{band}.rows is {stats.rows} but its files hold {rows} "
                                       f"rows; re-mine round {self.round}")
        unknown = sorted(set(by_band) - set(self.manifest.bands))
        if unknown:
            raise TripletDataError(f"{manifest_file}: files of band '{unknown[0]}' have no entry under 'bands'")

        # Bands in a fixed order (by name), so nothing depends on the manifest's order.
        self.bands: dict[str, int] = {b: n for b in sorted(by_band) if (n := sum(t.num_rows for t in by_band[b])) > 0}
        self.difficulties = self.manifest.difficulties(self.difficulty)
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
        if not chunks:
            self._dictionary = pa.array([], type=pa.large_string())
            self._set_universe({}, np.empty(0, np.uint64))
            return
        encoded = pa.chunked_array(chunks, type=pa.large_string()).dictionary_encode().unify_dictionaries()
        self._dictionary = encoded.chunks[0].dictionary
        text_hash = hash_strings(self._dictionary.to_pylist())
        codes: dict[str, np.ndarray] = {}
        mined: dict[str, np.ndarray] = {}
        for band in self.bands:
            flags = [t.column("positive_source").to_numpy(zero_copy_only=False) == "mined"
                     if "positive_source" in t.column_names else np.zeros(t.num_rows, dtype=bool)
                     for t in by_band[band]]
            mined[band] = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
        per_band: dict[str, list[np.ndarray]] = {b: [] for b in self.bands}
        for band, start, end in spans:
            parts = [encoded.chunks[i].indices.to_numpy(zero_copy_only=False) for i in range(start, end)]
            per_band[band].append(np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))
        for band, columns in per_band.items():
            codes[band] = np.stack(columns, axis=1).astype(np.int64)  # rows x (anchor, positive, negative)
        self._set_universe(codes, text_hash, mined)

    def _set_universe(self, codes: dict[str, np.ndarray], text_hash: np.ndarray,
                      mined: dict[str, np.ndarray] | None = None) -> None:
        """The anchors (anchor text, positive text) of every band, and each band's rows grouped by anchor.

        A row whose positive a judge mined (`mined`) is keyed as the unsupervised anchor it stands for (anchor,
        anchor): its place in the anchor order is the one the anchor has in a round without mined positives, so
        arms with and without them draw the same anchor sequence (paired sampling); only the positive differs."""
        self._codes = codes
        if not codes:
            self._u_key = np.empty(0, dtype=np.uint64)
            self._u_text = np.empty((0, 2), dtype=np.int64)
            self._band_rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            return
        mined = mined or {}
        keys_by_band = {b: splitmix64(text_hash[c[:, 0]] ^ splitmix64(text_hash[np.where(
            mined.get(b, np.zeros(len(c), dtype=bool)), c[:, 0], c[:, 1])])) for b, c in codes.items()}
        all_keys = np.concatenate(list(keys_by_band.values()))
        all_pairs = np.concatenate([c[:, :2] for c in codes.values()])
        self._u_key, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
        self._u_text = all_pairs[first]  # (anchor code, positive code) of each anchor
        inverse = inverse.reshape(-1)
        offset = 0
        self._band_rows = {}
        n_u = len(self._u_key)
        for band, c in codes.items():
            u = inverse[offset:offset + len(c)]
            offset += len(c)
            order = np.argsort(u, kind="stable")  # the band's rows grouped by anchor, file order inside
            count = np.bincount(u, minlength=n_u)
            start = np.concatenate([[0], np.cumsum(count)[:-1]])
            self._band_rows[band] = (order, start, count)

    @property
    def anchors(self) -> int:
        """Distinct anchors (anchor text, positive text) in the round's bands."""
        return len(self._u_key)

    @property
    def distinct_texts(self) -> int:
        return len(self._dictionary)

    def _fingerprint(self) -> str:
        return hashlib.sha256(np.sort(self._u_key).tobytes()).hexdigest()[:16]

    # --------------------------------------------------------------- the anchor plan
    def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches (anchor indices): the anchors in salted-key order, packed without repeats.

        Rows left over at the end (a partial batch, rows that never fit) wait for another epoch, where the
        order is new."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        salt = np.uint64(salt_of("anchors", self.seed, self.round, epoch))
        order = np.argsort(splitmix64(self._u_key ^ salt), kind="stable")
        texts = self._u_text
        batches: list[np.ndarray] = []
        batch: list[int] = []
        used: set[int] = set()
        deferred: list[int] = []
        for u in order.tolist():
            a, p = int(texts[u, 0]), int(texts[u, 1])
            if a in used or p in used:
                deferred.append(u)
                continue
            batch.append(u)
            used.add(a)
            used.add(p)
            if len(batch) == self.batch_size:
                batches.append(np.asarray(batch, dtype=np.int64))
                batch, used, waiting, deferred = [], set(), deferred, []
                for w in waiting:  # deferred rows first in the next batch, so they stay near their turn
                    a, p = int(texts[w, 0]), int(texts[w, 1])
                    if (a in used or p in used) or len(batch) == self.batch_size:
                        deferred.append(w)
                        continue
                    batch.append(w)
                    used.add(a)
                    used.add(p)
                if len(batch) == self.batch_size:
                    batches.append(np.asarray(batch, dtype=np.int64))
                    batch, used = [], set()
        if not batches:
            raise TripletDataError(
                f"round {self.round}: cannot fill a batch of {self.batch_size} rows without repeating a text "
                f"({self.anchors} anchors, {self.distinct_texts} distinct texts in bands "
                f"{', '.join(self.bands)}); use a smaller batch")
        self._plan = (epoch, batches)
        return batches

    # --------------------------------------------------------------- drawing
    def draw(self, plan: PlanLike) -> TripletBatch:
        """The next batch: the next anchors of the plan, each with a negative from a band of `plan.mixture`."""
        mixture = {b: float(p) for b, p in plan.mixture.items() if p > 0}
        missing = [b for b in mixture if b not in self.bands]
        if missing:
            raise TripletDataError(f"{manifest_path(self.root, self.round)}: band '{missing[0]}' is in "
                                   f"the mixture but has no rows in round {self.round}")
        if not mixture:
            raise ValueError("the mixture gives no band a positive probability")
        batches = self._epoch_plan(self._epoch)
        if self._index >= len(batches):
            self._epoch, self._index = self._epoch + 1, 0
            batches = self._epoch_plan(self._epoch)
        anchors = batches[self._index]
        chosen_band, chosen_row = self._choose(anchors, mixture)
        self._index += 1
        self._batches += 1

        names = list(self.bands)
        rows_n = len(anchors)
        codes = np.empty((rows_n, 2 + self.k), dtype=np.int64)
        codes[:, 0:2] = self._u_text[anchors]
        alpha = np.zeros((rows_n, self.k), dtype=np.float64)
        band_names: list[list[str]] = [[PADDING_BAND] * self.k for _ in range(rows_n)]
        for j in range(self.k):
            for b_index, band in enumerate(names):
                pick = chosen_band[:, j] == b_index
                if pick.any():
                    codes[pick, 2 + j] = self._codes[band][chosen_row[pick, j], 2]
                    alpha[pick, j] = float(plan.alpha.get(band, DEFAULT_ALPHA))
                    for i in np.nonzero(pick)[0].tolist():
                        band_names[i][j] = band
            pad = chosen_band[:, j] < 0
            codes[pad, 2 + j] = codes[pad, 0]  # α = 0 below: the loss removes this column exactly
        texts = self._dictionary.take(pa.array(codes.reshape(-1), type=pa.int64())).to_pylist()
        width = 2 + self.k
        anchor = texts[0::width]
        positive = texts[1::width]
        if self.k == 1:
            negative: list[Any] = texts[2::width]
            return {"anchor": anchor, "positive": positive, "negative": negative,
                    "alpha": alpha[:, 0].tolist(), "band": [b[0] for b in band_names]}
        negative = [texts[i * width + 2:(i + 1) * width] for i in range(rows_n)]
        return {"anchor": anchor, "positive": positive, "negative": negative, "alpha": alpha.tolist(),
                "band": band_names}

    def _choose(self, anchors: np.ndarray, mixture: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """(band index, row in band) per anchor and negative column; band -1 marks α = 0 padding."""
        names = list(self.bands)
        rows_n, n_b = len(anchors), len(names)
        keys = self._u_key[anchors]
        race = np.full((rows_n, n_b), np.inf)
        available = np.zeros((rows_n, n_b), dtype=bool)
        for b, band in enumerate(names):
            count = self._band_rows[band][2][anchors]
            available[:, b] = count > 0
            p = mixture.get(band, 0.0)
            if p > 0:
                u = uniform_open(keys, salt_of("band", self.seed, self.round, self._epoch, band))
                race[:, b] = np.where(available[:, b], -np.log(u) / p, np.inf)
        order = np.argsort(race, axis=1, kind="stable")[:, :self.k]
        chosen = np.where(np.take_along_axis(race, order, axis=1) < np.inf, order, -1)
        none = chosen[:, 0] < 0
        if none.any():  # no band of the mixture has a row for these anchors: the closest band by difficulty
            self.fallbacks += int(none.sum())
            chosen[none, 0] = self._closest_band(available[none], mixture)
        rows = np.full(chosen.shape, -1, dtype=np.int64)
        for b, band in enumerate(names):
            order_b, start, count = self._band_rows[band]
            for j in range(self.k):
                pick = chosen[:, j] == b
                if not pick.any():
                    continue
                u = uniform_open(keys[pick], salt_of("row", self.seed, self.round, self._epoch, band))
                offset = np.minimum((u * count[anchors[pick]]).astype(np.int64), count[anchors[pick]] - 1)
                rows[pick, j] = order_b[start[anchors[pick]] + offset]
        return chosen, rows

    def _closest_band(self, available: np.ndarray, mixture: Mapping[str, float]) -> np.ndarray:
        names = list(self.bands)
        target = sum(p * self.difficulties.get(b, 0.0) for b, p in mixture.items()) / max(sum(mixture.values()), 1e-12)
        distance = np.array([abs(self.difficulties.get(b, np.inf) - target) for b in names])
        scores = np.where(available, distance[None, :], np.inf)
        return np.argmin(scores, axis=1)  # every anchor has a row in at least one band of the round

    def batches(self, plan: PlanLike, n: int) -> Iterator[TripletBatch]:
        """`n` batches under a fixed plan (for per-step pacing, call `draw` with each new plan instead)."""
        for _ in range(n):
            yield self.draw(plan)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The position, as JSON-ready values: restoring it makes the next batches identical."""
        return {"round": self.round, "seed": self.seed, "batch_size": self.batch_size,
                "negatives_per_anchor": self.k, "anchors": self._fingerprint(), "epoch": self._epoch,
                "index": self._index, "batches": self._batches, "fallbacks": self.fallbacks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = {"round": self.round, "seed": self.seed, "batch_size": self.batch_size,
                    "negatives_per_anchor": self.k}
        for key, value in expected.items():
            if state.get(key, 1 if key == "negatives_per_anchor" else None) != value:
                raise StateError(f"sampler position: {key} is {state.get(key)!r} but this sampler has {value!r}; "
                                 f"it belongs to another round or run")
        if state.get("anchors") != self._fingerprint():
            raise StateError(f"sampler position: the anchors of round {self.round} differ from those the position "
                             f"was saved with; the round was re-mined after the position was saved")
        self._epoch, self._index = int(state["epoch"]), int(state["index"])
        self._batches, self.fallbacks = int(state["batches"]), int(state.get("fallbacks", 0))
