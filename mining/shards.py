"""Mining in shards: the pieces a distributed engine maps over, as plain functions on plain data.

A round is split two ways. Encoding: the pool's chunks are encoded `shards` at a time (`encode_slice`), and
the driver writes each into the memory-mapped cache, so the cache and its resume points are those of an
unsharded run. Search and bands: the unique anchors are cut into contiguous blocks, and `mine_shard` takes
one block, searches its anchors' neighbours (exact, or in an IVF index the driver built once and saved)
and mines every band for the anchor rows of those anchors. Only the triplets (a few integer arrays per band)
come back; `merge_shards` puts them in the order mining every row at once gives. Every random draw is a
counter-based hash of the row's ids (mining.bands), so sharded and unsharded mining give the same triplets
from the same embeddings.

`MapShards` is any `map(fn, items) -> list`: `local_map` (in this process, the default), `dask_map` (each
item a task on a Dask cluster: one at an address, or a local cluster of worker processes) or `ray_map` (each
item a Ray task: a cluster at an address, or a local one of that many worker processes). Nothing here knows
about Prefect.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataio.errors import UserError
from mining.band_context import BandContext, BandResult, merge_results
from mining.bands import BAND_FUNCTIONS, add_similarities
from mining.embeddings import encode_texts
from mining.index import KnnResult, exact_recall_hits, faiss_search, knn
from mining.params import ENGINES, address_problem

MapShards = Callable[[Callable[[Any], Any], Sequence[Any]], list]


def local_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
    """The in-process `MapShards`: one item after the other."""
    return [fn(item) for item in items]


@contextlib.contextmanager
def dask_map(workers: int, address: str | None = None) -> Iterator[MapShards]:
    """A `MapShards` running each item as a task on a Dask cluster, gathered in order: the scheduler at
    `address`, else a local cluster of `workers` single-threaded worker processes on 127.0.0.1 (no Bokeh dashboard),
    closed on exit. Workers import this package, so they need the same environment as the driver; with a
    memory-mapped embeddings cache they read it by path (a shared file system on a multi-machine cluster)."""
    import dask
    from distributed import Client, LocalCluster

    # A LocalCluster's nannies run in this process and write their workers' variables (`distributed.nanny.
    # pre-spawn-environ`: OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, PYTHONHASHSEED, ...) into
    # its own os.environ before each spawn, and never take them back. Left there, this process's torch, whose
    # thread pool starts on its first parallel call, searches on one thread (torch-ivf runs here), and every
    # process the flow starts later inherits them. The workers keep theirs: they read it when spawned.
    saved = dict(os.environ)
    cluster = None
    if address is None:
        # The nannies also give each worker MALLOC_TRIM_THRESHOLD_=65536, so glibc hands freed memory back at once
        # and maps it again for the next batch's tensors, which slowed encoding on the workers
        # (docs/mining.md, bench/dask_worker_malloc.py). Unset here, as in a plain process; a value this process
        # has in its own environment still goes to the workers.
        try:
            with dask.config.set({_TRIM_KEY: None}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
        finally:
            _restore_environment(saved)
    client = Client(cluster if cluster is not None else address)

    def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
        return client.gather(client.map(fn, list(items), pure=False))

    try:
        yield run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        _restore_environment(saved)  # also what a nanny wrote when it restarted a worker


_TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def _restore_environment(saved: dict[str, str]) -> None:
    """os.environ back to `saved`: what was added removed, what was changed put back."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def ray_map(workers: int, address: str | None = None) -> Iterator[MapShards]:
    """A `MapShards` running each item as a Ray task (one CPU each), gathered in order: the cluster at `address`
    (`ray://HOST:10001` through Ray Client, or `auto`/`HOST:6379` from a node of the cluster), else a local Ray
    of `workers` CPUs (`local_ray`: every listener on 127.0.0.1, no dashboard, its own temporary folder, every
    process it started gone on exit). A Ray this process had already started or joined is used as it is and left
    running. `fn` goes to the object store once and every task reads it from there. Workers import this package,
    as with `dask_map`."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("the ray engine needs the ray package: pip install 'simcse-curriculum[ray]' (or ray), "
                          "on the driver and every worker") from err

    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            if address is None:
                stack.enter_context(local_ray(workers))
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
                stack.callback(ray.shutdown)
        call = ray.remote(num_cpus=1, max_retries=0)(_apply)

        def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
            shared = ray.put(fn)
            return ray.get([call.remote(shared, item) for item in items])

        yield run


# A local Ray binds its servers to its node's IP address: the GCS, the raylet (node manager and object manager),
# every worker's and the driver's gRPC server, the runtime-env and dashboard agents, the metrics exporters and the
# autoscaler's metrics port listen on 127.0.0.1 only when that address is a loopback one, and on every interface (or
# the machine's external address) otherwise. `ray.init(_node_ip_address="127.0.0.1")` does not give it: ray.init
# replaces a loopback address by the machine's external one (`services.resolve_ip_for_localhost`), except where
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is false (Ray's single-machine mode, its default on macOS and Windows). Ray reads
# that variable once, into `ray_constants.ENABLE_RAY_CLUSTER`, when it is imported, so `local_ray` sets both while
# it starts the node and puts them back after; the processes it starts are given 127.0.0.1 explicitly.
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_RAY_EXIT_WAIT_S = 10.0  # how long the processes a local Ray started get to exit after ray.shutdown, then SIGTERM,
# then as long again before SIGKILL


@contextlib.contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A new single-machine Ray of `cpus` CPUs for this process, for the `with` block: every listener on 127.0.0.1
    (checked once it is up: a listener elsewhere shuts it down and raises), no dashboard, its session under a
    temporary folder of its own (not the shared /tmp/ray), removed on exit once every process it started
    (GCS, raylet, monitor, agents, workers) has exited or been killed. This process's environment is put back
    as it was (ray.init leaves RAY_AUTH_MODE in it)."""
    import psutil
    import ray
    from ray._private import ray_constants

    me = psutil.Process()
    saved = dict(os.environ)
    before_children = {child.pid for child in me.children()}
    before_listeners = _listeners([me])
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir=_ray_temp_base())
    single_machine = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    started: list[psutil.Process] | None = None
    try:
        os.environ[_SINGLE_MACHINE] = "0"  # the processes it starts inherit it
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            # address="local": a new Ray even when RAY_ADDRESS names a running one
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, dashboard_host="127.0.0.1",
                     log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1",
                     _temp_dir=temp_dir)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = single_machine
            if _SINGLE_MACHINE in saved:
                os.environ[_SINGLE_MACHINE] = saved[_SINGLE_MACHINE]
            else:
                os.environ.pop(_SINGLE_MACHINE, None)
            started = [child for child in me.children() if child.pid not in before_children]
        exposed = [f"{ip}:{port} ({name})" for ip, port, name in
                   sorted(_listeners([me, *_family(started)]) - before_listeners) if not _is_loopback(ip)]
        if exposed:
            raise UserError(f"the local Ray (ray {ray.__version__}) listens beyond 127.0.0.1, on {', '.join(exposed)}, "
                            "so it was shut down before mining: use --engine dask, or a Ray cluster's address")
        yield
    finally:
        family = _family(started or [])  # and the workers and agents the raylet started since
        if ray.is_initialized():
            ray.shutdown()
        _end_processes(family, _RAY_EXIT_WAIT_S)
        _restore_environment(saved)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_temp_base() -> str:
    """Where `local_ray` makes its folder: Ray's own choice of parent (RAY_TMPDIR, else the temporary folder), kept
    short, as Ray's Unix sockets (<folder>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return base if len(base) <= 28 or not os.path.isdir("/tmp") else "/tmp"


def _family(processes: Sequence[Any]) -> list[Any]:
    """`processes` (psutil) and all their descendants still running."""
    import psutil

    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                found += [process, *process.children(recursive=True)]
    return found


def _listeners(processes: Sequence[Any]) -> set[tuple[str, int, str]]:
    """The TCP ports `processes` (psutil) listen on, as (address, port, process name)."""
    import psutil

    found = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            name = process.name()
            connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
            for conn in connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port, name))
    return found


def _is_loopback(ip: str) -> bool:
    """Whether a listener's address (as `ss` or psutil write it) is a loopback one: 127.0.0.0/8, ::1, or
    127.x in IPv6 form (::ffff:127.0.0.1, which Ray's gRPC servers show). `*`, 0.0.0.0 and :: are not."""
    try:
        address = ipaddress.ip_address(ip.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _end_processes(processes: Sequence[Any], wait_s: float) -> None:
    """Wait up to `wait_s` for `processes` (psutil) to exit, SIGTERM those left, as long again, then SIGKILL."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=wait_s)
    for signal_them in ("terminate", "kill"):
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(psutil.Error):
                getattr(process, signal_them)()
        _, alive = psutil.wait_procs(alive, timeout=wait_s)


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def engine_map(engine: str, workers: int, address: str | None = None) -> contextlib.AbstractContextManager[MapShards]:
    """The `MapShards` of a distributed `engine` ("dask" or "ray"), as `dask_map` / `ray_map` open it."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    problem = address_problem(engine, address)
    if problem is not None:
        raise ValueError(problem)
    return dask_map(workers, address) if engine == "dask" else ray_map(workers, address)


@contextlib.contextmanager
def sharded_mining(shards: int, encoder_ref: EncoderRef, cluster: str | None = None,
                   engine: str = "dask") -> Iterator[dict[str, Any]]:
    """`mining.pipeline.mine`'s keywords for mining in `shards` pieces: the one set-up that `mine --shards` and
    the flows' mining step (`mining.shards`) share. Nothing for 1 shard; else the shard count, the `engine`'s
    map (`dask_map` or `ray_map`: the cluster at `cluster`, else a local one of `shards` worker processes,
    closed on exit) and how each worker loads the encoder (`encoder_ref`: an importable function with hashable
    arguments)."""
    if shards < 2:
        if cluster is not None:
            raise ValueError("a cluster address needs 2 or more shards (the pieces spread over its workers)")
        if engine != "dask":
            raise ValueError(f"the {engine} engine needs 2 or more shards (1 shard runs in this process)")
        yield {}
        return
    with engine_map(engine, shards, cluster) as map_shards:
        yield {"shards": shards, "map_shards": map_shards, "encoder_ref": encoder_ref}


def blocks(n: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """[0, n) in at most `shards` contiguous blocks of near-equal size, inner boundaries multiples of `align`."""
    if n <= 0:
        return []
    shards = max(1, min(shards, math.ceil(n / max(1, align))))
    size = math.ceil(n / shards / align) * align
    return [(s, min(n, s + size)) for s in range(0, n, size)]


# ------------------------------------------------------------------------------------------ encoding
@dataclass(frozen=True)
class EncoderRef:
    """How to load an encoder in another process: an importable function and its arguments.

    Picklable by reference (the function travels as its module and name), and loaded once per worker
    process: `load()` keeps the model for the next shard the same worker gets.
    """

    loader: Callable[..., Any]
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, loader: Callable[..., Any], *args: Any, **kwargs: Any) -> EncoderRef:
        return cls(loader, tuple(args), tuple(sorted(kwargs.items())))

    def load(self) -> Any:
        return _load_cached(self)


@functools.lru_cache(maxsize=2)
def _load_cached(ref: EncoderRef) -> Any:
    return ref.loader(*ref.args, **dict(ref.kwargs))


def encode_slice(encoder: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """float16 unit-norm embeddings of `texts` by `encoder` (an encoder, or an `EncoderRef` to load here)."""
    enc = encoder.load() if isinstance(encoder, EncoderRef) else encoder
    return encode_texts(enc, list(texts), batch_size).astype(np.float16)


# -------------------------------------------------------------------------------------- search + bands
@dataclass
class SearchSpec:
    """How a shard finds its anchors' neighbours: an exact backend over the pool, or a saved faiss index."""

    backend: str
    depth: int
    index_path: str | None = None  # faiss-ivf: the index the driver trained and wrote once
    nprobe: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardJob:
    """One block of unique anchors: search their neighbours, mine every band for their rows."""

    ctx: BandContext
    block: tuple[int, int]
    bands: list[str]
    search: SearchSpec | None
    recall_queries: np.ndarray | None = None  # positions in uq (within the block) checked against exact search
    knn: KnnResult | None = None  # given instead of `search` when the driver searched already (torch-ivf)


@dataclass
class ShardResult:
    block: tuple[int, int]
    bands: dict[str, BandResult]
    recall_hits: int = 0
    recall_total: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def mine_shard(job: ShardJob) -> ShardResult:
    """The kNN of one block of anchors and every band of their anchor rows (run on any worker)."""
    ctx = job.ctx
    start, end = job.block
    queries = ctx.uq[start:end]
    t = time.perf_counter()
    hits = total = 0
    result = job.knn
    if result is None and job.search is not None and job.search.depth:
        spec = job.search
        matrix = ctx.emb.matrix
        if spec.index_path is not None:
            import faiss

            index = faiss.read_index(spec.index_path)
            index.nprobe = spec.nprobe or index.nprobe
            scores, indices, dev = faiss_search(matrix, queries, spec.depth, index, False, trained=True,
                                                refine=bool(spec.details.get("refined")))
            result = KnnResult(scores, indices, spec.backend, dev)
        else:
            result = knn(matrix, queries, spec.depth, spec.backend)
        if job.recall_queries is not None and len(job.recall_queries):
            local = job.recall_queries - start
            hits, total = exact_recall_hits(matrix, queries[local], result.indices[local], spec.depth)
    if result is not None:
        ctx.set_knn(result, queries, offset=start)
    search_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = ctx.rows_of_block(start, end)
    bands = {b: add_similarities(BAND_FUNCTIONS[b](ctx, rows), ctx.emb, ctx.teacher) for b in job.bands}
    ctx.knn = None
    return ShardResult(job.block, bands, hits, total, {"index": search_s, "bands": time.perf_counter() - t})


def merge_shards(parts: list[ShardResult], bands: list[str]) -> dict[str, BandResult]:
    """Every band's triplets from all shards, in unsharded order."""
    parts = sorted(parts, key=lambda p: p.block)
    return {b: merge_results([p.bands[b] for p in parts]) for b in bands}


def save_faiss_index(index: Any, folder: str | Path, name: str) -> str:
    """Write a trained faiss index where every worker can read it (a CPU copy of a GPU index)."""
    import faiss

    from mining.index import _faiss_gpus

    if _faiss_gpus() > 0:
        index = faiss.index_gpu_to_cpu(index)
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return str(path)
