"""k-means clusters of the pool: the in-domain band's groups where a corpus has fewer than two domain labels.

FAISS' spherical k-means when FAISS is installed; a seeded torch Lloyd's k-means otherwise (a GPU machine can have
torch but no FAISS build for its CUDA). Split from `mining.bands` so the bands read as bands.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mining.embeddings import Embeddings


def cluster_labels(emb: Embeddings, n_clusters: int | None, seed: int) -> np.ndarray:
    """k-means cluster of every pool row (spherical, seeded; trained on a sample).

    FAISS when it is installed; torch otherwise (the GPU host has torch but no FAISS).
    """
    n = emb.matrix.shape[0]
    k = n_clusters or int(np.clip(round(np.sqrt(n) / 2), 2, 1024))
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    n_train = min(n, 256 * k)
    sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    train = np.ascontiguousarray(emb.rows(sample), dtype=np.float32)
    try:
        import faiss
    except ImportError:  # a GPU machine with torch but no faiss build for its CUDA (faiss-gpu is an extra)
        centroids = spherical_kmeans_torch(train, k, seed=int(seed))

        def assign(x: np.ndarray) -> np.ndarray:
            return _nearest_centroid_torch(x, centroids)
    else:
        km = faiss.Kmeans(emb.dim, k, niter=20, seed=int(seed), spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=256)
        km.train(train)

        def assign(x: np.ndarray) -> np.ndarray:
            return km.index.search(x, 1)[1][:, 0]
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, 65536):
        rows = np.ascontiguousarray(emb.rows(np.arange(s, min(n, s + 65536))), dtype=np.float32)
        labels[s:s + len(rows)] = assign(rows)
    return labels


def spherical_kmeans_torch(x: np.ndarray, k: int, *, seed: int, niter: int = 20) -> np.ndarray:
    """Lloyd's k-means on the unit sphere (cosine), seeded: the fallback where FAISS is absent.

    Written here because torch has no k-means; runs on the GPU when there is one. An emptied cluster is
    re-seeded with the point farthest from its centroid, as FAISS splits large clusters.
    """
    import torch

    device = _torch_device()
    g = torch.Generator().manual_seed(seed)
    data = torch.nn.functional.normalize(torch.from_numpy(x).float(), dim=1).to(device)
    cent = data[torch.randperm(len(data), generator=g)[:k].to(device)].clone()
    for _ in range(niter):
        sims = data @ cent.T
        best, assign = sims.max(dim=1)
        new = torch.zeros_like(cent).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            far = torch.argsort(best)[:len(empty)]
            new[empty] = data[far]
        cent = torch.nn.functional.normalize(new, dim=1)
    return cent.cpu().numpy()


def _nearest_centroid_torch(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    import torch

    device = _torch_device()
    return (torch.from_numpy(x).to(device) @ torch.from_numpy(centroids).to(device).T).argmax(dim=1).cpu().numpy()


def _torch_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
