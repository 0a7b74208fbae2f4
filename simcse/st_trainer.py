"""`CurriculumCallback`: the `transformers.TrainerCallback` that lets the curriculum drive sentence-transformers'
own trainer (`SentenceTransformerTrainer`), with the team's loss, evaluator, callbacks and `report_to`.

The feed it drives, `curriculum.CurriculumFeed`, draws each batch by the curriculum's plan and needs no torch
(`curriculum` never imports torch, transformers or sentence-transformers: docs/architecture.md). A
`TrainerCallback` has to subclass transformers' class, so it lives here, where torch is allowed; and since
`simcse` does not import `curriculum`, it takes the feed as any object with the hooks below
(`TrainingHooks`). docs/sentence_transformers.md has the whole example.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Protocol

from transformers import TrainerCallback


class TrainingHooks(Protocol):
    """What the callback calls (`curriculum.CurriculumFeed` has them)."""

    batch_size: int

    @property
    def max_steps(self) -> int: ...

    def prepare(self, model: Any = None) -> None: ...

    def step_trained(self) -> None: ...

    def round_trained(self, model: Any = None) -> Any: ...


@contextmanager
def _eval_mode(model: Any):
    """The model in eval mode (no dropout) while it encodes for mining and scoring, then as it was."""
    training = bool(getattr(model, "training", False))
    if model is not None and training:
        model.eval()
    try:
        yield model
    finally:
        if model is not None and training:
            model.train()


class CurriculumCallback(TrainerCallback):
    """Moves the feed with the trainer: opens the first round when training begins (mining it with the
    feed's `mine`), reports every trained step to the scheduler, and at each epoch's end (a round's end)
    closes the round and mines the next with the model as trained so far."""

    def __init__(self, feed: TrainingHooks) -> None:
        self.feed = feed

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        problems = []
        if args.gradient_accumulation_steps != 1:
            problems.append(f"gradient_accumulation_steps={args.gradient_accumulation_steps} (each drawn batch is "
                            f"one step: set 1)")
        if args.dataloader_num_workers != 0:
            problems.append(f"dataloader_num_workers={args.dataloader_num_workers} (the batches are drawn in this "
                            f"process: set 0)")
        if args.world_size != 1:
            problems.append(f"{args.world_size} processes (one process draws the batches)")
        if args.train_batch_size != self.feed.batch_size:
            problems.append(f"a batch of {args.train_batch_size} rows (the feed draws {self.feed.batch_size}: set "
                            f"per_device_train_batch_size={self.feed.batch_size})")
        if args.max_steps != self.feed.max_steps:
            problems.append(f"max_steps={args.max_steps} (the rounds left take {self.feed.max_steps}: set "
                            f"max_steps=feed.max_steps)")
        if problems:
            raise ValueError("the curriculum feed cannot drive this training: " + "; ".join(problems))
        with _eval_mode(model):
            self.feed.prepare(model)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.feed.step_trained()

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        with _eval_mode(model):
            self.feed.round_trained(model)
