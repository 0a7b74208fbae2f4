"""Corpus embeddings: encoded chunk by chunk into a memory-mapped float16 `.npy`, cached by fingerprints.

The cache key is (pool fingerprint, model fingerprint), so every band of a round, a re-run of the round and
evaluation share one encoding; a different model or corpus never reuses a stale one. An interrupted encoding
resumes from the last finished chunk (`progress.json` beside the partial matrix).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataio.atomic import atomic_path, atomic_write_json
from dataio.errors import InputError
from dataio.hashing import model_folder_sha256, sha256_file
from mining.corpus import MiningCorpus
from mining.vector_store import TextVectorStore

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: meta.json carries the matrix's sha256, checked on every cache hit
ChunkEncoder = Callable[[list[list[str]]], list[np.ndarray]]


def model_fingerprint(encoder: Any, given: str | None = None) -> str:
    """A string that changes whenever the encoder's output can change.

    Order: a caller-given string; the encoder's own `fingerprint()`; for a torch module (a SentenceTransformer),
    a SHA-256 of its state dict and max_seq_length (works for models changed in memory by training); for an
    object naming a model folder (`model_path`/`path`/`name_or_path`), the folder's content hash
    (`dataio.hashing.model_folder_sha256`: every file but the model card, as a run records each round's model).
    """
    if given:
        return str(given)
    own = getattr(encoder, "fingerprint", None)
    if callable(own):
        return str(own())
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(encoder, torch.nn.Module):
        h = hashlib.sha256(b"torch-state-v1\0")
        for name, tensor in sorted(encoder.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        h.update(repr(getattr(encoder, "max_seq_length", None)).encode())
        return h.hexdigest()
    for attr in ("model_path", "path", "name_or_path"):
        folder = getattr(encoder, attr, None)
        if folder and Path(folder).is_dir():
            return model_folder_sha256(folder)
    raise TypeError(f"cannot fingerprint a {type(encoder).__name__}: give it a fingerprint() method or pass "
                    f"model_fingerprint='...' (any string that changes when the model changes)")


def encode_texts(encoder: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised float32 embeddings (n, d) from any encoder whose `encode` takes sentence-transformers'
    keywords (`SimCSEEncoder`, `SentenceTransformer`; a hand-written encoder may ignore them)."""
    out = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=False, normalize_embeddings=True,
                         convert_to_numpy=True)
    if hasattr(out, "detach"):  # a torch tensor
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {arr.shape} for {len(texts)} texts; expected (n, dim)")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    np.divide(arr, norms, out=arr, where=norms > 0)
    return arr


