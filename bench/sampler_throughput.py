"""Sampler throughput: batches/s drawing curriculum batches from a 1M-row mined round.

The sampler must be far faster than training (the issue asks for >= 100x the CPU training throughput),
so it never shows up in a training profile. Prints, per batch size:
- TripletSampler batches/s and triplets/s (band mixture at full competence, unique texts per batch);
- the anchor: sentence-transformers' NoDuplicatesBatchSampler (the same no-repeated-text rule, no
  mixture) over the same rows, indices plus text lookup, same machine, same run; and the ratio;
- with --train-triplets-per-s X, the ratio of sampler triplets/s to that training throughput.

    .venv/bin/python -m bench.sampler_throughput [--rows 1000000] [--seconds 8] [--train-triplets-per-s X]

Texts are sentences of ../shared/data (wiki + twitter, SIMCSE_DATA_DIR) recombined into distinct
strings, or synthetic strings where the data is absent. The dataset lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import machine
from curriculum import TripletSampler, curriculum_mixture
from curriculum.state import Plan
from curriculum.synthetic import band_table, write_round
from dataio.tables import data_dir
from dataio.triplet_layout import BANDS
from dataio.triplets import read_manifest, read_triplets


def source_sentences(limit: int = 60_000) -> tuple[list[str], str]:
    data = data_dir()
    lines: list[str] = []
    for rel in ("wiki/sentences.txt", "twitter/unlabeled.txt"):
        path = data / rel
        if path.is_file():
            lines.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if lines:
        return lines[:limit], f"{data} (wiki + twitter, {min(len(lines), limit)} sentences)"
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choices(words, k=12)) for _ in range(limit)], "synthetic words (shared data absent)"


def build_round(root: Path, rows: int, seed: int = 0) -> str:
    """`rows` triplets in 4 bands over a corpus of rows/4 texts: each text is an anchor in every band,
    positives and negatives come from the same corpus, so texts recur across rows as in real mining."""
    sentences, source = source_sentences()
    rng = np.random.default_rng(seed)
    per_band = rows // len(BANDS)
    n_texts = max(per_band, 1000)
    left = rng.integers(0, len(sentences), n_texts)
    right = rng.integers(0, len(sentences), n_texts)
    corpus = pa.array([f"{sentences[a]} {sentences[b]}" for a, b in zip(left.tolist(), right.tolist())],
                      type=pa.string())
    tables = {}
    for k, band in enumerate(BANDS):
        anchors = rng.permutation(n_texts)[:per_band]
        positives = (anchors + 1 + rng.integers(0, n_texts - 1, per_band)) % n_texts
        negatives = (anchors + 1 + rng.integers(0, n_texts - 1, per_band)) % n_texts
        sims = rng.normal(0.1 + 0.2 * k, 0.05, per_band)
        tables[band] = band_table(corpus.take(pa.array(anchors)), corpus.take(pa.array(positives)),
                                  corpus.take(pa.array(negatives)), sims)
    write_round(root, 0, tables, rows_per_file=250_000)
    return source


def time_sampler(root: Path, batch_size: int, seconds: float, plan: Plan) -> tuple[float, int, float]:
    start = time.perf_counter()
    sampler = TripletSampler(root, 0, batch_size=batch_size, seed=0)
    load_s = time.perf_counter() - start
    for _ in range(20):
        sampler.draw(plan)  # warm-up (first permutations)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            batch = sampler.draw(plan)
        n += 50
    elapsed = time.perf_counter() - start
    assert len(batch["anchor"]) == batch_size
    return n / elapsed, n, load_s


def anchor_dataset(root: Path):
    """The same rows as one `datasets.Dataset` (what sentence-transformers trains from)."""
    import datasets

    return datasets.Dataset(read_triplets(root, rounds=[0], columns=["anchor", "positive", "negative"]))


def time_anchor(dataset, batch_size: int, seconds: float) -> tuple[float, int]:
    """sentence-transformers' NoDuplicatesBatchSampler over the same rows, plus fetching the texts."""
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    sampler = NoDuplicatesBatchSampler(dataset, batch_size=batch_size, drop_last=True,
                                       generator=torch.Generator(), seed=0)
    iterator = iter(sampler)
    for _ in range(5):
        dataset[next(iterator)]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            batch = dataset[next(iterator)]  # the texts, as a DataLoader would fetch them
        n += 10
    elapsed = time.perf_counter() - start
    assert len(batch["anchor"]) == batch_size
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per batch size and sampler")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--train-triplets-per-s", type=float, default=None,
                        help="CPU training throughput (from the SimCSE training benchmark) to compare with")
    parser.add_argument("--no-anchor", action="store_true", help="skip the sentence-transformers comparison")
    args = parser.parse_args()

    print(f"machine: {machine.text()}")
    with tempfile.TemporaryDirectory(prefix="sampler-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        source = build_round(root, args.rows)
        print(f"built {args.rows:,} triplets in {time.perf_counter() - start:.1f}s from {source}")
        difficulties = read_manifest(root, 0).difficulties()
        mixture = curriculum_mixture(difficulties, 1.0)
        plan = Plan(round=0, stage=0, competence=1.0, mixture=mixture, alpha={b: 1.0 for b in mixture})
        print("mixture at c=1: " + ", ".join(f"{b} {p:.2f}" for b, p in mixture.items()))
        dataset = None if args.no_anchor else anchor_dataset(root)
        for batch_size in args.batch_sizes:
            rate, n, load_s = time_sampler(root, batch_size, args.seconds, plan)
            line = (f"batch {batch_size:4d}: TripletSampler {rate:8.1f} batches/s {rate * batch_size:10.0f} triplets/s "
                    f"({n} batches; load {load_s:.1f}s)")
            if dataset is not None:
                anchor_rate, anchor_n = time_anchor(dataset, batch_size, args.seconds)
                line += (f" | sentence-transformers NoDuplicatesBatchSampler {anchor_rate:7.1f} batches/s "
                         f"({anchor_n} batches) | ratio {rate / anchor_rate:.1f}x")
            if args.train_triplets_per_s:
                line += (f" | vs training {args.train_triplets_per_s:g} triplets/s: "
                         f"{rate * batch_size / args.train_triplets_per_s:.0f}x")
            print(line, flush=True)
    load = os.getloadavg()
    print(f"load at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
