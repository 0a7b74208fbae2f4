"""Length-bucketed training batches with no repeated text inside a batch, deterministic for a seed.

Bucketing (sorting rows of similar length together) cuts padding, and so compute, because a batch is
padded to its longest text. A text repeated inside a batch would be a false in-batch negative (the same
sentence counted as a negative of itself), so a row that repeats a text already in the batch waits for a
later batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

TEXT_COLUMNS = ("anchor", "positive", "negative")


class BucketedBatches(Sequence[dict]):
    """The batches of one epoch as the batch dicts of the training contract; `set_epoch` reshuffles.

    `columns` maps column names to per-row lists: "anchor" (required), optional "positive", "negative"
    (str per row, or a list of k str per row), and any extra per-row columns ("alpha", "band", ...), carried
    along unchanged. Rows are shuffled with `(seed, epoch)`, cut into pools of `bucket_batches` batches,
    sorted by length inside a pool, packed into batches without repeated texts, and the batch order is
    shuffled. The last batch of an epoch may be smaller (a lone last row gets a partner from an earlier
    batch); a batch of one row that cannot get one is dropped (it has no in-batch negatives), as is any
    smaller last batch when `drop_last`.
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]], batch_size: int, *, seed: int = 0,
                 bucket_batches: int = 32, drop_last: bool = False) -> None:
        if "anchor" not in columns:
            raise ValueError("columns need an 'anchor' list")
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (in-batch negatives), got {batch_size}")
        n = len(columns["anchor"])
        for name, values in columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows, 'anchor' has {n}")
        self.columns = {name: list(values) for name, values in columns.items()}
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.bucket_batches = max(1, int(bucket_batches))
        self.drop_last = drop_last
        self.n_rows = n
        self._row_texts = [self._texts_of(i) for i in range(n)]
        self._lengths = np.array([max((len(t) for t in texts), default=0) for texts in self._row_texts])
        self.epoch = 0
        self._plan: list[list[int]] = self._make_plan(0)

    def _texts_of(self, i: int) -> tuple[str, ...]:
        texts: list[str] = []
        for name in TEXT_COLUMNS:
            if name not in self.columns:
                continue
            value = self.columns[name][i]
            if isinstance(value, (list, tuple)):
                texts.extend(str(v) for v in value)
            else:
                texts.append(str(value))
        return tuple(texts)

    def set_epoch(self, epoch: int) -> None:
        """Re-plan the batches for `epoch` (same seed and epoch => same batches)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._plan = self._make_plan(self.epoch)

    def _make_plan(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n_rows)
        pool_size = self.batch_size * self.bucket_batches
        batches: list[list[int]] = []
        carried: list[int] = []  # rows that did not fit (repeated text, or a partial last batch)
        for start in range(0, self.n_rows, pool_size):
            pool = carried + order[start:start + pool_size].tolist()
            pool.sort(key=lambda i: self._lengths[i])  # stable: ties keep the shuffled order
            full, carried = self._pack(pool)
            batches.extend(full)
        while carried:  # the end of the epoch: pack what is left, smaller last batches allowed
            full, rest = self._pack(carried)
            if full:
                batches.extend(full)
                carried = rest
                continue
            batch, rest = self._fill_one(carried)
            batches.append(batch)
            carried = rest
        if len(batches) > 1 and len(batches[-1]) == 1:
            self._give_partner(batches)
        batches = [b for b in batches if len(b) >= 2 and not (self.drop_last and len(b) < self.batch_size)]
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def _give_partner(self, batches: list[list[int]]) -> None:
        """Move a compatible row from an earlier batch to a last batch of one, so no row is lost."""
        lone = batches[-1]
        texts = self._row_texts[lone[0]]
        for batch in reversed(batches[:-1]):
            if len(batch) <= 2:
                continue
            for j, row in enumerate(batch):
                if set(self._row_texts[row]).isdisjoint(texts):
                    lone.append(batch.pop(j))
                    return

    def _fill_one(self, rows: list[int]) -> tuple[list[int], list[int]]:
        batch: list[int] = []
        seen: set[str] = set()
        rest: list[int] = []
        for i in rows:
            texts = self._row_texts[i]
            if len(batch) < self.batch_size and seen.isdisjoint(texts):
                batch.append(i)
                seen.update(texts)
            else:
                rest.append(i)
        return batch, rest

    def _pack(self, rows: list[int]) -> tuple[list[list[int]], list[int]]:
        """Full batches from `rows` in order, each free of repeated texts, and the rows left over.

        A row whose text is already in the open batch is deferred, and deferred rows get the first
        places in the next batch, so they stay near rows of their length.
        """
        full: list[list[int]] = []
        batch: list[int] = []
        seen: set[str] = set()
        deferred: list[int] = []
        for i in rows:
            if seen.isdisjoint(self._row_texts[i]):
                batch.append(i)
                seen.update(self._row_texts[i])
            else:
                deferred.append(i)
            while len(batch) == self.batch_size:
                full.append(batch)
                batch, deferred = self._fill_one(deferred)
                seen = {t for j in batch for t in self._row_texts[j]}
        return full, batch + deferred

    def __len__(self) -> int:
        return len(self._plan)

    def __getitem__(self, index: int) -> dict:  # type: ignore[override]
        rows = self._plan[index]
        return {name: [values[i] for i in rows] for name, values in self.columns.items()}

    def __iter__(self) -> Iterator[dict]:
        for index in range(len(self._plan)):
            yield self[index]

    def row_indices(self, index: int) -> list[int]:
        """The source rows of batch `index` in this epoch."""
        return list(self._plan[index])


def unsupervised_batches(sentences: Sequence[str], batch_size: int, *, seed: int = 0, **kwargs: Any
                         ) -> BucketedBatches:
    """Batches of `{"anchor": [...]}`: each sentence is its own positive under a second dropout mask."""
    return BucketedBatches({"anchor": list(sentences)}, batch_size, seed=seed, **kwargs)


def triplet_batches(anchor: Sequence[str], positive: Sequence[str], negative: Sequence[Any] | None,
                    batch_size: int, *, seed: int = 0, **kwargs: Any) -> BucketedBatches:
    """Batches of `{"anchor", "positive"(, "negative")}` (negative: str or k str per row)."""
    columns: dict[str, Sequence[Any]] = {"anchor": anchor, "positive": positive}
    if negative is not None:
        columns["negative"] = negative
    return BucketedBatches(columns, batch_size, seed=seed, **kwargs)
