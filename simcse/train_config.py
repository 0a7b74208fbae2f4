"""The trainer's settings (`TrainConfig`): one pydantic model, the one place each default and limit lives.

Kept apart from the training loop (`simcse.train`, which needs torch) so that whoever only validates or
describes settings loads no torch: `train`'s options take their defaults and help from these fields
(simcse/cli.py), and a run config embeds the model as its `training:` section (flows/run/config.py), where a bad
value is reported with its YAML line. `from simcse.train import TrainConfig` keeps working.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataio.triplet_layout import DEFAULT_ALPHA


class TrainConfig(BaseModel):
    """Training settings (SimCSE's defaults where the paper gives them: τ = 0.05, α = 1)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-5, gt=0, description="peak learning rate (AdamW)")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of the schedule's steps spent warming up")
    schedule_steps: int | None = Field(None, ge=1, description="length of the learning-rate schedule this call is "
                                       "part of (warm-up, then linear decay to 0 at its end); None: this call's "
                                       "steps. A run trained in several calls (rounds) gives each call the "
                                       "run's total and its `schedule_offset`, so the rate is one curve")
    schedule_offset: int = Field(0, ge=0, description="the schedule's step at which this call starts")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient norm clipped to; 0 turns clipping off")
    batch_size: int = Field(64, ge=2, description="rows per batch: whoever builds the batches uses it; "
                                                "the trainer refuses a larger batch")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (default: `epochs` passes over the batches)")
    epochs: int = Field(1, ge=1, description="passes over the batches when no step count is given")
    temperature: float = Field(0.05, gt=0, description="softmax temperature τ of the contrastive loss")
    alpha: float = Field(DEFAULT_ALPHA, ge=0, description="hard-negative weight when a batch carries none")
    distill_kl: float = Field(0.0, ge=0, description="weight of the in-batch similarity KL toward a teacher's "
                                                     "cosines (simcse.losses.distill_kl_loss; needs a teacher)")
    distill_margin_mse: float = Field(0.0, ge=0, description="weight of MarginMSE on the teacher's (anchor, positive,"
                                                             " negative) margins (needs a teacher and negatives)")
    distill_temperature: float = Field(0.05, gt=0, description="the teacher's softmax temperature in distill_kl")
    eval_every: int = Field(250, ge=0, description="steps between dev evaluations; 0: only at the end")
    seed: int = Field(0, description="seed of the batch order and dropout")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
    log_every: int = Field(10, ge=1, description="steps between training log lines")
    save_every: int = Field(500, ge=0, description="steps between checkpoints; 0: only at the end")
    final_checkpoint: bool = Field(True, description="also checkpoint at the end (optimizer state: ~3x the "
                                                     "weights), so a rerun knows the run is done; off for "
                                                     "callers that keep only the model")
    save_optimizer: bool = Field(False, description="write the optimizer's final state to `output_dir/optimizer/` "
                                 "so a later call (the next round) continues with it (`train(optimizer_state=...)`)")
    prefetch: int = Field(8, ge=1, description="batches tokenised ahead")
    pack: bool = Field(True, description="pack sequences into rows without padding (simcse.packing) where "
                                         "the backbone allows; else pad each batch to one matrix")
    accuracy_window: int = Field(50, ge=1, description="steps averaged for `TrainResult.train_accuracy`")
    progress: bool = Field(True, description="show a progress bar")
    devices: int | None = Field(None, ge=1, description="training processes, one per GPU, with the loss over the "
                                "global batch (simcse.distributed); None: every visible GPU for a model on CUDA, "
                                "else 1; above 1 with a model on the CPU: that many CPU processes (gloo)")
