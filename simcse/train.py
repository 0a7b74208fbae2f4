"""The SimCSE training loop: one forward per batch, tokenising ahead on a background thread, resumable.

Batches are the plain dicts of the training contract: `{"anchor"}` (unsupervised: the positive is the same
sentence under a second dropout mask) or `{"anchor", "positive"[, "negative"[, "alpha"]]}` (supervised).
Each step encodes the whole batch (anchors + positives + negatives, or the anchors twice) in ONE forward
pass, so one padded matrix keeps the accelerator busy. Tokenising is the hidden bottleneck on a GPU, so a
thread tokenises and pads the next batches while the current one trains (the Rust tokenizer releases the
GIL). A checkpoint (weights in safetensors, optimizer/scheduler/RNG state) is written atomically every
`save_every` steps; calling `train` again on the same output folder resumes from it and reaches the same
weights as an uninterrupted run. With several GPUs (or `devices`), one process per device trains its block of
each batch and the loss is taken over the whole gathered batch (simcse.distributed).
"""

from __future__ import annotations

import itertools
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataio.atomic import atomic_dir, atomic_write_json, recover_dir
from dataio.errors import InputError
from simcse import distributed
from simcse.devices import training_uses_bf16
from simcse.evaluation import primary_score
from simcse.losses import sup_simcse_loss, unsup_simcse_loss
from simcse.model import SimCSEEncoder
from simcse.model_card import ModelCardInfo, training_card
from simcse.packing import PackedBatch, pack_sequences
from simcse.tokenizing import pad_batch
from simcse.train_config import TrainConfig  # its home needs no torch; imported from here too

CHECKPOINT = "checkpoint"
BEST = "best"
MODEL = "model"
OPTIMIZER = "optimizer"  # the optimizer's state after the last step, for a run that continues in a later call
OPTIMIZER_FILE = "optimizer.pt"
RESULT = "train_result.json"
# Settings that change the trajectory: a checkpoint made with other values cannot be resumed.
TRAJECTORY_FIELDS = ("lr", "warmup_ratio", "weight_decay", "max_grad_norm", "max_steps", "epochs",
                     "temperature", "alpha", "seed", "precision", "schedule_steps", "schedule_offset")


@dataclass
class TrainResult:
    """What a training run did; also written to `output_dir/train_result.json`."""

    steps: int
    history: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    best_metric: float | None
    best_step: int | None
    train_accuracy: float | None
    model_path: str
    best_path: str | None
    triplets_per_s: float | None
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_model_path(self) -> str:
        """The best dev checkpoint when there was an evaluator, else the final model."""
        return self.best_path or self.model_path


# sentence-transformers' evaluator contract: a callable returning a number or a mapping, with `primary_metric`
# naming the mapping's score and `greater_is_better` (simcse.evaluation.SimCSEEvaluator is one).
Evaluator = Callable[[SimCSEEncoder], "float | Mapping[str, Any]"]


@dataclass
class _Prepared:
    inputs: PackedBatch | tuple[torch.Tensor, torch.Tensor]  # packed rows, or padded (input_ids, mask)
    rows: int
    k: int  # hard negatives per row (0: none); -1: unsupervised
    alpha: Any
    epoch: int
    index: int
    exclude: torch.Tensor | None = None  # candidates that repeat a row's own sentence (see `_false_negatives`)


def _negatives_of(batch: Mapping[str, Any], rows: int) -> list[list[str]] | None:
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


