"""Training throughput: triplets/s of simcse.train vs sentence-transformers' trainer, same model and data.

The anchor: `SentenceTransformerTrainer` + `MultipleNegativesRankingLoss` (scale 20 = 1/τ with τ = 0.05, the
same loss as supervised SimCSE with α = 1) on the same model, batch size, max length, precision and NLI
triplets, in the same process. Each run skips `--warmup-steps` steps and times the next `--steps` (wall
clock between optimizer steps, CUDA synchronised), so the model load and the final save are outside; the
trainers run `--repeats` times each in ABBA order (a drifting machine load favours neither), and the
table reports the mean.

Rows printed: sentence-transformers; ours as `simcse-curriculum train` runs it (length-bucketed batches,
tokenised ahead on a thread, one forward per batch over packed rows); with `--with-padded`, ours padding
each batch to one matrix instead (`TrainConfig(pack=False)`), to show what packing alone is worth. Padding
is reported as tokens computed per real token. Last line: `ratio: <ours / sentence-transformers>`.

    .venv/bin/python -m bench.train_throughput                      # CPU, < 5 min on 2 cores
    .venv/bin/python -m bench.train_throughput --batch-size 128 --steps 100 --warmup-steps 10 --precision bf16  # GPU
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from bench import machine
from dataio.tables import data_dir
from simcse.batching import triplet_batches
from simcse.data import load_triplets
from simcse.devices import auto_device
from simcse.model import SimCSEEncoder, default_model_path
from simcse.train import TrainConfig, train


class StepClock:
    """Timestamps of optimizer steps `warmup` and `warmup + steps` (the timed window)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.first, self.last, self.device = warmup, warmup + steps, device
        self.start: float | None = None
        self.end: float | None = None

    def tick(self, step: int) -> None:
        if step in (self.first, self.last):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if step == self.first:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()

    def rate(self, rows_per_step: float) -> float:
        assert self.start is not None and self.end is not None, "the timed window was not reached"
        return rows_per_step * (self.last - self.first) / (self.end - self.start)


def padding_ratio(tokenizer_fn, batches: list[dict], columns: tuple[str, ...], mode: str) -> float:
    """Tokens computed / real tokens: one matrix per column (sentence-transformers), one per batch
    (ours, padded) or packed rows (ours, default)."""
    from simcse.packing import pack_sequences

    computed = real = 0
    for b in batches:
        groups = [list(b[c]) for c in columns] if mode == "columns" else [[t for c in columns for t in b[c]]]
        for texts in groups:
            ids = tokenizer_fn(texts)
            lens = [len(x) for x in ids]
            real += sum(lens)
            computed += pack_sequences(ids, 0).input_ids.numel() if mode == "packed" else max(lens) * len(lens)
    return computed / real


def run_sentence_transformers(model_path: str, rows: dict, args, device: torch.device, bf16: bool,
                              workdir: Path) -> tuple[float, float]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )
    from transformers import TrainerCallback

    torch.manual_seed(args.seed)
    model = SentenceTransformer(model_path, device=str(device))
    model.max_seq_length = args.max_length
    clock = StepClock(args.warmup_steps, args.steps, device)

    class Timer(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            clock.tick(state.global_step)

    dataset = Dataset.from_dict(rows)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / "st"), per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup_steps + args.steps, learning_rate=args.lr,
        warmup_steps=math.ceil(0.1 * (args.warmup_steps + args.steps)), bf16=bf16,  # = our warmup_ratio 0.1
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=args.seed,
        dataloader_drop_last=True, use_cpu=device.type == "cpu")
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / args.temperature)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                         callbacks=[Timer()])
    trainer.train()
    tok = model.tokenizer

    def tokenize(texts):
        return tok(texts, truncation=True, max_length=args.max_length)["input_ids"]

    n = args.batch_size
    batches = [{c: rows[c][i:i + n] for c in rows} for i in range(0, (args.warmup_steps + args.steps) * n, n)]
    return clock.rate(args.batch_size), padding_ratio(tokenize, batches, ("anchor", "positive", "negative"), "columns")


