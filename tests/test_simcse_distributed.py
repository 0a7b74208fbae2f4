"""Data-parallel training: N gloo processes on the CPU give one process's loss, gradients and weights on the
same global batches (the loss over the gathered global batch), write once, and resume after a crash.

The tests marked slow spawn processes that each import torch and transformers (tens of seconds on 2 busy cores)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from simcse import distributed
from simcse.batch_prep import prepare_batch
from simcse.model import SimCSEEncoder
from simcse.train import TrainConfig, _loss_and_backward, train

TEMPERATURE = 0.05
WORDS = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "mouse", "lion", "tiger", "bear"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread."""


@pytest.fixture(scope="module")
def still(tmp_path_factory) -> str:
    """A tiny BERT without dropout: one process and several compute the same function, so compare exactly."""
    from simcse.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("still") / "bert", dropout=0.0))


def _sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 5) % len(WORDS)] for j in range(3 + i % 6)) + f" {i}"


def _encoder(path: str, float64: bool = False) -> SimCSEEncoder:
    """float64 for tight comparisons across process counts (see MODES); after training, also because Adam turns
    float32 rounding noise in near-zero gradients into steps of size lr."""
    torch.manual_seed(0)  # the MLP head is initialised at load
    encoder = SimCSEEncoder.from_pretrained(path, device="cpu", max_length=16, pooling="cls")
    encoder.train()
    return encoder.double() if float64 else encoder


def _cases() -> list[tuple[str, dict]]:
    unsup = {"anchor": [_sentence(i) for i in range(7)]}  # 7 rows: blocks of 4 and 3
    anchors = [_sentence(i) for i in range(10, 15)]
    positives = [_sentence(i) for i in range(20, 25)]
    negatives = [[_sentence(i), _sentence(i + 100)] for i in range(30, 35)]
    negatives[1][0] = positives[3]  # another row's positive: left out of row 3's softmax (the exclude mask)
    sup = {"anchor": anchors, "positive": positives, "negative": negatives, "alpha": [1.0, 0.5, 0.0, 2.0, 1.0]}
    return [("unsup", unsup), ("sup", sup)]


# How one process and several are compared. float64, padded: sums in another order differ by ~1e-15 (a missing
# x world scale would be 0.5). float32, packed (the trainer's default path): the tiny random BERT's embeddings are
# nearly equal, so gradients are differences of close numbers and float32 rounding shows (worst seen: 1.7e-4 of
# a weight's gradient). Each: (float64, pack, tolerance relative to each weight's gradient norm, floor relative to
# the whole gradient's norm, for gradients that are zero but for rounding: attention key biases).
MODES = {"float64": (True, False, 1e-8, 1e-12), "packed": (False, True, 1e-3, 1e-6)}


