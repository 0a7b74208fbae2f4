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
from simcse.distill import TeacherTable
from simcse.evaluation import primary_score
from simcse.losses import distill_kl_loss, margin_mse_loss, sup_simcse_loss, unsup_simcse_loss
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
                       dp: distributed.Group | None, config: TrainConfig, device: torch.device, bf16: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's forward (of this rank's block under data parallelism, through `forward`, the DDP wrapper),
    the loss over the whole batch (plus the distillation terms when the batch carries the teacher's cosines),
    and its backward; returns (loss, accuracy)."""
    temperature = config.temperature
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
    if item.teacher_sims is not None:
        loss = loss + _distillation(item, emb, config, device)
    # DDP averages gradients over ranks, and each rank's is the global loss's through its own rows only
    (loss if dp is None else loss * dp.world).backward()
    return loss, acc


def _distillation(item: PreparedBatch, emb: torch.Tensor, config: TrainConfig, device: torch.device) -> torch.Tensor:
    """The weighted distillation terms: in-batch KL toward the teacher's cosines over the loss's candidates (the
    positives, or the second views, then the hard negatives), and MarginMSE on each row's own negatives."""
    rows = item.rows
    teacher = item.teacher_sims.to(device, non_blocking=True)
    exclude = item.exclude.to(device) if item.exclude is not None else None
    total = emb.new_zeros(())
    if config.distill_kl:
        total = total + config.distill_kl * distill_kl_loss(emb[:rows], emb[rows:], teacher, config.temperature,
                                                            config.distill_temperature, exclude)
    if config.distill_margin_mse and item.k > 0:
        k = item.k
        own = torch.arange(rows, device=device)
        pos = teacher[own, own]  # the teacher's cosine of each anchor and its own positive
        neg = teacher[:, rows:].view(rows, rows, k)[own, own]  # and of its own k negatives
        weight = None
        if isinstance(item.alpha, torch.Tensor):  # α = 0 marks a padding column: no margin to learn there
            weight = (torch.broadcast_to(item.alpha.to(device).reshape(rows, -1), (rows, k)) > 0).float()
        total = total + config.distill_margin_mse * margin_mse_loss(
            emb[:rows], emb[rows:2 * rows], emb[2 * rows:].view(rows, k, -1), pos[:, None] - neg, weight)
    return total


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


class _Throughput:
    """Rows per second of this call's steps, leaving out the first step (warm-up), evaluations and checkpoints."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rows, self.seconds, self.clock = 0, 0.0, None

    def step_done(self, rows: int) -> None:
        if self.clock is None:  # the first step: start the clock after it
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.clock = time.perf_counter()
        else:
            self.rows += rows

    def pause(self) -> float:
        """Start of a pause (evaluation, checkpoint); `resume(start)` leaves it out."""
        return time.perf_counter()

    def resume(self, start: float) -> None:
        self.seconds += start - self.clock
        self.clock = time.perf_counter()

    def rate(self) -> float | None:
        return self.rows / (self.seconds + time.perf_counter() - self.clock) if self.rows and self.clock else None


class _TrainingRun:
    """One call of `train`: its settings, optimizer, schedule and progress, and the named steps it takes.

    The constructor is the setup (seed, optimizer, schedule, resuming from a checkpoint or an optimizer state),
    in the order resuming bit-identically needs: the seed before anything draws, the checkpoint's states over
    the fresh ones, the data-parallel wrapper once the weights are final."""

    def __init__(self, encoder: SimCSEEncoder, batches: Iterable[Mapping[str, Any]], config: TrainConfig,
                 output_dir: Path, evaluator: Evaluator | None, optimizer_state: str | Path | None,
                 card: ModelCardInfo | None, dp: distributed.Group | None, teacher: TeacherTable | None = None) -> None:
        self.encoder, self.config, self.dp, self.evaluator, self.card = encoder, config, dp, evaluator, card
        distilling = config.distill_kl > 0 or config.distill_margin_mse > 0
        if distilling and teacher is None:
            raise InputError("distill_kl / distill_margin_mse need a teacher (train(..., teacher=TeacherTable)); "
                             "set the weights to 0 or give the run a teacher")
        if distilling and dp is not None:
            raise InputError("distillation runs on one device; set devices: 1")
        self.teacher = teacher if distilling else None
        self.main = dp is None or dp.is_main  # the one process that evaluates and writes
        self.output_dir = output_dir
        output_dir.mkdir(parents=True, exist_ok=True)
        self.total = _total_steps(batches, config)
        self.device = encoder.device
        self.bf16 = training_uses_bf16(config.precision, self.device)
        torch.manual_seed(config.seed + (dp.rank if dp else 0))  # each rank its own dropout stream
        self.optimizer = build_optimizer(encoder, config)
        checkpoint = recover_dir(output_dir / CHECKPOINT) if dp is None else dp.recover(output_dir / CHECKPOINT)
        if checkpoint is None and optimizer_state is not None:
            load_optimizer_state(self.optimizer, optimizer_state, self.device)
            for group in self.optimizer.param_groups:  # this call's rate, not the one the state was saved with
                group["lr"] = group["initial_lr"] = config.lr
        self.scheduler = linear_schedule(self.optimizer, config, self.total)
        self.state = TrainerState()
        if checkpoint is not None:
            self.state = load_checkpoint(checkpoint, encoder, self.optimizer, self.scheduler, config, self.total,
                                         dp.rank if dp else 0)
        self.resumed_from = self.state.step
        self.forward = distributed.data_parallel(encoder) if dp is not None else None
        self.evaluated_at: int | None = self.state.evaluations[-1]["step"] if self.state.evaluations else None
        self.batch_kinds: set[tuple[int, bool]] = set()  # (hard negatives per row or -1, own α) seen: the card's loss
        # the losses and accuracies since the last history record, on the device until then
        self.window_loss: list[torch.Tensor] = []
        self.window_acc: list[torch.Tensor] = []
        self.throughput = _Throughput(self.device)

    def batches(self, batches: Iterable[Mapping[str, Any]]) -> Prefetcher | None:
        """The batches still to train on, prepared ahead on a thread (None when the run is already done)."""
        if self.state.step >= self.total:
            return None
        encoder, config, dp = self.encoder, self.config, self.dp
        tokenize = encoder.make_tokenizer(encoder.max_length)
        pack_offset = encoder.packing_position_offset() if config.pack else None
        pin = self.device.type == "cuda"

        def prepare(batch: Mapping[str, Any], epoch: int, index: int) -> PreparedBatch:
            if len(batch["anchor"]) > config.batch_size:  # the model card reports config.batch_size as trained
                raise ValueError(f"batch {index} of epoch {epoch} has {len(batch['anchor'])} rows, more than "
                                 f"TrainConfig.batch_size ({config.batch_size}): build the batches with the "
                                 f"config's batch_size, or set it to the batches' size")
            return prepare_batch(batch, tokenize, encoder.pad_id, config.alpha, pin, epoch, index, pack_offset,
                                 dp.shard(len(batch["anchor"])) if dp else None, self.teacher)

        stream = batch_stream(batches, self.state.epoch, self.state.index, self.total - self.state.step)
        return Prefetcher(stream, prepare, config.prefetch)

    def step(self, item: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step: forward, loss over the whole batch, backward, clipping, update; (loss, accuracy)."""
        loss, acc = _loss_and_backward(item, self.encoder, self.forward, self.dp, self.config, self.device,
                                       self.bf16)
        self.batch_kinds.add((item.k, isinstance(item.alpha, torch.Tensor)))
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state.step += 1
        state.epoch, state.index = item.epoch, item.index + 1
        state.rows += item.rows
        loss = loss.detach()
        self.window_loss.append(loss)
        self.window_acc.append(acc)
        self.throughput.step_done(item.rows)
        return loss, acc

    def log(self) -> dict[str, Any] | None:
        """Every `log_every` steps and at the last: the window's mean loss and accuracy into the history."""
        state = self.state
        if state.step % self.config.log_every != 0 and state.step != self.total:
            return None
        losses = torch.stack(self.window_loss).tolist()
        accs = torch.stack(self.window_acc).tolist()
        state.accuracies.extend(accs)
        record = {"step": state.step, "loss": sum(losses) / len(losses), "accuracy": sum(accs) / len(accs),
                  "lr": self.scheduler.get_last_lr()[0], "triplets_per_s": self.throughput.rate()}
        state.history.append(record)
        self.window_loss, self.window_acc = [], []
        return record

    def evaluate_and_save_if_due(self) -> None:
        """Every `eval_every` steps evaluate, every `save_every` write the checkpoint (not at the last step:
        `finish` does both), both left out of the throughput."""
        config, step = self.config, self.state.step
        due_eval = config.eval_every and step % config.eval_every == 0
        due_save = config.save_every and step % config.save_every == 0
        if not (due_eval or due_save):
            return
        pause = self.throughput.pause()
        if due_eval and step < self.total:
            self.evaluate()
        if due_save and step < self.total:
            # A resumed run starts with an empty window, so the window ends here too: its accuracies are kept,
            # its losses left out of the next record, as they would be after a resume.
            if self.window_acc:
                self.state.accuracies.extend(torch.stack(self.window_acc).tolist())
                self.window_acc, self.window_loss = [], []
            self.checkpoint(self.rng_of_ranks())
        self.throughput.resume(pause)

    def rng_of_ranks(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state for the checkpoint (data-parallel; a collective: every rank calls it)."""
        return self.dp.rng_states() if self.dp else None

    def checkpoint(self, rng_ranks: list[dict[str, Any]] | None) -> None:
        """Write the checkpoint (rank 0 only)."""
        if self.main:
            save_checkpoint(self.output_dir / CHECKPOINT, self.encoder, self.optimizer, self.scheduler, self.state,
                            self.config, self.total, rng_ranks)

    def card_now(self, details: Mapping[str, Any] | None = None, metric: float | None = None) -> ModelCardInfo:
        state = self.state
        return training_card(self.card, self.config.model_dump(), TrainConfig().model_dump(), self.batch_kinds,
                             state.step, state.rows, state.history, state.evaluations, details, metric,
                             getattr(self.evaluator, "primary_metric", None),
                             max_length=getattr(self.encoder, "max_length", None))

    def evaluate(self) -> None:
        """Run the evaluator (rank 0, once per step) and keep the best model so far in `best/`."""
        evaluator, state = self.evaluator, self.state
        if evaluator is None or self.evaluated_at == state.step or not self.main:
            return
        result = evaluator(self.encoder)
        metric = primary_score(evaluator, result)
        details = dict(result) if isinstance(result, Mapping) else {}
        self.encoder.train()
        state.evaluations.append({"step": state.step, "metric": metric, **details})
        self.evaluated_at = state.step
        best = state.best_metric
        if best is None or (metric > best if getattr(evaluator, "greater_is_better", True) else metric < best):
            state.best_metric, state.best_step = metric, state.step
            self.encoder.save(self.output_dir / BEST, card=self.card_now(details, metric))

    def finish(self) -> TrainResult:
        """The last evaluation, checkpoint, optimizer state and model (unless an earlier call wrote them), and
        the result."""
        state, config, output_dir = self.state, self.config, self.output_dir
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        triplets_per_s = self.throughput.rate()
        if state.step < self.total:
            raise RuntimeError(f"training stopped at step {state.step} of {self.total}: the batches ran out")
        self.evaluate()
        rng_ranks = self.rng_of_ranks() if config.final_checkpoint else None
        if self.main and (self.resumed_from < self.total or recover_dir(output_dir / MODEL) is None):
            if config.final_checkpoint:
                self.checkpoint(rng_ranks)
            if config.save_optimizer:
                save_optimizer_state(self.optimizer, output_dir / OPTIMIZER)
            last = state.evaluations[-1] if state.evaluations and state.evaluations[-1]["step"] == state.step \
                else None
            self.encoder.save(output_dir / MODEL, card=self.card_now(last, last["metric"] if last else None))
        self.encoder.eval()
        recent = state.accuracies[-config.accuracy_window:]
        result = TrainResult(
            steps=state.step, history=state.history, evaluations=state.evaluations, best_metric=state.best_metric,
            best_step=state.best_step, train_accuracy=sum(recent) / len(recent) if recent else None,
            model_path=str(output_dir / MODEL),
            best_path=str(output_dir / BEST) if state.best_step is not None else None,
            triplets_per_s=triplets_per_s, resumed_from=self.resumed_from,
            extra={"rows": state.rows, "total_steps": self.total, "bf16": self.bf16, "device": str(self.device)})
        if self.resumed_from < self.total and self.main:
            atomic_write_json(output_dir / RESULT, asdict(result))
        return result


def train(encoder: SimCSEEncoder, batches: Iterable[Mapping[str, Any]], config: TrainConfig | None = None,
          output_dir: str | Path = "runs/simcse", evaluator: Evaluator | None = None,
          on_step: Callable[[int, dict[str, Any]], None] | None = None,
          optimizer_state: str | Path | None = None, card: ModelCardInfo | None = None,
          teacher: TeacherTable | None = None) -> TrainResult:
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
    `teacher` (simcse.distill.TeacherTable: a teacher's embeddings by text) with `config.distill_kl` or
    `distill_margin_mse` > 0 adds the distillation losses toward its cosines (one device only).
    Data-parallel (several GPUs, `config.devices`, or under torchrun): rank 0 evaluates, writes and calls
    `on_step`; spawned workers need `batches`, `evaluator`, `on_step` and `card` to pickle (docs/simcse.md).
    """
    config = config or TrainConfig()
    dp = distributed.active() or distributed.join_from_environment()  # data-parallel: this rank's place
    if dp is None:
        world = distributed.processes_for(config.devices, encoder.device)
        if world > 1 and (config.distill_kl > 0 or config.distill_margin_mse > 0):
            raise InputError("distillation runs on one device; set devices: 1")
        if world > 1:  # one worker process per device, each running this function as one rank
            return TrainResult(**distributed.spawn_training(world, encoder, train, dict(
                batches=batches, config=config, output_dir=output_dir, evaluator=evaluator, on_step=on_step,
                optimizer_state=optimizer_state, card=card)))
    else:
        encoder.to(distributed.local_device(encoder.device))
    run = _TrainingRun(encoder, batches, config, Path(output_dir), evaluator, optimizer_state, card, dp, teacher)
    from tqdm.auto import tqdm

    bar = tqdm(total=run.total, initial=run.state.step, desc="train", unit="step",
               disable=not (config.progress and run.main), dynamic_ncols=True)
    encoder.train()
    prefetcher = run.batches(batches)
    try:
        for item in (prefetcher or ()):
            loss, acc = run.step(item)
            if on_step is not None and run.main:
                on_step(run.state.step, {"loss": loss, "accuracy": acc, "rows": item.rows, "epoch": item.epoch})
            record = run.log()
            if record is not None:
                speed = record["triplets_per_s"]
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                                rows_s=f"{speed:.0f}" if speed else "-")
            bar.update(1)
            run.evaluate_and_save_if_due()
    finally:
        if prefetcher is not None:
            prefetcher.close()
        bar.close()
    return run.finish()
