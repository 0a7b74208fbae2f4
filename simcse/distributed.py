"""Data-parallel training: one process per GPU, with the contrastive loss over the whole global batch.

Each process (rank) encodes its own contiguous block of the global batch's rows; the embeddings are then
all-gathered, so every rank computes the loss over the global batch and every row's negatives are all the
other rows of the global batch, not only of its own block (what SimCSE's reference `cl_forward` does). The
gathered copies of the other ranks' rows carry no gradient; this rank's rows are put back in their slot with
their graph, so each rank's backward yields the gradient of the global loss through its own rows, and the
sum over ranks is the whole gradient. DistributedDataParallel averages gradients over ranks, so the trainer
backpropagates `world × loss` and the update equals one process's on the global batch (the reference code
does not scale, so its gradients are 1/world of that: Adam mostly hides it, clipping at `max_grad_norm`
does not).

How processes start: `train()` spawns one worker process per device itself (`TrainConfig.devices`, or every
visible GPU for a model on CUDA), or joins the process group `torchrun` describes in the environment. Written
here with torch.distributed and DDP directly because the loss needs the gather inside the training step,
which trainer frameworks (accelerate, Lightning) leave to the model code anyway.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from dataio.atomic import recover_dir
from dataio.errors import InputError, UserError

if TYPE_CHECKING:
    from simcse.model import SimCSEEncoder

# Ranks wait in a collective while rank 0 alone evaluates or writes a checkpoint: allow for a long one.
TIMEOUT = timedelta(hours=1)
WEIGHTS = "encoder.safetensors"
RESULT = "result.json"
FAULT_PREFIX = "fault-"


def shard_sizes(rows: int, world: int) -> list[int]:
    """Rows per rank when `rows` are cut into `world` contiguous blocks (the first `rows % world` get one more)."""
    base, extra = divmod(rows, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates and writes (checkpoints, model folders, cards, the result file)."""
        return self.rank == 0

    def shard(self, rows: int) -> slice:
        """This rank's rows of a global batch of `rows`: a contiguous block (rank order = row order).

        A rank whose block is empty (a batch smaller than the world) encodes row 0 as a stand-in, so it still
        takes part in the forward and backward; `gather_batch` drops the stand-in with zero gradient.
        """
        sizes = shard_sizes(rows, self.world)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank]) if sizes[self.rank] else slice(0, 1)

    def gather_batch(self, emb: torch.Tensor, k: int, rows: int) -> torch.Tensor:
        """This rank's embeddings of its block, in the trainer's layout, to the same layout for the global batch.

        The trainer's layout for n rows: n anchors, n positives (or second views when k = -1), then n·k hard
        negatives, row by row. The result is what one process would have computed on the whole batch: this
        rank's rows keep their autograd graph, the other ranks' are detached copies.
        """
        sizes = shard_sizes(rows, self.world)
        n, dim = sizes[self.rank], emb.size(-1)
        k = max(k, 0)
        if n:
            per_row = [emb[:n].unsqueeze(1), emb[n:2 * n].unsqueeze(1)]
            if k:
                per_row.append(emb[2 * n:].view(n, k, dim))
            local = torch.cat(per_row, dim=1)  # [n, 2 + k, dim]
        else:
            local = emb.new_zeros((0, 2 + k, dim))
        everything = gather_rows(local, sizes, self.rank)  # [rows, 2 + k, dim]
        parts = [everything[:, 0], everything[:, 1]]
        if k:
            parts.append(everything[:, 2:].reshape(rows * k, dim))
        out = torch.cat(parts)
        if not n:  # the stand-in row: connect its graph with weight 0, so every rank's backward reaches every weight
            out = out + emb.sum() * 0.0
        return out

    def recover(self, path: Path) -> Path | None:
        """`dataio.atomic.recover_dir` on rank 0 only (it deletes and renames), the others after it."""
        if self.is_main:
            found = recover_dir(path)
            dist.barrier()
            return found
        dist.barrier()
        return path if path.exists() else None

    def rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG state (dropout streams), in rank order; a collective: every rank calls it."""
        mine: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            mine["cuda"] = torch.cuda.get_rng_state_all()
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return states


def gather_rows(local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    """Every rank's rows (`sizes[r]` of them) concatenated in rank order; this rank's keep their graph.

    `dist.all_gather` needs equal shapes, so blocks are padded to the largest and trimmed after.
    """
    width = max(sizes)
    padded = local
    if local.size(0) < width:
        padded = torch.cat([local, local.new_zeros((width - local.size(0), *local.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.detach().contiguous())
    parts[rank] = padded  # all_gather's copies carry no gradient: put this rank's own rows back
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def active() -> Group | None:
    """The training process group this process belongs to, or None when it trains alone."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Group(dist.get_rank(), dist.get_world_size())
    return None