def run_ours(model_path: str, rows: dict, args, device: torch.device, workdir: Path, pack: bool
             ) -> tuple[float, float]:
    torch.manual_seed(args.seed)
    encoder = SimCSEEncoder.from_pretrained(model_path, max_length=args.max_length, device=str(device))
    batches = triplet_batches(rows["anchor"], rows["positive"], rows["negative"], args.batch_size, seed=args.seed,
                              drop_last=True)
    clock = StepClock(args.warmup_steps, args.steps, device)
    config = TrainConfig(lr=args.lr, warmup_ratio=0.1, max_steps=args.warmup_steps + args.steps,
                         temperature=args.temperature, precision=args.precision, save_every=0, eval_every=0,
                         log_every=10**9, progress=False, seed=args.seed, pack=pack)
    out = workdir / ("ours" if pack else "ours-padded")
    train(encoder, batches, config, out, on_step=lambda step, record: clock.tick(step))
    shutil.rmtree(out, ignore_errors=True)
    tokenize = encoder.make_tokenizer(args.max_length)
    used = [batches[i] for i in range(min(len(batches), args.warmup_steps + args.steps))]
    packed = pack and encoder.packing_position_offset() is not None
    return clock.rate(args.batch_size), padding_ratio(tokenize, used, ("anchor", "positive", "negative"),
                                                      "packed" if packed else "batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(data_dir() / "nli" / "triplets.csv"), help="NLI triplets file")
    parser.add_argument("--model", default=None, help="model folder (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first, per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer, in ABBA order")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 on CUDA, fp32 on CPU (both trainers)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadier on a busy shared machine")
    parser.add_argument("--with-padded", action="store_true",
                        help="also time our loop with pack=False (one padded matrix per batch)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = auto_device(args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda"
                                        and torch.cuda.is_bf16_supported())
    args.precision = "bf16" if bf16 else "fp32"
    model_path = args.model or default_model_path()
    triplets = load_triplets(args.data)
    need = (args.warmup_steps + args.steps) * args.batch_size
    if len(triplets) < need:
        raise SystemExit(f"{args.data} has {len(triplets)} triplets; {need} are needed for these settings")
    # The same rows for both: a seeded sample of the file (our loop then orders them into its own batches).
    pick = np.random.default_rng(args.seed).permutation(len(triplets))[: need + args.batch_size * 4].tolist()
    rows = {"anchor": [triplets.anchor[i] for i in pick], "positive": [triplets.positive[i] for i in pick],
            "negative": [triplets.negative[i] for i in pick]}

    names = {"st": "sentence-transformers trainer + MNRL", "ours": "simcse.train (default: packed rows)",
             "padded": "simcse.train (pack=False: one padded matrix)"}
    # ABBA order (st, ours, ours, st, ...): a machine whose load drifts during the run biases neither side.
    order: list[str] = []
    for r in range(args.repeats):
        pair = ["st", "ours"] if r % 2 == 0 else ["ours", "st"]
        order += pair + (["padded"] if args.with_padded else [])
    rates: dict[str, list[float]] = {k: [] for k in names}
    padding: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    try:
        for kind in order:
            if kind == "st":
                rate, pad = run_sentence_transformers(model_path, rows, args, device, bf16, workdir)
            else:
                rate, pad = run_ours(model_path, rows, args, device, workdir, pack=kind == "ours")
            rates[kind].append(rate)
            padding[kind] = pad
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"# train throughput on {device}; machine: {machine.text()}")
    print(f"# model {model_path}; data {args.data}; batch {args.batch_size}, max length {args.max_length}, "
          f"{args.precision}; {args.warmup_steps} warm-up + {args.steps} timed steps per run; "
          f"runs in order {' '.join(order)}")
    print()
    print("| trainer | triplets/s (mean) | runs | tokens computed / real | vs sentence-transformers |")
    print("|---|---:|---|---:|---:|")
    mean = {k: sum(v) / len(v) for k, v in rates.items() if v}
    for kind, value in mean.items():
        runs = ", ".join(f"{x:,.1f}" for x in rates[kind])
        print(f"| {names[kind]} | {value:,.1f} | {runs} | {padding[kind]:.2f} | {value / mean['st']:.2f}x |")
    print()
    if "padded" in mean:
        print(f"ratio_padded: {mean['padded'] / mean['st']:.2f}")
    print(f"ratio: {mean['ours'] / mean['st']:.2f}")


if __name__ == "__main__":
    main()
