"""The torch searches of `mining.index`: exact top-k by blocked matmul (`torch` backend: fp16 on a GPU's tensor
cores without faiss-gpu) and IVF computed list by list (`torch-ivf`: each k-means list scored against all the
queries probing it in one matmul, BLAS speed on CPU). Hand-written for those two reasons (docs/mining.md,
"Measured"); `mining.index` chooses among the backends and measures recall.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TORCH_NPROBE_START = 8  # first nprobe tried by the recall tuning (torch-ivf), doubled until the target holds


def index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64  # int32 halves the memory of a 1M x 50 result


def exact_torch(embeddings: np.ndarray, queries: np.ndarray, k: int, *, device: str = "cpu",
                block_bytes: int | None = None, show_progress: bool = False,
                resident_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by blocked matmul with a running top-k per query.

    The pool is converted to the compute dtype in slabs of at most `resident_bytes` (default: all of it on a
    GPU, 256 MB on CPU), so searching a 1M-row float16 memmap never holds a float32 copy of it.
    """
    import torch

    n, dim = embeddings.shape
    nq = len(queries)
    kk = min(k, n)
    on_gpu = str(device).startswith("cuda")
    dtype = torch.float16 if on_gpu else torch.float32
    # CPU: small blocks keep the score block in cache-friendly sizes (the fastest block size is in docs/benchmarks.md).
    block_bytes = block_bytes or (2 << 30 if on_gpu else 64 << 20)
    resident_bytes = resident_bytes or (n * dim * 2 + 1 if on_gpu else 256 << 20)
    slab = max(kk, min(n, resident_bytes // (dim * (2 if on_gpu else 4))))
    q_block = min(max(1, nq), 4096 if on_gpu else 512)
    c_block = max(kk, min(slab, block_bytes // (4 * q_block)))
    q_super = 65536 if slab < n else nq  # queries kept resident while the pool streams past them
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=index_dtype(n))
    bar = progress_bar(nq, "search", show_progress)
    with torch.inference_mode():
        for ss in range(0, nq, max(1, q_super)):
            sq = queries[ss:ss + q_super]
            q_all = torch.from_numpy(np.array(embeddings[sq])).to(device, dtype)
            best_s = torch.full((len(sq), kk), -float("inf"), dtype=torch.float32, device=device)
            best_i = torch.full((len(sq), kk), -1, dtype=torch.int64, device=device)
            for ps in range(0, n, slab):
                pool = to_torch(embeddings[ps:ps + slab], device, dtype)
                for qs in range(0, len(sq), q_block):
                    q = q_all[qs:qs + q_block]
                    bs, bi = best_s[qs:qs + q_block], best_i[qs:qs + q_block]
                    for cs in range(0, len(pool), c_block):
                        s_new, i_new = torch.topk(q @ pool[cs:cs + c_block].T, min(kk, min(c_block, len(pool) - cs)),
                                                  dim=1)
                        cat_s = torch.cat([bs, s_new.float()], 1)
                        cat_i = torch.cat([bi, i_new + (ps + cs)], 1)
                        bs, pos = torch.topk(cat_s, kk, dim=1)
                        bi = torch.gather(cat_i, 1, pos)
                    best_s[qs:qs + q_block], best_i[qs:qs + q_block] = bs, bi
                del pool
            out_s[ss:ss + len(sq), :kk] = best_s.cpu().numpy()
            out_i[ss:ss + len(sq), :kk] = best_i.cpu().numpy()
            bar.update(len(sq))
    bar.close()
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


def kmeans_centroids(embeddings: np.ndarray, k: int, seed: int, niter: int = 10,
                     max_points_per_centroid: int = 64) -> np.ndarray:
    """Unit-norm k-means centroids (FAISS, spherical, seeded) trained on a sample of the rows."""
    import faiss

    n = embeddings.shape[0]
    rng = np.random.default_rng(seed)
    n_train = min(n, max(k * max_points_per_centroid, 1))
    sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    km = faiss.Kmeans(embeddings.shape[1], k, niter=niter, seed=int(seed), spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid)
    km.train(np.ascontiguousarray(embeddings[sample], dtype=np.float32))
    return km.centroids


def centroids_torch(embeddings: np.ndarray, nlist: int, seed: int, device: str) -> Any:
    import torch

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    return torch.from_numpy(kmeans_centroids(embeddings, nlist, seed)).to(device, dtype)


def clustered_torch(embeddings: np.ndarray, queries: np.ndarray, k: int, *, nlist: int | None = None,
                    nprobe: int | None = None, seed: int = 0, device: str = "cpu",
                    show_progress: bool = False,
                    centroids: Any = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """IVF computed list by list: every query probes its `nprobe` nearest lists (as faiss' IVF does), but the
    work is regrouped per list, so each list is scored against all the queries probing it in one matmul and
    the running top-k of those queries is merged. Same candidates as per-query IVF, BLAS speed."""
    import torch

    n = embeddings.shape[0]
    # Few, large lists: each list x its probing queries is then a matmul big enough for BLAS to run at
    # full speed; faiss' usual 4*sqrt(n) lists are too small for that (docs/benchmarks.md, "Figures behind
    # code choices").
    on_gpu = str(device).startswith("cuda")
    dtype = torch.float16 if on_gpu else torch.float32
    cent = centroids if centroids is not None else \
        centroids_torch(embeddings, max(1, min(n, nlist or round(math.sqrt(n) / 2))), seed, device)
    nlist = int(cent.shape[0])
    nprobe = max(1, min(nlist, nprobe or TORCH_NPROBE_START))
    assign = np.empty(n, dtype=np.int64)
    with torch.inference_mode():
        for s in range(0, n, 65536):
            block = torch.from_numpy(np.array(embeddings[s:s + 65536])).to(device, dtype)
            assign[s:s + len(block)] = (block @ cent.T).argmax(dim=1).cpu().numpy()
        nq = len(queries)
        probes = np.empty((nq, nprobe), dtype=np.int64)
        for s in range(0, nq, 65536):
            block = torch.from_numpy(np.array(embeddings[queries[s:s + 65536]])).to(device, dtype)
            probes[s:s + len(block)] = torch.topk(block @ cent.T, nprobe, dim=1).indices.cpu().numpy()
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=nlist)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = probes.reshape(-1)
    by_list = np.argsort(flat, kind="stable")
    p_counts = np.bincount(flat, minlength=nlist)
    p_starts = np.concatenate([[0], np.cumsum(p_counts)[:-1]])
    best_s = torch.full((nq, k), -float("inf"), dtype=torch.float32)
    id_dtype = torch.int32 if index_dtype(n) is np.int32 else torch.int64  # halves the largest array at 1M
    best_i = torch.full((nq, k), -1, dtype=id_dtype)
    bar = progress_bar(nlist, "lists", show_progress)
    scanned = 0
    with torch.inference_mode():
        for c in range(nlist):
            bar.update(1)
            if not p_counts[c] or not counts[c]:
                continue
            members = np.sort(order[starts[c]:starts[c] + counts[c]])
            pool = torch.from_numpy(np.array(embeddings[members])).to(device, dtype)
            member_ids = torch.from_numpy(members).to(id_dtype)
            qrows = by_list[p_starts[c]:p_starts[c] + p_counts[c]] // nprobe
            kk = min(k, len(members))
            for b in range(0, len(qrows), 2048):
                rows = torch.from_numpy(qrows[b:b + 2048])
                q = torch.from_numpy(np.array(embeddings[queries[qrows[b:b + 2048]]])).to(device, dtype)
                s_new, i_new = torch.topk(q @ pool.T, kk, dim=1)
                cat_s = torch.cat([best_s[rows], s_new.float().cpu()], dim=1)
                cat_i = torch.cat([best_i[rows], member_ids[i_new.cpu()]], dim=1)
                top_s, pos = torch.topk(cat_s, k, dim=1)
                best_s[rows] = top_s
                best_i[rows] = torch.gather(cat_i, 1, pos)
            scanned += int(p_counts[c]) * len(members)
    bar.close()
    out_i = best_i.numpy()
    out_s = best_s.numpy()
    out_i[~np.isfinite(out_s)] = -1
    info = {"nlist": nlist, "nprobe": nprobe, "scanned_fraction": scanned / max(1, nq * n),
            "largest_list": int(counts.max())}
    return out_s, out_i, info


def to_torch(embeddings: np.ndarray, device: str, dtype: Any) -> Any:
    import torch

    n = embeddings.shape[0]
    out = torch.empty(embeddings.shape, dtype=dtype, device=device)
    step = 262144
    for s in range(0, n, step):  # converted in slices so a memory-mapped float16 file never doubles in RAM
        out[s:s + step] = torch.from_numpy(np.array(embeddings[s:s + step])).to(device=device, dtype=dtype)
    return out


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", disable=not enabled, leave=False)