def rank() -> int:
    """This process's rank (0 when it trains alone)."""
    group = active()
    return group.rank if group else 0


def world_size() -> int:
    """Number of training processes (1 when this one trains alone)."""
    group = active()
    return group.world if group else 1


def is_main() -> bool:
    """Whether this process writes: rank 0, or a process that trains alone."""
    return rank() == 0


def join_from_environment() -> Group | None:
    """Join the process group `torchrun` describes (WORLD_SIZE > 1, RANK, MASTER_ADDR in the environment).

    On CUDA each process takes GPU `LOCAL_RANK`. None when the environment describes no group.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ or not dist.is_available():
        return None
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)
    return active()


def local_device(device: torch.device) -> torch.device:
    """The device this rank trains on: its own GPU (set by `join_from_environment` or the worker), or the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


def processes_for(devices: int | None, device: torch.device) -> int:
    """How many training processes a call uses: `devices`, else every visible GPU for a model on CUDA, else 1."""
    if devices is None:
        return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise InputError(f"devices={devices} asks for more training processes than the {torch.cuda.device_count()} "
                         f"visible GPUs; ask for at most that many (unset: every visible GPU)")
    return devices


class _Forward(nn.Module):
    """The encoder's training forward behind one `forward`, so DDP sees (and syncs) the packed path too."""

    def __init__(self, encoder: SimCSEEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, *inputs: Any) -> torch.Tensor:
        if len(inputs) == 1:
            return self.encoder.forward_packed(inputs[0])
        return self.encoder(*inputs)


def data_parallel(encoder: SimCSEEncoder) -> nn.Module:
    """The encoder wrapped in DistributedDataParallel: called with a PackedBatch or (input_ids, mask).

    Rank 0's weights are broadcast on wrapping. `static_graph`: the set of weights a step uses never changes,
    and some never get a gradient (a backbone's pooler layer), which DDP otherwise waits for.
    """
    return nn.parallel.DistributedDataParallel(_Forward(encoder), static_graph=True, forward_sync_buffers=False)


