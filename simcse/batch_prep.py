"""Training batches made ready for the model: tokenised, packed or padded, on a background thread.

`prepare_batch` turns one batch of the training contract (`{"anchor"}`, or `{"anchor", "positive"[,
"negative"[, "alpha"]]}`: see simcse.train) into the inputs of the trainer's one forward per step, with the
batch's α and the mask of in-batch candidates that repeat a row's own sentence. Tokenising is the hidden
bottleneck on a GPU, so `Prefetcher` prepares the next batches on a thread while the current one trains (the
Rust tokenizer releases the GIL); `batch_stream` walks re-iterable batches from a position on, across epochs,
which is how a resumed run skips the batches it already consumed.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dataio.errors import InputError
from simcse.distill import TeacherTable, batch_teacher_sims
from simcse.packing import PackedBatch, pack_sequences
from simcse.tokenizing import pad_batch


@dataclass
class PreparedBatch:
    """One step's model inputs and what the loss needs besides them."""

    inputs: PackedBatch | tuple[torch.Tensor, torch.Tensor]  # packed rows, or padded (input_ids, mask)
    rows: int
    k: int  # hard negatives per row (0: none); -1: unsupervised
    alpha: Any
    epoch: int
    index: int
    exclude: torch.Tensor | None = None  # candidates that repeat a row's own sentence (see `false_negative_mask`)
    teacher_sims: torch.Tensor | None = None  # the teacher's cosines of each anchor and candidate (simcse.distill)


def negatives_per_row(batch: Mapping[str, Any], rows: int) -> list[list[str]] | None:
    """The batch's hard negatives as k per row (one text per row counts as k = 1); None without negatives."""
    negs = batch.get("negative")
    if negs is None:
        return None
    if len(negs) != rows:
        raise ValueError(f"batch has {rows} anchors but {len(negs)} negatives")
    cols = [list(n) if isinstance(n, (list, tuple)) else [n] for n in negs]
    k = len(cols[0])
    if k == 0 or any(len(c) != k for c in cols):
        raise ValueError("every row of a batch needs the same number (>= 1) of negatives")
    return cols


def false_negative_mask(anchors: list[str], positives: list[str], negatives: list[list[str]] | None
                        ) -> torch.Tensor | None:
    """[rows, rows + rows*k] mask of in-batch candidates whose text is the row's own positive or anchor.

    A batch keeps anchors and positives distinct, but a mined negative of one row may be another row's
    sentence (a tweet that is both an anchor and someone's nearest neighbour); for that other row it is the
    same sentence as its positive, not a negative. None when there is no such candidate (the usual case).
    """
    rows = len(anchors)
    candidates = list(positives) + [t for row in (negatives or []) for t in row]
    own = [{a, p} for a, p in zip(anchors, positives)]
    where = {}
    for column, text in enumerate(candidates):
        where.setdefault(text, []).append(column)
    hits = [(i, c) for i in range(rows) for text in own[i] for c in where.get(text, ()) if c != i]
    if not hits:
        return None
    mask = torch.zeros((rows, len(candidates)), dtype=torch.bool)
    index = torch.tensor(hits, dtype=torch.long)
    mask[index[:, 0], index[:, 1]] = True
    return mask


def _rows(values: list[Any], shard: slice | None) -> list[Any]:
    return values if shard is None else values[shard]


def prepare_batch(batch: Mapping[str, Any], tokenize: Callable[[list[str]], list[list[int]]], pad_id: int,
                  default_alpha: float, pin: bool, epoch: int, index: int, pack_offset: int | None = None,
                  shard: slice | None = None, teacher: TeacherTable | None = None) -> PreparedBatch:
    """Tokenised inputs of the batch, or of its rows `shard` (a data-parallel rank's block); `rows`, α and
    `exclude` are always the whole batch's, as the loss is taken over the whole (gathered) batch. With a
    `teacher`, its cosines of the batch's anchors and candidates (distillation)."""
    anchors = [str(t) for t in batch["anchor"]]
    rows = len(anchors)
    if rows < 2:
        raise ValueError("a batch needs at least 2 rows (in-batch negatives)")
    positives = batch.get("positive")
    if positives is None and batch.get("negative") is not None:
        positives = anchors  # unsupervised with hard negatives: the positive is a second dropout view
    exclude = None
    teacher_sims = None
    if positives is None:
        ids = tokenize(_rows(anchors, shard))
        ids = ids + ids  # two dropout views of each sentence, in the same forward
        k, alpha = -1, None
        if teacher is not None:
            teacher_sims = batch_teacher_sims(teacher, anchors, None, None)
    else:
        if len(positives) != rows:
            raise ValueError(f"batch has {rows} anchors but {len(positives)} positives")
        positives = [str(t) for t in positives]
        negs = negatives_per_row(batch, rows)
        texts = _rows(anchors, shard) + _rows(positives, shard)
        k = 0
        if negs is not None:
            k = len(negs[0])
            negs = [[str(t) for t in row] for row in negs]
            texts += [t for row in _rows(negs, shard) for t in row]
        exclude = false_negative_mask(anchors, positives, negs)
        if teacher is not None:
            teacher_sims = batch_teacher_sims(teacher, anchors, positives, negs)
        ids = tokenize(texts)
        alpha = batch.get("alpha")
        if alpha is None:
            alpha = default_alpha
        alpha = torch.as_tensor(alpha, dtype=torch.float32) if not isinstance(alpha, float) else alpha
    inputs: PackedBatch | tuple[torch.Tensor, torch.Tensor]
    if pack_offset is not None:
        inputs = pack_sequences(ids, pad_id, position_offset=pack_offset)
        if pin:
            inputs = inputs.pin_memory()
    else:
        input_ids, mask = pad_batch(ids, pad_id)
        inputs = (input_ids.pin_memory(), mask.pin_memory()) if pin else (input_ids, mask)
    return PreparedBatch(inputs, rows, k, alpha, epoch, index, exclude, teacher_sims)


class Prefetcher:
    """Tokenises and pads the next batches on a thread while the current batch trains."""

    _DONE = object()

    def __init__(self, source: Iterator[tuple[int, int, Mapping[str, Any]]], prepare: Callable[..., PreparedBatch],
                 depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source, self._prepare = source, prepare
        self._thread = threading.Thread(target=self._run, name="simcse-tokenise", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for epoch, index, batch in self._source:
                if self._stop.is_set():
                    return
                item = self._prepare(batch, epoch=epoch, index=index)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            self._queue.put(self._DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which re-raises it
            self._queue.put(exc)

    def __iter__(self) -> Iterator[PreparedBatch]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass


def batch_stream(batches: Iterable[Mapping[str, Any]], epoch: int, index: int, needed: int
                 ) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    """(epoch, index-in-epoch, batch) from a position on, across epochs, `needed` batches in all."""
    produced = 0
    while produced < needed:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        got = 0
        for i, batch in enumerate(itertools.islice(iter(batches), index, None), start=index):
            yield epoch, i, batch
            got += 1
            produced += 1
            if produced >= needed:
                return
        if got == 0 and index == 0:
            raise InputError("the training data gave no batches; check the corpus and the batch size")
        epoch, index = epoch + 1, 0