def _step(encoder: SimCSEEncoder, batch: dict, dp: distributed.Group | None, pack: bool
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The trainer's own step (tokenise, forward, gather, loss, backward): (loss, gradient of every weight)."""
    tokenize = encoder.make_tokenizer(encoder.max_length)
    item = prepare_batch(batch, tokenize, encoder.pad_id, 1.0, False, 0, 0, encoder.packing_position_offset() if pack
                         else None, dp.shard(len(batch["anchor"])) if dp else None)
    forward = distributed.data_parallel(encoder) if dp else None
    loss, _ = _loss_and_backward(item, encoder, forward, dp, TrainConfig(temperature=TEMPERATURE), torch.device("cpu"),
                                 False)
    grads = {name: p.grad.detach().clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _gradient_worker(rank: int, world: int, init: str, model: str, cases: list, modes: list, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        dp = distributed.active()
        assert dp is not None and (dp.rank, dp.world) == (rank, world)
        for mode in modes:
            float64, pack, _, _ = MODES[mode]
            for name, batch in cases:
                loss, grads = _step(_encoder(model, float64), batch, dp, pack)
                save_file({"loss": loss.reshape(1), **grads}, os.path.join(out, f"{name}-{mode}-{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _spawn(fn, world: int, tmp_path, *args) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(fn, args=(world, f"file://{tmp_path / 'rendezvous'}", *args), nprocs=world, join=True,
                       start_method="spawn")


def _compare_with_one_process(model: str, cases: list, world: int, tmp_path, modes: tuple[str, ...]) -> None:
    from safetensors.torch import load_file

    _spawn(_gradient_worker, world, tmp_path, model, cases, list(modes), str(tmp_path))
    for mode in modes:
        float64, pack, tolerance, floor = MODES[mode]
        for name, batch in cases:
            loss, grads = _step(_encoder(model, float64), batch, None, pack)
            assert len(grads) > 30, "every trained weight should have a gradient"
            floor_norm = floor * torch.stack([g.norm() for g in grads.values()]).norm()
            for rank in range(world):
                got = load_file(str(tmp_path / f"{name}-{mode}-{rank}.safetensors"))
                assert torch.allclose(got.pop("loss")[0], loss, rtol=tolerance, atol=0), (mode, name, rank)
                assert sorted(got) == sorted(grads), (mode, name, rank)
                for weight, grad in grads.items():
                    error = (got[weight] - grad).norm()
                    assert error <= tolerance * grad.norm() + floor_norm, (mode, name, rank, weight, error)


def test_shards_are_contiguous_blocks_in_rank_order():
    assert distributed.shard_sizes(7, 2) == [4, 3]
    assert distributed.shard_sizes(2, 3) == [1, 1, 0]
    blocks = [distributed.Group(r, 3).shard(10) for r in range(3)]
    assert blocks == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert distributed.Group(2, 3).shard(2) == slice(0, 1)  # an empty block encodes a stand-in row


@pytest.mark.slow
def test_ddp_two_gloo_processes_give_the_single_process_loss_and_gradients(still, tmp_path):
    """The issue's test: the loss over the gathered global batch, gradients after DDP's all-reduce, for the
    unsupervised loss and the supervised loss with two hard negatives per row, α per row (0 included) and an
    excluded in-batch candidate, on blocks of unequal size."""
    _compare_with_one_process(still, _cases(), 2, tmp_path, ("float64", "packed"))


@pytest.mark.slow
def test_a_batch_smaller_than_the_world_still_trains_every_rank(still, tmp_path):
    """3 processes, a batch of 2 rows: rank 2 has no rows and contributes a zero gradient, not a hang."""
    anchors = [_sentence(i) for i in range(40, 42)]
    batch = {"anchor": anchors, "positive": [_sentence(i) for i in range(50, 52)],
             "negative": [_sentence(i) for i in range(60, 62)]}
    _compare_with_one_process(still, [("small", batch), ("unsup4", {"anchor": [_sentence(i) for i in range(4)]})],
                              3, tmp_path, ("float64",))


def _batches(n_batches: int = 4, rows: int = 6) -> list[dict]:
    out = []
    for b in range(n_batches):
        base = 1000 + 100 * b
        out.append({"anchor": [_sentence(base + i) for i in range(rows)],
                    "positive": [_sentence(base + 30 + i) for i in range(rows)],
                    "negative": [_sentence(base + 60 + i) for i in range(rows)]})
    return out


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-3, max_steps=2, save_every=0, eval_every=0, log_every=1, progress=False, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_train_in_two_processes_matches_one(still, tmp_path):
    """`train(devices=2)` spawns 2 gloo workers; the caller's encoder ends with one process's weights."""
    from safetensors.torch import load_file

    batches = _batches(2)
    one = _encoder(still, float64=True)
    r_one = train(one, batches, _cfg(pack=False), tmp_path / "one")  # float64: padded (packing pools in float32)
    two = _encoder(still, float64=True)
    r_two = train(two, batches, _cfg(pack=False, devices=2), tmp_path / "two")
    assert r_two.steps == r_one.steps == 2 and r_two.extra["rows"] == r_one.extra["rows"] == 12
    assert [h["loss"] for h in r_two.history] == pytest.approx([h["loss"] for h in r_one.history], rel=1e-12)
    assert not two.training and two.device.type == "cpu"
    moved = 0
    start = _encoder(still, float64=True).state_dict()
    for name, value in one.state_dict().items():
        assert torch.allclose(two.state_dict()[name], value, rtol=1e-9, atol=1e-12), name
        moved += not torch.equal(value, start[name])
    assert moved > 30, "the weights should have changed"
    # rank 0 alone wrote the model folder (with its card), the checkpoint and the result; the caller's encoder
    # holds the weights rank 0 saved
    assert (tmp_path / "two" / "model" / "README.md").is_file()
    assert json.loads((tmp_path / "two" / "train_result.json").read_text())["steps"] == 2
    saved = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert saved and all(torch.equal(value, two.state_dict()[name]) for name, value in saved.items())
    assert not [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".")], "temporary folders left"


TORCHRUN_SCRIPT = """
import sys

import torch

sys.path.insert(0, sys.argv[3])
from test_simcse_distributed import _batches, _cfg, _encoder  # noqa: E402

from simcse import distributed  # noqa: E402
from simcse.train import train  # noqa: E402

torch.set_num_threads(1)
result = train(_encoder(sys.argv[1], float64=True), _batches(2), _cfg(pack=False), sys.argv[2])
assert distributed.world_size() == 2 and result.steps == 2
"""


@pytest.mark.slow
def test_torchrun_launch_joins_its_group_and_matches_one_process(still, tmp_path):
    """Under `torchrun --nproc_per_node 2`, a plain `train()` call joins the group the environment describes."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    import simcse

    one = _encoder(still, float64=True)
    train(one, _batches(2), _cfg(pack=False), tmp_path / "one")
    script = tmp_path / "launch.py"
    script.write_text(TORCHRUN_SCRIPT)
    root = str(Path(simcse.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), still, str(tmp_path / "two"), str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    reference = one.state_dict()
    for name, value in saved.items():
        assert torch.allclose(value, reference[name], rtol=1e-9, atol=1e-12), name
    assert json.loads((tmp_path / "two" / "train_result.json").read_text())["steps"] == 2


class _CrashAt:
    """The batches of a picklable data source that fails at batch `at` (a crash mid-run, on every rank)."""

    def __init__(self, batches: list[dict], at: int) -> None:
        self.batches, self.at = batches, at

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if i == self.at:
                raise RuntimeError("simulated crash")
            yield batch


@pytest.mark.slow
def test_two_process_run_resumes_after_a_crash_to_the_same_weights(tiny, tmp_path):
    """With dropout on: each rank's dropout stream is checkpointed, so crash + resume == uninterrupted."""
    batches = _batches(4)
    cfg = _cfg(max_steps=4, save_every=2, devices=2)
    full = _encoder(tiny)
    train(full, batches, cfg, tmp_path / "full")
    with pytest.raises(RuntimeError, match="training process failed"):
        train(_encoder(tiny), _CrashAt(batches, 3), cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    rng = torch.load(tmp_path / "run" / "checkpoint" / "rng.pt", weights_only=True)
    assert len(rng["ranks"]) == 2 and not torch.equal(rng["ranks"][0]["cpu"], rng["ranks"][1]["cpu"])
    resumed = _encoder(tiny)
    r = train(resumed, batches, cfg, tmp_path / "run")
    assert r.resumed_from == 2 and r.steps == 4
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_several_processes_need_picklable_callbacks(still, tmp_path):
    seen = []
    with pytest.raises(ValueError, match="must pickle"):
        train(_encoder(still), _batches(1), _cfg(max_steps=1, devices=2), tmp_path / "run",
              on_step=lambda step, record: seen.append(step))
    assert not (tmp_path / "run").exists()


def test_more_devices_than_gpus_is_one_line():
    from dataio.errors import InputError

    cuda = torch.device("cuda")
    with pytest.raises(InputError, match="visible GPUs"):
        distributed.processes_for(torch.cuda.device_count() + 1, cuda)
    assert distributed.processes_for(None, torch.device("cpu")) == 1
    assert distributed.processes_for(3, torch.device("cpu")) == 3


def test_the_encoder_pickles_for_the_workers(still):
    encoder = _encoder(still)
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy.fingerprint() == encoder.fingerprint()
    assert copy.tokenize(["a cat"]) == encoder.tokenize(["a cat"])


def _abort_on_rank_one(encoder, **arguments):
    """A `train` whose rank 1 dies of SIGABRT, as a C++ library's uncaught exception does; rank 0 waits for it."""
    import torch.distributed as dist

    if distributed.rank() == 1:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file left in the working folder
        os.abort()
    dist.barrier()  # never completes: the parent stops this rank once rank 1 is gone


@pytest.mark.slow
def test_a_worker_killed_by_a_signal_is_named_with_its_threads_stacks(still):
    """A worker that dies of a signal leaves no Python traceback: the error carries its fault handler's dump
    (every thread's stack at the signal), so a crash seen once in CI says where it happened."""
    with pytest.raises(RuntimeError) as caught:
        distributed.spawn_training(2, _encoder(still), _abort_on_rank_one, {})
    message = str(caught.value)
    assert "process 1 terminated with signal SIGABRT" in message
    assert "rank 1's threads at the signal" in message and "_abort_on_rank_one" in message