# ------------------------------------------------------------------------------------------- spawning
def _worker(rank_: int, world: int, backend: str, init_method: str, threads: int, payload: bytes,
            train: Callable[..., Any], arguments: dict[str, Any], handoff: str) -> None:
    """One training process: join the group, train its block of every batch, rank 0 hands the result back.

    `train` is `simcse.train.train`, passed in (it pickles by name) so that this module never imports the loop
    that imports it. A fatal signal (SIGABRT from a C++ library, SIGSEGV) dumps every thread's Python stack to
    `fault-<rank>.txt` in the handoff folder, which the parent puts in its error.
    """
    from safetensors.torch import save_model

    handoff_dir = Path(handoff)
    fault_log = (handoff_dir / f"{FAULT_PREFIX}{rank_}.txt").open("w")
    faulthandler.enable(file=fault_log, all_threads=True)
    if backend == "nccl":
        torch.cuda.set_device(rank_)
        device = torch.device("cuda", rank_)
    else:
        torch.set_num_threads(threads)
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=init_method, rank=rank_, world_size=world, timeout=TIMEOUT)
    try:
        encoder = pickle.loads(payload).to(device)  # bytes this run's parent just wrote
        result = train(encoder, **arguments)
        if rank_ == 0:
            save_model(encoder, str(handoff_dir / WEIGHTS))
            (handoff_dir / RESULT).write_text(json.dumps(asdict(result), default=str))
        # Every rank leaves together: none closes its connections while another is still in a collective or
        # writing (a peer that vanishes mid-exchange is a C++ exception on gloo's own thread, an abort).
        dist.barrier()
    except UserError as exc:  # the parent raises it again as the one-line error it is
        (handoff_dir / f"error-{rank_}.json").write_text(json.dumps({"type": type(exc).__name__,
                                                                     "message": str(exc)}))
        raise
    finally:
        dist.destroy_process_group()
        # The process group's last references go now, with its C++ threads, while the interpreter is whole: not
        # during its teardown, where releasing Python objects from those threads is a known SIGABRT at exit.
        gc.collect()  # the fault handler stays on to the end: an abort in the teardown is still reported


def _fault_report(handoff: Path, index: int) -> str:
    """What rank `index`'s fault handler wrote (its threads' stacks at a fatal signal), or '' if nothing."""
    path = handoff / f"{FAULT_PREFIX}{index}.txt"
    text = path.read_text(errors="replace").strip() if path.is_file() else ""
    return f"\nrank {index}'s threads at the signal (most recent call first):\n{text[-4000:]}" if text else ""


def spawn_training(world: int, encoder: SimCSEEncoder, train: Callable[..., Any],
                   arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Run `train(encoder, **arguments)` in `world` new processes and return rank 0's result's fields.

    NCCL, one GPU each, for a model on CUDA; gloo on the CPU otherwise. The workers get a CPU copy of the
    encoder; during the run the caller's encoder waits on the CPU (its GPU memory is free for rank 0) and
    afterwards holds the trained weights on its own device again, as after a single-process call.
    `arguments` (batches, evaluator, on_step, card, ...) must pickle: the workers are new interpreters.
    """
    import torch.multiprocessing as mp
    from safetensors.torch import load_model
    from torch.multiprocessing.spawn import ProcessException

    try:
        pickle.dumps(dict(arguments))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(f"training in {world} processes sends the batches, evaluator and on_step to each: they "
                         f"must pickle (module-level functions, not closures): {exc}") from None
    device = encoder.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    encoder.to("cpu")
    payload = pickle.dumps(encoder)
    store = Path(tempfile.mkdtemp(prefix="simcse-ddp-"))
    handoff = store / "handoff"
    handoff.mkdir()
    try:
        try:
            mp.start_processes(_worker, nprocs=world, join=True, start_method="spawn",
                               args=(world, backend, f"file://{store / 'rendezvous'}",
                                     max(1, torch.get_num_threads() // world), payload, train, dict(arguments),
                                     str(handoff)))
        except ProcessException as exc:
            errors = sorted(handoff.glob("error-*.json"))
            if errors:
                info = json.loads(errors[0].read_text())
                raise (InputError if info["type"] == "InputError" else UserError)(info["message"]) from None
            raise RuntimeError(f"a training process failed: {exc}"
                               f"{_fault_report(handoff, getattr(exc, 'error_index', -1))}") from exc
        if not (handoff / RESULT).exists():  # a worker stopped by SIGINT exits quietly (torch's spawn wrapper)
            raise RuntimeError("the training processes ended without a result (interrupted?)")
        encoder.to(device)
        load_model(encoder, str(handoff / WEIGHTS), device=str(device))
        encoder.eval()  # as a single-process call leaves it
        return json.loads((handoff / RESULT).read_text())
    finally:
        encoder.to(device)
        shutil.rmtree(store, ignore_errors=True)

