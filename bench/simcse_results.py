"""SimCSE on the shared data, starting from the offline all-MiniLM-L6-v2: STS-B before and after training.

(a) unsupervised SimCSE on `wiki/sentences.txt`, (b) supervised SimCSE on `nli/triplets.csv`. Each run
evaluates on STS-B dev every `--eval-every` steps and keeps the best dev checkpoint (model selection on
dev only); that checkpoint is then scored on dev and test. Alignment and uniformity are measured on STS-B
dev (as in SimCSE's Figure 2: positive pairs scored >= 4.0, all dev sentences). Prints a markdown table.

    .venv/bin/python -m bench.simcse_results            # sized for < 15 min on 2 quiet CPU cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from bench import machine
from dataio.eval_sets import read_sts
from dataio.tables import data_dir
from simcse.batching import triplet_batches, unsupervised_batches
from simcse.data import load_sentences, load_triplets
from simcse.evaluation import SimCSEEvaluator, evaluate_data
from simcse.model import SimCSEEncoder, default_model_path
from simcse.train import TrainConfig, train


def scores(encoder: SimCSEEncoder, dev, test, on_dev: dict | None = None) -> dict:
    """STS-B dev and test Spearman, alignment and uniformity on dev (`on_dev`: an evaluation of dev
    already made during training for this very model, which saves encoding dev again)."""
    on_dev = on_dev or evaluate_data(encoder, [dev])
    on_test = evaluate_data(encoder, [test])
    return {"dev": on_dev["sts"]["dev"], "test": on_test["sts"]["test"], "alignment": on_dev["alignment"],
            "uniformity": on_dev["uniformity"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(data_dir()))
    parser.add_argument("--model", default=None, help="start model (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--unsup-steps", type=int, default=100)
    parser.add_argument("--sup-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--unsup-lr", type=float, default=1e-5)
    parser.add_argument("--sup-lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="keep the trained models here (default: a temporary folder)")
    parser.add_argument("--progress", action="store_true", help="training progress bars on stderr")
    parser.add_argument("--only", choices=["unsup", "sup"], default=None, help="run one of the two trainings")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    data = Path(args.data_dir)
    dev, test = read_sts(data / "stsb" / "dev.tsv"), read_sts(data / "stsb" / "test.tsv")
    model_path = args.model or default_model_path()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="simcse-results-"))
    rows = []
    try:
        base = SimCSEEncoder.from_pretrained(model_path, max_length=args.max_length)
        rows.append(("all-MiniLM-L6-v2 (before)", "-", scores(base, dev, test), None))
        evaluator = SimCSEEvaluator([data / "stsb" / "dev.tsv"])
        runs = []
        if args.only in (None, "unsup"):
            corpus = load_sentences(data / "wiki" / "sentences.txt")
            runs.append(("unsup", f"(a) unsup SimCSE, wiki {len(corpus.texts):,} sentences", args.unsup_steps,
                         args.unsup_lr, unsupervised_batches(corpus.texts, args.batch_size, seed=args.seed)))
        if args.only in (None, "sup"):
            nli = load_triplets(data / "nli" / "triplets.csv")
            runs.append(("sup", f"(b) sup SimCSE, NLI {len(nli):,} triplets", args.sup_steps, args.sup_lr,
                         triplet_batches(nli.anchor, nli.positive, nli.negative, args.batch_size, seed=args.seed)))
        for key, name, steps, lr, batches in runs:
            torch.manual_seed(args.seed)
            encoder = SimCSEEncoder.from_pretrained(model_path, max_length=args.max_length)
            config = TrainConfig(lr=lr, max_steps=steps, batch_size=args.batch_size, eval_every=args.eval_every,
                                 save_every=0, seed=args.seed, progress=args.progress)
            t0 = time.perf_counter()
            result = train(encoder, batches, config, out / key, evaluator=evaluator)
            seconds = time.perf_counter() - t0
            best = SimCSEEncoder.from_pretrained(result.best_model_path, max_length=args.max_length)
            best_eval = next(e for e in result.evaluations if e["step"] == result.best_step)
            curve = ", ".join(f"{e['step']}: {e['metric']:.2f}" for e in result.evaluations)
            rows.append((name, f"lr {lr:g}, {steps} steps, best step {result.best_step}",
                         scores(best, dev, test, best_eval), {"seconds": seconds, "curve": curve,
                                                   "rows_s": result.triplets_per_s}))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)

    print(f"# SimCSE from all-MiniLM-L6-v2 on {data}: total {time.perf_counter() - started:.0f} s")
    print(f"# machine: {machine.text()}")
    print(f"# batch {args.batch_size}, max length {args.max_length}, τ 0.05, warm-up 10% + linear decay, "
          f"dev eval every {args.eval_every} steps, best dev checkpoint reported")
    print()
    print("| model | training | STS-B dev | STS-B test | alignment (dev) | uniformity (dev) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, how, s, _ in rows:
        print(f"| {name} | {how} | {s['dev']:.2f} | {s['test']:.2f} | {s['alignment']:.3f} | {s['uniformity']:.3f} |")
    print()
    for name, _, _, info in rows:
        if info:
            rate = f", {info['rows_s']:.1f} rows/s" if info["rows_s"] else ""
            print(f"- {name}: dev Spearman by step {{{info['curve']}}}; {info['seconds']:.0f} s{rate}")


if __name__ == "__main__":
    main()
