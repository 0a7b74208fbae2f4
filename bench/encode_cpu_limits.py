"""Where CPU encoding time goes, and what the one lossy speed-up on offer (int8) would cost in neighbours.

Issue 3 asks mining to be 3x faster than sentence-transformers' `mine_hard_negatives` on CPU; encoding is
97% of CPU mining time (docs/mining.md). This bench answers whether a faster encoder is still on the table:

1. the operator profile of `SimCSEEncoder.encode` (torch.profiler, self CPU time): how much is matrix products
   (which only fewer or cheaper FLOPs can speed up) versus the overhead that fusion could remove;
2. sentences/s of fp32 against dynamic int8 (`torch.ao.quantization.quantize_dynamic` on every Linear,
   per-tensor and per-channel weights), interleaved in one process so machine load hits both alike;
3. what int8 changes: cosine of each sentence's int8 and fp32 embeddings, and how many of each sentence's
   10 nearest neighbours (the window hard negatives are mined from) stay the same; the float16 rounding
   of the embedding cache is printed beside it as the floor every mining run already accepts.

    .venv/bin/python -m bench.encode_cpu_limits                 # 2,000 wiki + Twitter sentences, ~3 min
    .venv/bin/python -m bench.encode_cpu_limits --threads 1 --n 1000
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from bench import machine


def sentences(n: int) -> list[str]:
    from dataio.tables import data_dir

    data = data_dir()
    wiki = [s.strip() for s in (data / "wiki" / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    tweets = [s.strip() for s in (data / "twitter" / "unlabeled.txt").read_text(encoding="utf-8").splitlines()
              if s.strip()]
    return wiki[: n // 2] + tweets[: n - n // 2]


def operator_shares(encoder, texts: list[str], batch_size: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    encoder.encode(texts[:batch_size], batch_size=batch_size)  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encoder.encode(texts, batch_size=batch_size)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


def quantized(encoder, per_channel: bool):
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    q = copy.deepcopy(encoder)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its own deprecation
        q.backbone = quantize_dynamic(q.backbone, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    return q


def neighbour_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Mean overlap of the k nearest neighbours (self excluded), and top-1 agreement."""
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    ka, kb = np.argsort(-sa, axis=1)[:, :k], np.argsort(-sb, axis=1)[:, :k]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ka, kb)]))
    return overlap, float((ka[:, 0] == kb[:, 0]).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="sentences (half wiki, half Twitter)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int, default=32, help="as bench.mine_throughput")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from simcse.model import SimCSEEncoder

    texts = sentences(args.n)
    fp32 = SimCSEEncoder.from_pretrained(None, pooling=None, device="cpu", encode_max_length=args.max_length,
                                         max_length=args.max_length)
    print(f"machine: {machine.text()}")
    print(f"{len(texts)} sentences, batch {args.batch_size}, max length {args.max_length}, all-MiniLM-L6-v2\n")

    print("self CPU time of fp32 encode, top operators:")
    shares = operator_shares(fp32, texts, args.batch_size)
    for name, share in shares:
        print(f"  {name:<55} {share:6.1%}")

    variants = {"fp32": fp32, "int8 per-tensor": quantized(fp32, False), "int8 per-channel": quantized(fp32, True)}
    seconds = {name: [] for name in variants}
    embeddings = {}
    for _ in range(args.repeats):
        for name, enc in variants.items():
            start = time.perf_counter()
            embeddings[name] = enc.encode(texts, batch_size=args.batch_size)
            seconds[name].append(time.perf_counter() - start)
    ref = embeddings["fp32"]
    half = ref.astype(np.float16).astype(np.float32)
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    print(f"\n{'variant':<20} {'sent/s':>8} {'speed vs fp32':>14} {'cos mean':>9} {'cos min':>8} "
          f"{'top-10 kept':>12} {'top-1 kept':>11}")
    best = {name: min(s) for name, s in seconds.items()}
    for name, emb in [*embeddings.items(), ("fp32 -> float16 cache", half)]:
        cos = (ref * emb).sum(axis=1)
        overlap, top1 = neighbour_agreement(ref, emb)
        rate = f"{len(texts) / best[name]:8.0f}" if name in best else f"{'-':>8}"
        speed = f"{best['fp32'] / best[name]:14.2f}" if name in best else f"{'-':>14}"
        print(f"{name:<20} {rate} {speed} {cos.mean():9.4f} {cos.min():8.4f} {overlap:12.3f} {top1:11.3f}")
    gemm = sum(share for name, share in shares if name in ("aten::addmm", "aten::mm", "aten::bmm"))
    print(f"\nmatmul_share: {gemm:.2f}")
    print(f"int8_per_channel_speedup: {best['fp32'] / best['int8 per-channel']:.2f}")
    print(f"int8_per_channel_top10_kept: {neighbour_agreement(ref, embeddings['int8 per-channel'])[0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