def _false_negatives(anchors: list[str], positives: list[str], negatives: list[list[str]] | None
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


def _prepare(batch: Mapping[str, Any], tokenize: Callable[[list[str]], list[list[int]]], pad_id: int,
             default_alpha: float, pin: bool, epoch: int, index: int, pack_offset: int | None = None,
             shard: slice | None = None) -> _Prepared:
    """Tokenised inputs of the batch, or of its rows `shard` (a data-parallel rank's block); `rows`, α and
    `exclude` are always the whole batch's, as the loss is taken over the whole (gathered) batch."""
    anchors = [str(t) for t in batch["anchor"]]
    rows = len(anchors)
    if rows < 2:
        raise ValueError("a batch needs at least 2 rows (in-batch negatives)")
    positives = batch.get("positive")
    if positives is None and batch.get("negative") is not None:
        positives = anchors  # unsupervised with hard negatives: the positive is a second dropout view
    exclude = None
    if positives is None:
        ids = tokenize(_rows(anchors, shard))
        ids = ids + ids  # two dropout views of each sentence, in the same forward
        k, alpha = -1, None
    else:
        if len(positives) != rows:
            raise ValueError(f"batch has {rows} anchors but {len(positives)} positives")
        positives = [str(t) for t in positives]
        negs = _negatives_of(batch, rows)
        texts = _rows(anchors, shard) + _rows(positives, shard)
        k = 0
        if negs is not None:
            k = len(negs[0])
            negs = [[str(t) for t in row] for row in negs]
            texts += [t for row in _rows(negs, shard) for t in row]
        exclude = _false_negatives(anchors, positives, negs)
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
    return _Prepared(inputs, rows, k, alpha, epoch, index, exclude)


class _Prefetcher:
    """Tokenises and pads the next batches on a thread while the current batch trains."""

    _DONE = object()

    def __init__(self, source: Iterator[tuple[int, int, Mapping[str, Any]]], prepare: Callable[..., _Prepared],
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

    def __iter__(self) -> Iterator[_Prepared]:
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


def _batch_stream(batches: Iterable[Mapping[str, Any]], epoch: int, index: int, needed: int
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


def _loss_and_backward(item: _Prepared, encoder: SimCSEEncoder, forward: torch.nn.Module | None,
                       dp: distributed.Group | None, temperature: float, device: torch.device, bf16: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's forward (of this rank's block under data parallelism, through `forward`, the DDP wrapper),
    the loss over the whole batch, and its backward; returns (loss, accuracy)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if isinstance(item.inputs, PackedBatch):
            packed = item.inputs.to(device, non_blocking=True)
            emb = encoder.forward_packed(packed) if forward is None else forward(packed)
        else:
            input_ids, mask = (t.to(device, non_blocking=True) for t in item.inputs)
            emb = encoder(input_ids, mask) if forward is None else forward(input_ids, mask)
    rows = item.rows
    if dp is not None:  # this rank's block -> the whole batch (other ranks' rows without gradient)
        emb = dp.gather_batch(emb, item.k, rows)
    if item.k < 0:
        loss, acc = unsup_simcse_loss(emb[:rows], emb[rows:], temperature)
    else:
        negatives = emb[2 * rows:].view(rows, item.k, -1) if item.k else None
        alpha = item.alpha.to(device, non_blocking=True) if isinstance(item.alpha, torch.Tensor) else item.alpha
        loss, acc = sup_simcse_loss(emb[:rows], emb[rows:2 * rows], negatives, alpha, temperature, item.exclude)
    # DDP averages gradients over ranks, and each rank's is the global loss's through its own rows only
    (loss if dp is None else loss * dp.world).backward()
    return loss, acc


def _total_steps(batches: Iterable[Mapping[str, Any]], config: TrainConfig) -> int:
    if config.max_steps:
        return config.max_steps
    if not hasattr(batches, "__len__"):
        raise ValueError("batches without a length need config.max_steps")
    total = 0
    for epoch in range(config.epochs):
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        total += len(batches)  # type: ignore[arg-type]
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(0)
    if total == 0:
        raise InputError("the training data gave no batches; check the corpus and the batch size")
    return total


def _optimizer(encoder: SimCSEEncoder, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in encoder.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases and LayerNorm weights
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel: much faster than the per-tensor loop (docs/benchmarks.md, "Figures behind code choices")
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def _trajectory(config: TrainConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in TRAJECTORY_FIELDS}


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    index: int = 0  # next batch to take within `epoch`
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    rows: int = 0


def _save_checkpoint(path: Path, encoder: SimCSEEncoder, optimizer: torch.optim.Optimizer, scheduler: Any,
                     state: _State, config: TrainConfig, total: int,
                     rng_ranks: list[dict[str, Any]] | None = None) -> None:
    from safetensors.torch import save_model

    with atomic_dir(path) as tmp:
        save_model(encoder, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if rng_ranks is not None:  # data-parallel: every rank's dropout stream
            rng["ranks"] = rng_ranks
        torch.save(rng, tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({
            **asdict(state), "total_steps": total, "trajectory": _trajectory(config)}, indent=1) + "\n")


def _load_checkpoint(path: Path, encoder: SimCSEEncoder, optimizer: torch.optim.Optimizer, scheduler: Any,
                     config: TrainConfig, total: int, rank: int = 0) -> _State:
    from safetensors.torch import load_model

    saved = json.loads((path / "trainer_state.json").read_text())
    for name, value in saved["trajectory"].items():
        now = getattr(config, name)
        if now != value:
            raise InputError(f"the checkpoint here was trained with {name}={value!r}, now {name}={now!r}; "
                             f"resume with the same settings or use a new output folder", path=path)
    if saved["total_steps"] != total:
        raise InputError(f"the checkpoint here plans {saved['total_steps']} steps, this run {total}; the data "
                         f"or the batch size changed: use a new output folder", path=path)
    device = encoder.device
    load_model(encoder, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    if rank:  # a data-parallel rank continues its own stream; one the checkpoint lacks gets a fresh one
        ranks = rng.get("ranks") or []
        fresh = torch.Generator().manual_seed(hash((config.seed, rank, saved["step"])) % 2**63)
        rng = ranks[rank] if rank < len(ranks) else {"cpu": fresh.get_state()}
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    fields = {k: v for k, v in saved.items() if k in _State.__dataclass_fields__}
    return _State(**fields)


def linear_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then linear decay to 0 (as transformers' `get_linear_schedule_with_warmup`), over the run's
    `schedule_steps` with this call starting at `schedule_offset`; one call alone is the whole schedule."""
    total = config.schedule_steps or steps
    offset = config.schedule_offset
    if offset + steps > total:
        raise ValueError(f"schedule_offset {offset} + {steps} steps exceeds schedule_steps {total}")
    warmup = math.ceil(config.warmup_ratio * total)

    def factor(step: int) -> float:
        g = offset + step
        if g < warmup:
            return g / max(1, warmup)
        return max(0.0, (total - g) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_optimizer_state(optimizer: torch.optim.Optimizer, folder: str | Path, device: torch.device) -> None:
    """Continue with the optimizer state a previous call saved (`save_optimizer`); one line if it does not fit."""
    path = Path(folder) / OPTIMIZER_FILE
    if not path.is_file():
        raise InputError("no optimizer state here; the previous round did not finish (rerun it)", path=path)
    try:
        optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"this optimizer state does not fit the model ({str(exc).splitlines()[0]}); it belongs to "
                         f"another model", path=path) from None


def train(encoder: SimCSEEncoder, batches: Iterable[Mapping[str, Any]], config: TrainConfig | None = None,
          output_dir: str | Path = "runs/simcse", evaluator: Evaluator | None = None,
          on_step: Callable[[int, dict[str, Any]], None] | None = None,
          optimizer_state: str | Path | None = None, card: ModelCardInfo | None = None) -> TrainResult:
    """Train `encoder` in place on `batches` and save it as `output_dir/model` (sentence-transformers).

    `batches` must be re-iterable and deterministic (a `BucketedBatches`, a list, a curriculum sampler);
    an object with `set_epoch(e)` is told each epoch. `evaluator(encoder)` (a `SimCSEEvaluator`, or any
    callable following sentence-transformers' contract) returns the score or a mapping whose
    `evaluator.primary_metric` is the score; the best model so far by it (higher is better unless
    `evaluator.greater_is_better` is False) is kept in `output_dir/best`.
    `on_step(step, record)` is called after every optimizer step (record: loss tensor, rows, epoch).
    `optimizer_state`: the `optimizer/` folder a previous call wrote (`config.save_optimizer`): this call
    continues with its moments and step counts (a run trained round by round keeps one optimizer).
    Both folders carry a model card (simcse.model_card): what the trainer saw (loss, hyperparameters, dev
    metric, logs) under what `card` says (data, curriculum, round).
    Data-parallel (several GPUs, `config.devices`, or under torchrun): rank 0 evaluates, writes and calls
    `on_step`; spawned workers need `batches`, `evaluator`, `on_step` and `card` to pickle (docs/simcse.md).
    """
    config = config or TrainConfig()
    dp = distributed.active() or distributed.join_from_environment()  # data-parallel: this rank's place
    if dp is None:
        world = distributed.processes_for(config.devices, encoder.device)
        if world > 1:  # one worker process per device, each running this function as one rank
            return distributed.spawn_training(world, encoder, dict(
                batches=batches, config=config, output_dir=output_dir, evaluator=evaluator, on_step=on_step,
                optimizer_state=optimizer_state, card=card))
    else:
        encoder.to(distributed.local_device(encoder.device))
    main = dp is None or dp.is_main  # the one process that evaluates and writes
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    total = _total_steps(batches, config)
    device = encoder.device
    bf16 = training_uses_bf16(config.precision, device)
    torch.manual_seed(config.seed + (dp.rank if dp else 0))  # each rank its own dropout stream
    optimizer = _optimizer(encoder, config)
    checkpoint = recover_dir(output_dir / CHECKPOINT) if dp is None else dp.recover(output_dir / CHECKPOINT)
    if checkpoint is None and optimizer_state is not None:
        load_optimizer_state(optimizer, optimizer_state, device)
        for group in optimizer.param_groups:  # this call's rate, not the one the state was saved with
            group["lr"] = group["initial_lr"] = config.lr
    scheduler = linear_schedule(optimizer, config, total)
    state = _State()
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint, encoder, optimizer, scheduler, config, total,
                                 dp.rank if dp else 0)
    resumed_from = state.step
    forward = distributed.data_parallel(encoder) if dp is not None else None

    tokenize = encoder.make_tokenizer(encoder.max_length)
    pack_offset = encoder.packing_position_offset() if config.pack else None

    def prepare(batch: Mapping[str, Any], epoch: int, index: int) -> _Prepared:
        return _prepare(batch, tokenize, encoder.pad_id, config.alpha, device.type == "cuda", epoch, index,
                        pack_offset, dp.shard(len(batch["anchor"])) if dp else None)

    evaluated_at: int | None = state.evaluations[-1]["step"] if state.evaluations else None
    batch_kinds: set[tuple[int, bool]] = set()  # (hard negatives per row or -1, own α) seen: the card's loss
    greater_is_better = getattr(evaluator, "greater_is_better", True)
    metric_name = getattr(evaluator, "primary_metric", None)

    def card_now(details: Mapping[str, Any] | None = None, metric: float | None = None) -> ModelCardInfo:
        return training_card(card, config.model_dump(), TrainConfig().model_dump(), batch_kinds, state.step,
                             state.rows, state.history, state.evaluations, details, metric, metric_name)

    def evaluate() -> None:
        nonlocal evaluated_at
        if evaluator is None or evaluated_at == state.step or not main:
            return
        result = evaluator(encoder)
        metric = primary_score(evaluator, result)
        details = dict(result) if isinstance(result, Mapping) else {}
        encoder.train()
        state.evaluations.append({"step": state.step, "metric": metric, **details})
        evaluated_at = state.step
        best = state.best_metric
        if best is None or (metric > best if greater_is_better else metric < best):
            state.best_metric, state.best_step = metric, state.step
            encoder.save(output_dir / BEST, card=card_now(details, metric))

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=state.step, desc="train", unit="step", disable=not (config.progress and main),
               dynamic_ncols=True)
    encoder.train()
    timed_rows, timed_seconds, clock = 0, 0.0, None
    window_loss: list[torch.Tensor] = []
    window_acc: list[torch.Tensor] = []
    prefetcher = None
    if state.step < total:
        prefetcher = _Prefetcher(_batch_stream(batches, state.epoch, state.index, total - state.step), prepare,
                                 config.prefetch)
    try:
        for item in (prefetcher or ()):
            loss, acc = _loss_and_backward(item, encoder, forward, dp, config.temperature, device, bf16)
            rows = item.rows
            batch_kinds.add((item.k, isinstance(item.alpha, torch.Tensor)))
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.epoch, state.index = item.epoch, item.index + 1
            state.rows += rows
            window_loss.append(loss.detach())
            window_acc.append(acc)
            # Throughput excludes the first step of this call (warm-up), evaluation and checkpoints.
            if clock is None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                clock = time.perf_counter()
            else:
                timed_rows += rows
            if on_step is not None and main:
                on_step(state.step, {"loss": loss.detach(), "accuracy": acc, "rows": rows, "epoch": item.epoch})
            if state.step % config.log_every == 0 or state.step == total:
                losses = torch.stack(window_loss).tolist()
                accs = torch.stack(window_acc).tolist()
                state.accuracies.extend(accs)
                now = time.perf_counter()
                speed = timed_rows / (timed_seconds + now - clock) if timed_rows else None
                record = {"step": state.step, "loss": sum(losses) / len(losses), "accuracy": sum(accs) / len(accs),
                          "lr": scheduler.get_last_lr()[0], "triplets_per_s": speed}
                state.history.append(record)
                window_loss, window_acc = [], []
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                                rows_s=f"{speed:.0f}" if speed else "-")
            bar.update(1)
            pause_start = time.perf_counter()
            due_eval = config.eval_every and state.step % config.eval_every == 0
            due_save = config.save_every and state.step % config.save_every == 0
            if due_eval and state.step < total:
                evaluate()
            if due_save and state.step < total:
                if window_acc:
                    state.accuracies.extend(torch.stack(window_acc).tolist())
                    window_acc, window_loss = [], []
                rng_ranks = dp.rng_states() if dp else None
                if main:
                    _save_checkpoint(output_dir / CHECKPOINT, encoder, optimizer, scheduler, state, config, total,
                                     rng_ranks)
            if due_eval or due_save:
                timed_seconds += pause_start - clock
                clock = time.perf_counter()
    finally:
        if prefetcher is not None:
            prefetcher.close()
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    triplets_per_s = timed_rows / (timed_seconds + time.perf_counter() - clock) if timed_rows and clock else None
    if state.step < total:
        raise RuntimeError(f"training stopped at step {state.step} of {total}: the batches ran out")
    evaluate()
    rng_ranks = dp.rng_states() if dp and config.final_checkpoint else None
    if main and (resumed_from < total or recover_dir(output_dir / MODEL) is None):
        if config.final_checkpoint:
            _save_checkpoint(output_dir / CHECKPOINT, encoder, optimizer, scheduler, state, config, total,
                             rng_ranks)
        if config.save_optimizer:
            with atomic_dir(output_dir / OPTIMIZER) as tmp:
                torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        last = state.evaluations[-1] if state.evaluations and state.evaluations[-1]["step"] == state.step else None
        encoder.save(output_dir / MODEL, card=card_now(last, last["metric"] if last else None))
    encoder.eval()
    recent = state.accuracies[-config.accuracy_window:]
    result = TrainResult(
        steps=state.step, history=state.history, evaluations=state.evaluations, best_metric=state.best_metric,
        best_step=state.best_step, train_accuracy=sum(recent) / len(recent) if recent else None,
        model_path=str(output_dir / MODEL), best_path=str(output_dir / BEST) if state.best_step is not None else None,
        triplets_per_s=triplets_per_s, resumed_from=resumed_from,
        extra={"rows": state.rows, "total_steps": total, "bf16": bf16, "device": str(device)})
    if resumed_from < total and main:
        atomic_write_json(output_dir / RESULT, asdict(result))
    return result
