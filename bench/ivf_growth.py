"""Approximate against exact kNN at corpus sizes one machine meets: recall@k and cost at 1M and 5M (issue 15).

For each size, a pool of float16 unit vectors is built from real sentence embeddings (an embeddings cache of the
mining format, `--base`): the base rows themselves, then recombinations "a b" embedded as the normalised sum of
their parts' embeddings (the stand-in `python -m bench.mine_throughput --growth` uses; encoding millions of sentences
on this CPU takes hours). Each backend then searches the same seeded sample of pool rows as queries (every
sentence is an anchor in unsupervised mining), k = `--k`:

- `exact`: faiss' flat index (what `auto` uses on CPU below `CPU_EXACT_MAX_PAIRS`);
- `faiss-ivf:<codec>`: `mining.index.ivf_index` (nlist 4*sqrt(n)) with flat, sq8 or pq codes (quantized codes
  re-scored exactly), nprobe tuned to the recall target as mining does;
- `torch-ivf`: `mining.torch_search.clustered_torch` (sqrt(n)/2 lists), nprobe tuned the same way.

Recall@k is measured against exact search on the tuning sample (`--recall-sample` queries, the product's own
`tune_nprobe`). Each backend's search is timed on `--queries` and on twice as many, so the fixed part (assigning
the pool to lists) and the per-query part separate; a full run's search (every pool row a query) is projected
as build + fixed + n x per-query. Each (size, backend) runs in a fresh process for its peak RSS.

    .venv/bin/python -m bench.ivf_growth --base CACHE_FOLDER --sizes 1000000,5000000 \
        [--backends exact,faiss-ivf:pq,faiss-ivf:sq8,torch-ivf] [--queries 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import child_options, machine, module_command
from dataio.process_memory import peak_rss_mb


def build_pool(base: np.ndarray, size: int, path: Path) -> None:
    """`size` unit rows into a float16 .npy: the base rows, then normalised sums of two distinct base rows."""
    b = len(base)
    emb = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(size, base.shape[1]))
    direct = min(b, size)
    emb[:direct] = base[:direct]
    rng = np.random.default_rng(12345)
    for s in range(direct, size, 200_000):
        m = min(200_000, size - s)
        x = rng.integers(0, b, m)
        y = (x + 1 + rng.integers(0, b - 1, m)) % b  # never x itself
        v = base[x].astype(np.float32) + base[y].astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        emb[s:s + m] = v
    emb.flush()


def child(args: argparse.Namespace) -> None:
    """One (size, backend) measurement in this fresh process; prints one JSON line."""
    from mining import index as ix
    from mining import torch_search as ts

    emb = np.load(args.pool, mmap_mode="r")
    n, dim = emb.shape
    rng = np.random.default_rng(args.seed)
    q2 = np.sort(rng.choice(n, size=min(n, 2 * args.queries), replace=False))
    q1 = q2[::2]
    k = args.k
    out: dict = {"size": n, "backend": args.child_backend, "k": k, "queries_timed": [len(q1), len(q2)]}
    name, _, codec = args.child_backend.partition(":")
    t = time.perf_counter()
    if name == "exact":
        index = ix._flat_index(dim)
        for s in range(0, n, 65536):
            index.add(np.ascontiguousarray(emb[s:s + 65536], dtype=np.float32))
        out["build_s"] = time.perf_counter() - t

        def search(q: np.ndarray) -> None:
            ix.faiss_search(emb, q, k, index, trained=True)
        out["recall"] = 1.0
        fixed_in_search = False
    elif name == "faiss-ivf":
        index, info = ix.ivf_index(emb, nlist=None, codec=codec, seed=args.seed)
        out["build_s"] = time.perf_counter() - t
        out.update({"nlist": info["nlist"], "codec": info["codec"]})

        def probe(q: np.ndarray, p: int) -> np.ndarray:
            index.nprobe = p
            return ix.faiss_search(emb, q, k, index, trained=True, refine=info["refined"])[1]
        t = time.perf_counter()
        tuned = ix.tune_nprobe(probe, emb, q2, k, info["nlist"], None, ix.FAISS_NPROBE_START, args.target,
                               args.recall_sample, args.seed)
        out["tune_s"] = time.perf_counter() - t
        index.nprobe = tuned["nprobe"]
        out.update({"nprobe": tuned["nprobe"], "nprobe_tried": tuned.get("nprobe_tried"),
                    "recall": tuned["nprobe_tried"][-1][1]})

        def search(q: np.ndarray) -> None:
            ix.faiss_search(emb, q, k, index, trained=True, refine=info["refined"])
        fixed_in_search = False
    elif name == "torch-ivf":
        nlist = max(1, min(n, round(math.sqrt(n) / 2)))
        cent = ts.centroids_torch(emb, nlist, args.seed, "cpu")
        out["build_s"] = time.perf_counter() - t
        out["nlist"] = nlist

        def probe(q: np.ndarray, p: int) -> np.ndarray:
            return ts.clustered_torch(emb, q, k, nprobe=p, centroids=cent)[1]
        t = time.perf_counter()
        tuned = ix.tune_nprobe(probe, emb, q2, k, nlist, None, ts.TORCH_NPROBE_START, args.target,
                               args.recall_sample, args.seed)
        out["tune_s"] = time.perf_counter() - t
        out.update({"nprobe": tuned["nprobe"], "nprobe_tried": tuned.get("nprobe_tried"),
                    "recall": tuned["nprobe_tried"][-1][1]})

        def search(q: np.ndarray) -> None:
            ts.clustered_torch(emb, q, k, nprobe=tuned["nprobe"], centroids=cent)
        fixed_in_search = True  # every call assigns the whole pool to its lists
    else:
        raise SystemExit(f"unknown backend {args.child_backend!r}")
    times = []
    for q in (q1, q2):
        t = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t)
    if fixed_in_search:  # the slope between the two query counts, and what is left at zero queries
        per_query = max(0.0, (times[1] - times[0]) / (len(q2) - len(q1)))
        fixed = max(0.0, times[0] - per_query * len(q1))
    else:
        per_query, fixed = times[1] / len(q2), 0.0
    out.update({"search_s": times, "per_query_ms": per_query * 1e3, "fixed_s": fixed,
                "projected_full_s": out["build_s"] + out.get("tune_s", 0.0) + fixed + per_query * n,
                "peak_rss_mb": peak_rss_mb()})
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, help="an embeddings cache folder (embeddings.npy, float16 unit rows)")
    p.add_argument("--sizes", default="1000000,5000000")
    p.add_argument("--backends", default="exact,faiss-ivf:pq,faiss-ivf:sq8,torch-ivf")
    p.add_argument("--queries", type=int, default=5000, help="queries timed (and twice as many)")
    p.add_argument("--k", type=int, default=57, help="neighbours per query (the default bands' kNN depth)")
    p.add_argument("--target", type=float, default=0.95, help="recall@k the nprobe tuning aims for")
    p.add_argument("--recall-sample", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("ivf-growth"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--pool", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-backend", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_backend:
        child(args)
        return
    if args.base is None:
        p.error("--base is required")
    base = np.load(args.base / "embeddings.npy", mmap_mode="r")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine.text()}")
    print(f"base {base.shape[0]:,} rows of {args.base}")
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        pool = args.work / f"pool-{size}.npy"
        if not pool.exists():
            build_pool(np.asarray(base), size, pool)
        for backend in args.backends.split(","):
            cmd = module_command("bench.ivf_growth", "--pool", str(pool.resolve()), "--child-backend", backend,
                                 "--k", str(args.k), "--queries", str(args.queries), "--target", str(args.target),
                                 "--recall-sample", str(args.recall_sample), "--seed", str(args.seed))
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **child_options())
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                results.append({"size": size, "backend": backend, "failed": proc.stderr.strip()[-300:]})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["wall_s"] = time.perf_counter() - t
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| pool | backend | lists / nprobe | recall@k (sample) | build + tune s | search ms / query | "
          "projected full search s | peak RSS MB |\n|---:|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "failed" in r:
            print(f"| {r['size']:,} | {r['backend']} | failed: {r['failed'][-80:]} | | | | | |")
            continue
        lists = f"{r['nlist']} / {r['nprobe']}" if "nlist" in r else "-"
        print(f"| {r['size']:,} | {r['backend']} | {lists} | {r['recall']:.3f} | "
              f"{r['build_s'] + r.get('tune_s', 0):.0f} | {r['per_query_ms']:.2f} | {r['projected_full_s']:,.0f} | "
              f"{r['peak_rss_mb']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