@dataclass
class Embeddings:
    """Unit-norm float16 vectors of the pool, row i for pool sentence i (memory-mapped when cached)."""

    matrix: np.ndarray
    ids: list[str]
    model_fingerprint: str
    pool_fingerprint: str
    path: Path | None = None
    cached: bool = False
    seconds: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def rows(self, index: np.ndarray) -> np.ndarray:
        """float32 copy of the given rows."""
        return np.asarray(self.matrix[np.asarray(index)], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a shard: a memory-mapped cache travels as its path (the worker maps the same file; a
        cluster of several machines needs the cache folder on a shared file system), anything else as data."""
        state = dict(self.__dict__)
        if isinstance(self.matrix, np.memmap) and self.path is not None:
            state["matrix"] = None
            state["path"] = Path(self.path).resolve()  # a worker's working folder may differ
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.matrix is None:
            self.matrix = np.load(self.path, mmap_mode="r")

    def pair_sims(self, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Cosine similarity of rows a[i] and b[i], float32, computed in chunks to bound memory."""
        out = np.empty(len(a), dtype=np.float32)
        for s in range(0, len(a), chunk):
            ea = self.rows(a[s:s + chunk])
            eb = self.rows(b[s:s + chunk])
            out[s:s + chunk] = np.einsum("ij,ij->i", ea, eb)
        return out


def default_chunk_size() -> int:
    """Texts per encode call: large on a GPU (big length-sorted batches), smaller on CPU so the progress bar
    and the resume points come every minute or so."""
    try:
        import torch

        return 32768 if torch.cuda.is_available() else 4096
    except ImportError:  # pragma: no cover
        return 4096


def cache_folder(cache_dir: Path, pool_fp: str, model_fp: str) -> Path:
    return Path(cache_dir) / f"emb-{pool_fp[:16]}-{hashlib.sha256(model_fp.encode()).hexdigest()[:16]}"


def embed_corpus(corpus: MiningCorpus, encoder: Any, cache_dir: str | os.PathLike | None = None, *,
                 model_fp: str | None = None, batch_size: int = 256, chunk_size: int | None = None,
                 show_progress: bool = True, map_chunks: ChunkEncoder | None = None,
                 chunks_per_call: int = 1, store: TextVectorStore | str | os.PathLike | None = None) -> Embeddings:
    """Embeddings of `corpus.texts` by `encoder`, from the cache when the fingerprints match.

    Without `cache_dir` the matrix lives in memory. With it, chunks are written into a memory-mapped
    `.npy.partial` as they finish and renamed when complete; `meta.json`, written last, marks a usable cache.
    `map_chunks(list of text chunks) -> list of arrays` encodes `chunks_per_call` chunks at once elsewhere
    (shards on a cluster, mining.shards); the chunks, the cache and its resume points stay the same.
    `store` (a mining.vector_store for this model, or its folder): texts an earlier run encoded are taken from it,
    only the others are encoded (each distinct text once) and added to it chunk by chunk, so a killed encoding
    resumes from it.
    """
    model_fp = model_fp or model_fingerprint(encoder)
    pool_fp = corpus.pool_fingerprint()
    chunk_size = chunk_size or default_chunk_size()
    texts = corpus.texts
    n = len(texts)
    if store is not None and not isinstance(store, TextVectorStore):
        store = TextVectorStore(store, model_fp)
    if store is not None and store.model_fp != model_fp:
        raise ValueError(f"the vector store holds {store.model_fp[:16]}...'s vectors, not {model_fp[:16]}...'s")
    if cache_dir is None:
        if store is not None:
            t0 = time.perf_counter()
            matrix, _, _ = _vectors_through_store(texts, encoder, store, batch_size, chunk_size, show_progress,
                                                  map_chunks, chunks_per_call)
            return Embeddings(matrix, list(corpus.ids), model_fp, pool_fp, None, False, time.perf_counter() - t0)
        return _embed_in_memory(texts, corpus.ids, encoder, model_fp, pool_fp, batch_size, chunk_size, show_progress,
                                map_chunks, chunks_per_call)

    folder = cache_folder(Path(cache_dir), pool_fp, model_fp)
    meta_path, final = folder / "meta.json", folder / "embeddings.npy"
    key = {"version": CACHE_VERSION, "pool_fingerprint": pool_fp, "model_fingerprint": model_fp, "rows": n}
    if meta_path.exists() and final.exists():
        with _damaged_cache(folder):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if {k: meta.get(k) for k in key} == key:
                matrix = np.load(final, mmap_mode="r")
                if matrix.shape[0] == n and sha256_file(final) == meta.get("sha256"):
                    log.info("embeddings: cache hit %s (%d x %d)", folder, *matrix.shape)
                    return Embeddings(matrix, list(corpus.ids), model_fp, pool_fp, final, cached=True)
                # Changed bytes (a bit flip, an edited file) decode fine and would be used silently: re-encode.
                log.warning("embeddings: the cache in %s changed on disk since it was written (sha256 differs "
                            "from meta.json); encoding the corpus again", folder)
                del matrix
                meta_path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if store is not None:
        return _embed_into_cache_through_store(corpus, encoder, store, folder, key, batch_size, chunk_size,
                                               show_progress, map_chunks, chunks_per_call)
    partial, progress_path = folder / "embeddings.npy.partial", folder / "progress.json"
    done, matrix = 0, None
    if partial.exists() and progress_path.exists():
        with _damaged_cache(folder):
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
            if {k: progress.get(k) for k in key} == key:
                done = int(progress["done"])
                matrix = np.load(partial, mmap_mode="r+")
                log.info("embeddings: resuming at %d of %d", done, n)
    log.info("embeddings: encoding %d of %d texts", n - done, n)  # the step's start: minutes on a large pool
    t0 = time.perf_counter()
    bar = _progress(n, done, show_progress)
    try:
        for start, vec in _encoded_chunks(texts, done, chunk_size, encoder, batch_size, map_chunks, chunks_per_call):
            end = start + len(vec)
            if matrix is None:
                matrix = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(n, vec.shape[1]))
                _allocate(partial)
            matrix[start:end] = vec
            matrix.flush()
            atomic_write_json(progress_path, {**key, "done": end, "dim": int(vec.shape[1])})
            bar.update(end - start)
    finally:
        bar.close()
    if matrix is None:  # n == 0 cannot happen after validation; kept for safety
        raise ValueError("nothing to encode")
    dim = int(matrix.shape[1])
    del matrix
    os.replace(partial, final)
    seconds = time.perf_counter() - t0
    log.info("embeddings: encoded %d texts in %.1fs into %s", n - done, seconds, folder)
    return _seal_cache(folder, corpus, key, dim, seconds)


def _seal_cache(folder: Path, corpus: MiningCorpus, key: dict[str, Any], dim: int, seconds: float,
                **extra: Any) -> Embeddings:
    """A complete `embeddings.npy` in `folder` made a usable cache: ids.json, then meta.json (with the matrix's
    sha256) last; a killed encoding's resume files removed."""
    final = folder / "embeddings.npy"
    atomic_write_json(folder / "ids.json", list(corpus.ids))
    atomic_write_json(folder / "meta.json", {**key, "dim": dim, "dtype": "float16", "encode_seconds": seconds,
                                             "sha256": sha256_file(final), **extra})
    for stale in (folder / "embeddings.npy.partial", folder / "progress.json"):
        stale.unlink(missing_ok=True)
    return Embeddings(np.load(final, mmap_mode="r"), list(corpus.ids), key["model_fingerprint"],
                      key["pool_fingerprint"], final, False, seconds)


