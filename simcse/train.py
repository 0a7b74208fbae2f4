"""The SimCSE training loop: one forward per batch, tokenising ahead on a background thread, resumable.

Batches are the plain dicts of the training contract: `{"anchor"}` (unsupervised: the positive is the same
sentence under a second dropout mask) or `{"anchor", "positive"[, "negative"[, "alpha"]]}` (supervised).
Each step encodes the whole batch (anchors + positives + negatives, or the anchors twice) in ONE forward
pass, so one padded matrix keeps the accelerator busy; a thread tokenises and pads the next batches while the
current one trains (simcse.batch_prep). A checkpoint (simcse.checkpoints: weights in safetensors,
optimizer/scheduler/RNG state) is written atomically every `save_every` steps; calling `train` again on the
same output folder resumes from it and reaches the same weights as an uninterrupted run. With several GPUs
(or `devices`), one process per device trains its block of each batch and the loss is taken over the whole
gathered batch (simcse.distributed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataio.atomic import atomic_write_json, recover_dir
from dataio.errors import InputError
from simcse import distributed
from simcse.batch_prep import Prefetcher, PreparedBatch, batch_stream, prepare_batch
from simcse.checkpoints import (
    TrainerState,
    build_optimizer,
    linear_schedule,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
    save_optimizer_state,
)
from simcse.devices import training_uses_bf16
from simcse.evaluation import primary_score
from simcse.losses import sup_simcse_loss, unsup_simcse_loss
from simcse.model import SimCSEEncoder
from simcse.model_card import ModelCardInfo, training_card
from simcse.packing import PackedBatch
from simcse.train_config import TrainConfig  # its home needs no torch; imported from here too

# The output folder's layout.
CHECKPOINT = "checkpoint"
BEST = "best"
MODEL = "model"
OPTIMIZER = "optimizer"  # the optimizer's state after the last step, for a run that continues in a later call
RESULT = "train_result.json"


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


def _loss_and_backward(item: PreparedBatch, encoder: SimCSEEncoder, forward: torch.nn.Module | None,
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
    optimizer = build_optimizer(encoder, config)
    checkpoint = recover_dir(output_dir / CHECKPOINT) if dp is None else dp.recover(output_dir / CHECKPOINT)
    if checkpoint is None and optimizer_state is not None:
        load_optimizer_state(optimizer, optimizer_state, device)
        for group in optimizer.param_groups:  # this call's rate, not the one the state was saved with
            group["lr"] = group["initial_lr"] = config.lr
    scheduler = linear_schedule(optimizer, config, total)
    state = TrainerState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, encoder, optimizer, scheduler, config, total,
                                 dp.rank if dp else 0)
    resumed_from = state.step
    forward = distributed.data_parallel(encoder) if dp is not None else None

    tokenize = encoder.make_tokenizer(encoder.max_length)
    pack_offset = encoder.packing_position_offset() if config.pack else None

    def prepare(batch: Mapping[str, Any], epoch: int, index: int) -> PreparedBatch:
        return prepare_batch(batch, tokenize, encoder.pad_id, config.alpha, device.type == "cuda", epoch, index,
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
        prefetcher = Prefetcher(batch_stream(batches, state.epoch, state.index, total - state.step), prepare,
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
                    save_checkpoint(output_dir / CHECKPOINT, encoder, optimizer, scheduler, state, config, total,
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
            save_checkpoint(output_dir / CHECKPOINT, encoder, optimizer, scheduler, state, config, total,
                             rng_ranks)
        if config.save_optimizer:
            save_optimizer_state(optimizer, output_dir / OPTIMIZER)
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
