"""k-nearest-neighbour search over the pool embeddings (inner product of unit vectors = cosine).

Backends:
- `torch`: exact, blocked matmul + top-k (GPU when there is one). Hand-written for the GPU: fp16 on tensor
  cores without needing faiss-gpu. On this CPU faiss' flat index is faster (docs/mining.md, "Measured"),
  so `auto` uses that on CPU.
- `faiss-flat`: exact `IndexFlatIP` (on the GPUs faiss sees, if any).
- `torch-ivf`: approximate, for large pools on CPU: IVF (each query probes its `nprobe` nearest k-means
  lists) computed list by list, each list scored against all queries probing it in one matmul.
  Hand-written because regrouping turns IVF's per-query scans into BLAS matrix products: faster than
  faiss-cpu IVF at the same recall on this CPU with few large lists (docs/mining.md, "Measured").
- `faiss-ivf`: approximate IVF (flat, SQ8 or PQ codes) for large pools; quantized codes are re-scored
  exactly from the float16 embeddings (`refine`), so scores and order are exact among the candidates.
Approximate backends measure their recall@k against exact search on a sample of queries and return it,
so the approximation is never silent; unless `nprobe` is given they also raise `nprobe` (doubling) until
the sample's recall reaches `recall_target` (0.95 by default) before searching every query.
`auto` picks by size and hardware and logs why.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mining.params import BACKENDS, IVF_CODECS  # the choices live with the settings a user writes
from mining.torch_search import (
    TORCH_NPROBE_START,
    centroids_torch,
    clustered_torch,
    exact_torch,
    index_dtype,
    progress_bar,
)

log = logging.getLogger(__name__)

# Largest query x pool product searched exactly on CPU by `auto`: tens of seconds on a small CPU at d=384
# (docs/benchmarks.md, "Figures behind code choices").
CPU_EXACT_MAX_PAIRS = 3e9
RECALL_TARGET = 0.95  # recall@k an approximate search must reach on the sample unless nprobe is fixed
FAISS_NPROBE_START = 16  # first nprobe tried by the recall tuning (faiss-ivf), doubled until the target holds
SEARCH_STEP = 16384  # queries per faiss search call; shard boundaries are multiples, so calls (and results) match
REFINE_FACTOR = 4  # quantized IVF codes: candidates retrieved per neighbour kept, then re-scored exactly


@dataclass
class KnnResult:
    """Top-k neighbours of each query row, best first; indices -1 / scores -inf pad a short list."""

    scores: np.ndarray
    indices: np.ndarray
    backend: str
    device: str
    recall: float | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _faiss_gpus() -> int:
    try:
        import faiss
    except ImportError:  # a GPU machine with torch but no faiss build for its CUDA (faiss-gpu is an extra)
        return 0
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def choose_backend(n_pool: int, n_queries: int, dim: int, *, cuda: bool | None = None,
                   faiss_gpus: int | None = None, cpu_exact_max_pairs: float = CPU_EXACT_MAX_PAIRS) -> tuple[str, str]:
    """(backend, reason): exact torch search while it is affordable, IVF beyond."""
    cuda = _cuda_available() if cuda is None else cuda
    faiss_gpus = _faiss_gpus() if faiss_gpus is None else faiss_gpus
    if cuda:
        import torch

        free, _ = torch.cuda.mem_get_info()
        need = n_pool * dim * 2 * 1.3 + 2 * 2**30  # fp16 pool + score blocks
        if need < free * 0.8:
            return "torch", f"CUDA GPU with room for the fp16 pool ({need / 2**30:.1f} GiB of {free / 2**30:.1f} free)"
        return "faiss-ivf", f"pool too large for exact search in GPU memory ({need / 2**30:.1f} GiB needed)"
    pairs = float(n_pool) * float(n_queries)
    if faiss_gpus > 0:
        return "faiss-flat", "faiss sees a GPU"
    if pairs <= cpu_exact_max_pairs:
        # on CPU faiss' flat index beats the blocked torch search (docs/benchmarks.md, "Figures behind code choices")
        return "faiss-flat", (f"CPU, {pairs:.2g} query-pool pairs <= {cpu_exact_max_pairs:.2g}: exact search is "
                              f"affordable")
    return "torch-ivf", f"CPU, {pairs:.2g} query-pool pairs > {cpu_exact_max_pairs:.2g}: approximate clustered search"


def knn(embeddings: np.ndarray, queries: np.ndarray, k: int, backend: str = "auto", *, nlist: int | None = None,
        nprobe: int | None = None, ivf_codec: str = "auto", recall_sample: int = 256, seed: int = 0,
        device: str | None = None, show_progress: bool = False,
        recall_target: float | None = RECALL_TARGET) -> KnnResult:
    """Top-k pool rows by inner product for each pool row in `queries` (the query itself included).

    Approximate backends: `nprobe` None tunes it on a sample of the queries until recall@k reaches
    `recall_target` (None: no tuning, the backend's starting nprobe); the measured recall is returned."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    queries = np.asarray(queries, dtype=np.int64)
    n, dim = embeddings.shape
    reason = "requested"
    if backend == "auto":
        backend, reason = choose_backend(n, len(queries), dim)
    log.info("index: backend %s (%s), pool %d, queries %d, k %d", backend, reason, n, len(queries), k)
    t0 = time.perf_counter()
    details: dict[str, Any] = {"reason": reason, "pool": n, "queries": len(queries), "k": k}
    recall = None
    if backend == "torch":
        dev = device or ("cuda" if _cuda_available() else "cpu")
        scores, indices = exact_torch(embeddings, queries, k, device=dev, show_progress=show_progress)
    elif backend == "faiss-flat":
        scores, indices, dev = faiss_search(embeddings, queries, k, _flat_index(dim), show_progress)
    elif backend == "torch-ivf":
        dev = device or ("cuda" if _cuda_available() else "cpu")
        nlist_used = max(1, min(n, nlist or round(math.sqrt(n) / 2)))
        cent = centroids_torch(embeddings, nlist_used, seed, dev)
        tuned = tune_nprobe(lambda q, p: clustered_torch(embeddings, q, k, nprobe=p, device=dev, centroids=cent)[1],
                            embeddings, queries, k, nlist_used, nprobe, TORCH_NPROBE_START, recall_target,
                            recall_sample, seed)
        scores, indices, info = clustered_torch(embeddings, queries, k, nprobe=tuned["nprobe"], device=dev,
                                                show_progress=show_progress, centroids=cent)
        details.update(info)
        details.update({k_: v for k_, v in tuned.items() if k_ != "nprobe"})
        recall = measure_recall(embeddings, queries, indices, k, recall_sample, seed)
        details["recall_sample"] = int(min(recall_sample, len(queries)))
        log.info("index: clustered recall@%d = %.4f on %d sampled queries (nlist %d, nprobe %d)", k, recall,
                 details["recall_sample"], info["nlist"], info["nprobe"])
    else:
        index, info = ivf_index(embeddings, nlist=nlist, codec=ivf_codec, seed=seed)
        details.update(info)

        def search(q: np.ndarray, p: int) -> np.ndarray:
            index.nprobe = p
            return faiss_search(embeddings, q, k, index, False, trained=True, refine=info["refined"])[1]

        tuned = tune_nprobe(search, embeddings, queries, k, info["nlist"], nprobe, FAISS_NPROBE_START,
                            recall_target, recall_sample, seed)
        index.nprobe = tuned["nprobe"]
        details.update(tuned)
        scores, indices, dev = faiss_search(embeddings, queries, k, index, show_progress, trained=True,
                                            refine=info["refined"])
        recall = measure_recall(embeddings, queries, indices, k, recall_sample, seed)
        details["recall_sample"] = int(min(recall_sample, len(queries)))
        log.info("index: IVF recall@%d = %.4f on %d sampled queries (nlist %d, nprobe %d, codec %s)", k, recall,
                 details["recall_sample"], info["nlist"], index.nprobe, info["codec"])
    seconds = time.perf_counter() - t0
    return KnnResult(scores, indices, backend, dev, recall, seconds, details)


def tune_nprobe(search: Any, embeddings: np.ndarray, queries: np.ndarray, k: int, nlist: int,
                nprobe: int | None, start: int, target: float | None, sample: int, seed: int) -> dict[str, Any]:
    """The nprobe to search with: the one given, else the smallest of start, 2*start, ... (up to nlist) whose
    recall@k on the sampled queries reaches `target`. `search(queries, nprobe) -> indices`."""
    if nprobe is not None or not target or not len(queries):
        return {"nprobe": int(min(nlist, nprobe or start)), "nprobe_tuned": False}
    pick = recall_sample_rows(len(queries), sample, seed)
    _, exact = exact_torch(embeddings, queries[pick], k, device="cuda" if _cuda_available() else "cpu")
    p = int(min(nlist, start))
    tried = []
    while True:
        hits, total = _hits(search(queries[pick], p), exact)
        recall = hits / total if total else 1.0
        tried.append([p, round(recall, 4)])
        if recall >= target or p >= nlist:
            break
        p = int(min(nlist, 2 * p))
    log.info("index: nprobe %d reaches recall@%d %.4f on the sample (target %.2f; tried %s)", p, k, recall, target,
             tried)
    return {"nprobe": p, "nprobe_tuned": True, "recall_target": target, "nprobe_tried": tried}


def _flat_index(dim: int) -> Any:
    import faiss

    return faiss.IndexFlatIP(dim)


def _to_gpu(index: Any) -> tuple[Any, str]:
    import faiss

    if _faiss_gpus() > 0:
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        co.useFloat16 = True
        return faiss.index_cpu_to_all_gpus(index, co=co), "cuda"
    return index, "cpu"


def faiss_search(embeddings: np.ndarray, queries: np.ndarray, k: int, index: Any, show_progress: bool = False,
                 trained: bool = False, refine: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-k of `queries` (pool rows) in a faiss index (`trained`: already holds the pool; else the pool is
    added to it first). `refine` (quantized codes, `ivf_index`'s details["refined"]): retrieve
    REFINE_FACTOR x k candidates and re-score them exactly from the embeddings."""
    n = embeddings.shape[0]
    if not trained:
        index, dev = _to_gpu(index)
        for s in range(0, n, 65536):
            index.add(np.ascontiguousarray(embeddings[s:s + 65536], dtype=np.float32))
    else:
        dev = "cuda" if _faiss_gpus() > 0 else "cpu"
    kk = min(k, n)
    fetch = min(n, kk * REFINE_FACTOR) if refine else kk
    if dev == "cuda" and fetch > 2048:
        raise ValueError(f"faiss on GPU returns at most 2048 neighbours; k={fetch}. Lower range_max")
    nq = len(queries)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=index_dtype(n))
    bar = progress_bar(nq, "search", show_progress)
    step = SEARCH_STEP
    for s in range(0, nq, step):
        q = np.ascontiguousarray(embeddings[queries[s:s + step]], dtype=np.float32)
        d, i = index.search(q, fetch)
        if refine:
            d, i = rescore(embeddings, q, i, kk)
        out_s[s:s + len(q), :kk] = d
        out_i[s:s + len(q), :kk] = i
        bar.update(len(q))
    bar.close()
    out_s[out_i < 0] = -np.inf
    return out_s, out_i, dev


def rescore(embeddings: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int, block: int = 1024
            ) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidate rows (from the float16 embeddings), top k kept.

    What faiss' IndexRefineFlat does, without a second float32 copy of the pool in memory."""
    out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(q), block):
        c = cand[s:s + block]
        valid = c >= 0
        rows = np.asarray(embeddings[np.where(valid, c, 0).reshape(-1)], dtype=np.float32).reshape(*c.shape, -1)
        sc = np.einsum("qkd,qd->qk", rows, q[s:s + block])
        sc[~valid] = -np.inf
        top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
        out_s[s:s + block, :top.shape[1]] = np.take_along_axis(sc, top, 1)
        out_i[s:s + block, :top.shape[1]] = np.take_along_axis(c, top, 1)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


def ivf_index(embeddings: np.ndarray, *, nlist: int | None, codec: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """A trained faiss IVF index holding the pool (on the GPUs faiss sees), with what was chosen and why."""
    import faiss

    if codec not in IVF_CODECS:
        raise ValueError(f"unknown IVF codec {codec!r}; choose one of {', '.join(IVF_CODECS)}")
    n, dim = embeddings.shape
    if nlist is None:
        nlist = round(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // 39, 65536))  # faiss wants >= 39 training points per list
    if codec == "auto":  # float32 codes while they are small; 8-bit, then PQ codes (re-scored exactly) beyond
        gib = n * dim * 4 / 2**30
        codec = "flat" if gib <= 1.0 else ("sq8" if gib <= 16 else "pq")
    quantizer = faiss.IndexFlatIP(dim)
    metric = faiss.METRIC_INNER_PRODUCT
    if codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
    elif codec == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, metric)
    else:
        m = max(d for d in range(1, dim // 4 + 1) if dim % d == 0 and d <= 64)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, metric)
    index.cp.seed = int(seed)
    rng = np.random.default_rng(seed)
    n_train = min(n, max(nlist * 64, 10000))
    sample = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
    train = np.ascontiguousarray(embeddings[sample], dtype=np.float32)
    if _faiss_gpus() > 0:
        index, _ = _to_gpu(index)
    index.train(train)
    del train
    for s in range(0, n, 65536):
        index.add(np.ascontiguousarray(embeddings[s:s + 65536], dtype=np.float32))
    # quantized codes: faiss_search re-scores their candidates exactly (refine=details["refined"])
    return index, {"nlist": nlist, "codec": codec, "trained_on": int(n_train), "refined": codec != "flat"}


def recall_sample_rows(nq: int, sample: int, seed: int) -> np.ndarray:
    """The seeded sample of query positions whose recall is measured (sorted)."""
    rng = np.random.default_rng(seed + 7919)
    return np.sort(rng.choice(nq, size=min(sample, nq), replace=False))


def _hits(approx: np.ndarray, exact: np.ndarray) -> tuple[int, int]:
    hits = total = 0
    for a, e in zip(approx, exact):
        e = e[e >= 0]
        hits += len(np.intersect1d(a[a >= 0], e))
        total += len(e)
    return hits, total


def exact_recall_hits(embeddings: np.ndarray, queries: np.ndarray, approx: np.ndarray, k: int) -> tuple[int, int]:
    """(neighbours found, neighbours there are) of `approx` against exact top-k search of `queries`."""
    if not len(queries):
        return 0, 0
    _, exact = exact_torch(embeddings, queries, k, device="cuda" if _cuda_available() else "cpu")
    return _hits(approx, exact)


def measure_recall(embeddings: np.ndarray, queries: np.ndarray, approx: np.ndarray, k: int, sample: int,
                   seed: int) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over a seeded sample of the queries."""
    if len(queries) == 0:
        return 1.0
    pick = recall_sample_rows(len(queries), sample, seed)
    hits, total = exact_recall_hits(embeddings, queries[pick], approx[pick], k)
    return hits / total if total else 1.0