def _vectors_through_store(texts: list[str], encoder: Any, store: TextVectorStore, batch_size: int, chunk_size: int,
                           show_progress: bool, map_chunks: ChunkEncoder | None, per_call: int
                           ) -> tuple[np.ndarray, int, int]:
    """The texts' float16 vectors: those `store` has, the others encoded (each distinct text once), each chunk
    added to the store as it finishes. Returns (matrix, distinct texts encoded, rows found in the store)."""
    vectors, found = store.lookup(texts)
    rows_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(~found):
        rows_of.setdefault(texts[i], []).append(int(i))
    todo = list(rows_of)
    log.info("embeddings: %d of %d texts from the vector store %s; encoding %d", int(found.sum()), len(texts),
             store.folder, len(todo))
    bar = _progress(len(todo), 0, show_progress)
    try:
        for start, vec in _encoded_chunks(todo, 0, chunk_size, encoder, batch_size, map_chunks, per_call):
            chunk = todo[start:start + len(vec)]
            store.add(chunk, vec)
            if vectors is None:
                vectors = np.zeros((len(texts), vec.shape[1]), dtype=np.float16)
            for text, row in zip(chunk, vec):
                vectors[rows_of[text]] = row
            bar.update(len(vec))
    finally:
        bar.close()
    if vectors is None:  # no texts: refused by validation before; kept for safety
        raise ValueError("nothing to encode")
    return vectors, len(todo), int(found.sum())


def _embed_into_cache_through_store(corpus: MiningCorpus, encoder: Any, store: TextVectorStore, folder: Path,
                                    key: dict[str, Any], batch_size: int, chunk_size: int, show_progress: bool,
                                    map_chunks: ChunkEncoder | None, per_call: int) -> Embeddings:
    """`embed_corpus` with a vector store: the pool's matrix assembled from it (encoding what it lacks), then
    written as the same cache a plain encoding writes (the matrix, ids.json, meta.json last)."""
    t0 = time.perf_counter()
    matrix, encoded, found = _vectors_through_store(corpus.texts, encoder, store, batch_size, chunk_size,
                                                    show_progress, map_chunks, per_call)
    with atomic_path(folder / "embeddings.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, matrix)
    seconds = time.perf_counter() - t0
    log.info("embeddings: %d texts encoded, %d rows from the vector store, in %.1fs into %s", encoded, found,
             seconds, folder)
    return _seal_cache(folder, corpus, key, int(matrix.shape[1]), seconds, encoded=encoded, from_store=found,
                       store=str(store.folder))


def _encoded_chunks(texts: list[str], done: int, chunk_size: int, encoder: Any, batch_size: int,
                    map_chunks: ChunkEncoder | None, per_call: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float16 vectors) of each chunk from `done` on, in order; `per_call` chunks at a time through
    `map_chunks` when given."""
    starts = list(range(done, len(texts), chunk_size))
    step = max(1, per_call) if map_chunks is not None else 1
    for g in range(0, len(starts), step):
        group = starts[g:g + step]
        chunks = [texts[s:s + chunk_size] for s in group]
        if map_chunks is not None:
            vecs = [np.asarray(v, dtype=np.float16) for v in map_chunks(chunks)]
        else:
            vecs = [encode_texts(encoder, chunks[0], batch_size).astype(np.float16)]
        yield from zip(group, vecs)


@contextlib.contextmanager
def _damaged_cache(folder: Path) -> Iterator[None]:
    """A cache that cannot be read (truncated matrix, broken JSON) is one line naming the folder to drop."""
    try:
        yield
    except (ValueError, KeyError, TypeError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"damaged embeddings cache ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                         f"delete this folder to encode the corpus again", path=folder) from None


def _allocate(path: Path) -> None:
    """Reserve the memory-mapped file's blocks now: a sparse file on a full disk is written through the map
    later, and a page the file system cannot back kills the process with SIGBUS instead of raising ENOSPC."""
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - not on Linux
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a file system without preallocation: nothing more can be done here
        raise
    finally:
        os.close(fd)


def _embed_in_memory(texts: list[str], ids: list[str], encoder: Any, model_fp: str, pool_fp: str,
                     batch_size: int, chunk_size: int, show_progress: bool, map_chunks: ChunkEncoder | None = None,
                     per_call: int = 1) -> Embeddings:
    log.info("embeddings: encoding %d texts (no cache folder)", len(texts))
    t0 = time.perf_counter()
    parts = []
    bar = _progress(len(texts), 0, show_progress)
    try:
        for _start, vec in _encoded_chunks(texts, 0, chunk_size, encoder, batch_size, map_chunks, per_call):
            parts.append(vec)
            bar.update(len(vec))
    finally:
        bar.close()
    return Embeddings(np.concatenate(parts), list(ids), model_fp, pool_fp, None, False, time.perf_counter() - t0)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="sent", desc="encode", disable=not enabled, leave=False)
