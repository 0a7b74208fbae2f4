"""The trainer's optimizer, its learning-rate schedule, and the checkpoint that lets a run stop and go on.

AdamW (no decay on biases and LayerNorm weights, the fused kernel where there is one) under a linear warm-up
and decay that may span several calls (`schedule_steps`, `schedule_offset`). A checkpoint is a folder written
atomically: the weights in safetensors, the optimizer, scheduler and RNG states (`torch.save`, read back with
`weights_only=True`) and the trainer's progress (`TrainerState`, JSON) with the settings that shape the
trajectory, so a run resumed with other settings is refused in one line rather than silently diverging.
`save_optimizer_state` / `load_optimizer_state` carry the optimizer alone from one call to the next (a run
trained round by round keeps one optimizer).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dataio.atomic import atomic_dir
from dataio.errors import InputError
from simcse.train_config import TrainConfig

if TYPE_CHECKING:
    from simcse.model import SimCSEEncoder

OPTIMIZER_FILE = "optimizer.pt"
# Settings that change the trajectory: a checkpoint made with other values cannot be resumed.
TRAJECTORY_FIELDS = ("lr", "warmup_ratio", "weight_decay", "max_grad_norm", "max_steps", "epochs",
                     "temperature", "alpha", "seed", "precision", "schedule_steps", "schedule_offset",
                     "distill_kl", "distill_margin_mse", "distill_temperature")


@dataclass
class TrainerState:
    """Where a training run stands: steps done, the next batch, what it logged and evaluated, the best so far."""

    step: int = 0
    epoch: int = 0
    index: int = 0  # next batch to take within `epoch`
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    rows: int = 0


def trajectory(config: TrainConfig) -> dict[str, Any]:
    """The settings of `config` that a resumed run must share with its checkpoint (`TRAJECTORY_FIELDS`)."""
    return {name: getattr(config, name) for name in TRAJECTORY_FIELDS}


def build_optimizer(encoder: SimCSEEncoder, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the encoder's trainable weights, with no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for p in encoder.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases and LayerNorm weights
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel: much faster than the per-tensor loop (docs/benchmarks.md, "Figures behind code choices")
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


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


def save_checkpoint(path: Path, encoder: SimCSEEncoder, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: TrainerState, config: TrainConfig, total: int,
                    rng_ranks: list[dict[str, Any]] | None = None) -> None:
    """Write the checkpoint folder `path` atomically (a crash leaves the previous one whole)."""
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
            **asdict(state), "total_steps": total, "trajectory": trajectory(config)}, indent=1) + "\n")


def load_checkpoint(path: Path, encoder: SimCSEEncoder, optimizer: torch.optim.Optimizer, scheduler: Any,
                    config: TrainConfig, total: int, rank: int = 0) -> TrainerState:
    """Restore the weights, optimizer, scheduler and this rank's RNG stream from `path`; the run's progress.

    One line (InputError) when the checkpoint was made with other trajectory settings or plans another number
    of steps (the data or the batch size changed)."""
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
    fields = {k: v for k, v in saved.items() if k in TrainerState.__dataclass_fields__}
    return TrainerState(**fields)


def save_optimizer_state(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Write the optimizer's state to `folder/optimizer.pt` atomically, for a later call to continue from."""
    with atomic_dir(folder) as tmp:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)


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
