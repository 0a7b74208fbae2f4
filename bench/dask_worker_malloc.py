"""What Dask's default worker environment costs encoding: MALLOC_TRIM_THRESHOLD_=65536 against unset (issue 15).

Dask's nannies start every worker with `distributed.nanny.pre-spawn-environ`, which sets MALLOC_TRIM_THRESHOLD_ to
65536: glibc then returns freed memory to the system at once, and an encoder, whose batches allocate and free
the same large tensors over and over, maps them again each time. This bench encodes the same sentences with the
product's `encode_slice` on a local 2-worker Dask cluster under each setting, in ABAB order (the encoder loaded
on both workers before timing), and prints the times and their ratio. `mining.shards.dask_map` starts its local
clusters with the variable unset when this measures it slower.

    .venv/bin/python -m bench.dask_worker_malloc [--sentences 16384] [--repeats 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

from bench import machine

TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def encode_on_cluster(trim: int | None, chunks: list[list[str]], ref) -> float:
    """Seconds to encode `chunks` on a fresh local 2-worker cluster whose workers get MALLOC_TRIM_THRESHOLD_=`trim`
    (None: unset), the encoder already loaded on both."""
    import dask
    from distributed import Client, LocalCluster

    from mining.shards import encode_slice

    encode = functools.partial(encode_slice, ref)
    saved = dict(os.environ)
    with dask.config.set({TRIM_KEY: trim}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    # the nannies wrote their workers' variables into this process's environment: without this, the next
    # cluster's workers would inherit 65536 from here even when it is unset in the config
    os.environ.clear()
    os.environ.update(saved)
    with cluster, Client(cluster) as client:
        client.gather(client.map(encode, chunks[:2], pure=False))  # each worker loads the encoder
        t = time.perf_counter()
        client.gather(client.map(encode, chunks, pure=False))
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=None, help="one sentence per line (default: the shared Twitter "
                   "corpus, <data_dir>/twitter/unlabeled.txt)")
    p.add_argument("--sentences", type=int, default=16384)
    p.add_argument("--chunk", type=int, default=4096, help="sentences per task (mining's CPU chunk)")
    p.add_argument("--repeats", type=int, default=2, help="ABAB pairs")
    p.add_argument("--max-length", type=int, default=32)
    args = p.parse_args()

    import distributed  # noqa: F401  (its config defaults must be loaded before dask.config.set names its keys)

    from dataio.tables import data_dir
    from mining.encoders import load_encoder, offline_minilm_path
    from mining.shards import EncoderRef

    corpus = args.corpus or data_dir() / "twitter" / "unlabeled.txt"
    texts = [t for t in corpus.read_text(encoding="utf-8").splitlines() if t.strip()][:args.sentences]
    chunks = [texts[i:i + args.chunk] for i in range(0, len(texts), args.chunk)]
    ref = EncoderRef.of(load_encoder, offline_minilm_path(), max_length=args.max_length)
    print(f"machine: {machine.text()}")
    print(f"{len(texts):,} sentences of {corpus} in {len(chunks)} tasks")
    times: dict[str, list[float]] = {"65536 (Dask's default)": [], "unset (dask_map's)": []}
    for _ in range(args.repeats):
        for (name, runs), trim in zip(times.items(), (65536, None)):
            runs.append(encode_on_cluster(trim, chunks, ref))
            print(f"MALLOC_TRIM_THRESHOLD_ {name}: {runs[-1]:.1f} s", flush=True)
    default, ours = (statistics.median(r) for r in times.values())
    print(f"median: {default:.1f} s with Dask's default, {ours:.1f} s unset; "
          f"dask_default_over_unset {default / ours:.2f}")


if __name__ == "__main__":
    main()
