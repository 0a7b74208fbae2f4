"""The measurements behind fixed choices in the code, so comments can point here instead of carrying timings.

Each line compares the option the code takes with the alternatives it rejected, in the same process, best
of `--repeats`:

- AdamW step over the offline MiniLM's parameters: `fused=True` (what `simcse.checkpoints.build_optimizer` asks
  for) against `foreach=True` (its fallback) and the per-tensor loop.
- Exact kNN on CPU (`mining.index.choose_backend`): faiss' flat index against the blocked torch search
  (`mining.torch_search.exact_torch`), and the torch search's CPU block size.
- Clustered torch IVF (`mining.torch_search.clustered_torch`): the few large lists it uses (sqrt(n)/2) against faiss'
  usual 4*sqrt(n), at the same nprobe share of lists.

    .venv/bin/python -m bench.code_choices [--pool 70000] [--queries 20000] [--repeats 3]

Embeddings are random unit rows of width 384 (MiniLM's): speed does not depend on their content.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from bench import machine
from bench.verify_cost import best  # best of `repeats` wall times, shared by the benches


def unit_rows(n: int, seed: int, dim: int = 384) -> np.ndarray:
    """`n` random unit rows of width `dim` (MiniLM's by default): search speed does not depend on content."""
    emb = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def adamw(repeats: int) -> None:
    import torch

    from simcse.model import SimCSEEncoder, default_model_path

    encoder = SimCSEEncoder.from_pretrained(default_model_path())
    params = [p for p in encoder.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    results = {}
    for name, kwargs in [("fused", {"fused": True}), ("foreach", {"foreach": True}),
                         ("per-tensor loop", {"foreach": False})]:
        opt = torch.optim.AdamW(params, lr=1e-5, **kwargs)
        opt.step()  # state allocation outside the timing
        results[name] = best(opt.step, repeats)
    base = results["fused"]
    for name, s in results.items():
        print(f"adamw step ({sum(p.numel() for p in params) / 1e6:.1f}M params)  {name:<16} {s:7.3f} s  "
              f"{s / base:5.2f}x the fused step")


def exact_knn(pool: int, queries: int, k: int, repeats: int) -> None:
    from mining.index import _flat_index, faiss_search
    from mining.torch_search import exact_torch

    emb = unit_rows(pool, seed=0)
    q = np.arange(queries)

    def faiss_flat() -> None:
        faiss_search(emb, q, k, _flat_index(emb.shape[1]))  # adds the pool itself

    t_faiss = best(faiss_flat, repeats)
    print(f"exact knn {queries} x {pool} k={k}  faiss-flat        {t_faiss:7.2f} s")
    for block_mb in (16, 64, 256):
        t = best(lambda b=block_mb: exact_torch(emb, q, k, block_bytes=b << 20), repeats)
        default = "  (the CPU default)" if block_mb == 64 else ""
        print(f"exact knn {queries} x {pool} k={k}  torch, {block_mb:>3} MB blocks {t:7.2f} s  "
              f"{t / t_faiss:5.2f}x faiss-flat{default}")


def clustered(pool: int, queries: int, k: int, repeats: int) -> None:
    from mining.torch_search import clustered_torch

    emb = unit_rows(pool, seed=1)
    q = np.arange(queries)
    ours = max(1, round(math.sqrt(pool) / 2))
    faiss_usual = int(4 * math.sqrt(pool))
    rows = {}
    for name, nlist in [("sqrt(n)/2 lists (ours)", ours), ("4*sqrt(n) lists", faiss_usual)]:
        nprobe = max(1, nlist // 8)
        rows[name] = best(lambda n=nlist, p=nprobe: clustered_torch(emb, q, k, nlist=n, nprobe=p), repeats)
        print(f"torch ivf {queries} x {pool} k={k}  {name:<24} nlist {nlist:>5} nprobe {nprobe:>4}  "
              f"{rows[name]:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=70_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine.text(machine.describe(torch=True))}")
    adamw(args.repeats)
    exact_knn(args.pool, args.queries, args.k, args.repeats)
    clustered(args.pool, args.queries, args.k, args.repeats)


if __name__ == "__main__":
    main()
