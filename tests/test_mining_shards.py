"""Sharded mining gives the triplets unsharded mining gives: exact and IVF search, every band, and the same
recall figure; the shards really are separate calls over separate anchor blocks, whose inputs survive pickling
(as on a cluster), on a real 2-worker Dask LocalCluster and a local 2-CPU Ray too, whose every TCP listener is on
loopback (`ss -ltnp`) and whose processes and folders are gone after; an interrupted sharded encode resumes from
the cache, and a failed shard leaves no round behind."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pytest

import mining.embeddings as embeddings_mod
import mining.index as index_mod
from dataio.hashing import sha256_file
from dataio.triplet_layout import round_dir
from dataio.triplets import read_triplets
from mining.corpus import CorpusSource, NliSource, PairSource, load_corpus
from mining.embeddings import embed_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.shards import blocks, dask_map, encode_slice, local_map
from mining.testing import TOY_WORDS, HashEncoder, toy_sentences

WORDS = (*TOY_WORDS, "under", "over", "near", "far", "quick", "slow")
COLUMNS = ["anchor_id", "positive_id", "negative_id", "band", "negative_rank", "anchor_negative_sim",
           "anchor_positive_sim"]


def sentences(n: int, seed: int = 0) -> list[str]:
    return toy_sentences(n, seed, words=WORDS)


@pytest.fixture
def corpus(tmp_path):
    base = sentences(700)
    (tmp_path / "a.txt").write_text("\n".join(base[:300]) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(base[300:520]) + "\n", encoding="utf-8")
    pairs = [(base[i], base[i] + " too") for i in range(520, 560)]
    (tmp_path / "pairs.tsv").write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in pairs),
                                        encoding="utf-8")
    nli = [(base[i], base[i] + " indeed", base[i + 1]) for i in range(560, 600)]
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\n" + "".join(",".join(r) + "\n" for r in nli),
                                      encoding="utf-8")
    return load_corpus([CorpusSource(tmp_path / "a.txt", domain="a"), CorpusSource(tmp_path / "b.txt", domain="b")],
                       pairs=[PairSource(tmp_path / "pairs.tsv", domain="a")],
                       nli=[NliSource(tmp_path / "nli.csv", domain="b")])


def triplets(root):
    table = read_triplets(root).select(COLUMNS)
    return table.take(pc.sort_indices(table, [("band", "ascending"), ("anchor_id", "ascending"),
                                              ("negative_id", "ascending")])).to_pydict()


class CountingMap:
    """In-process map that pickles each function and item and their results, as a cluster would."""

    def __init__(self, fail_on: str | None = None, fail_after: int = 0):
        self.calls = []
        self.texts = 0
        self.fail_on, self.fail_after = fail_on, fail_after

    def __call__(self, fn, items):
        name = getattr(fn, "func", fn).__name__
        if name == self.fail_on and sum(n == name for n, _ in self.calls) >= self.fail_after:
            raise RuntimeError(f"worker lost during {name}")
        self.calls.append((name, len(items)))
        if name == "encode_slice":
            self.texts += sum(len(chunk) for chunk in items)
        remote = pickle.loads(pickle.dumps(fn))
        return [pickle.loads(pickle.dumps(remote(pickle.loads(pickle.dumps(item))))) for item in items]


def test_blocks_cover_the_range_at_aligned_boundaries():
    assert blocks(10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert blocks(100, 4, align=16) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert blocks(5, 4, align=16) == [(0, 5)]
    assert blocks(0, 3) == []


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf"])
def test_sharded_mining_gives_the_unsharded_triplets(corpus, tmp_path, monkeypatch, backend):
    # shard boundaries are multiples of the search step; a small step makes several shards of a small pool
    monkeypatch.setattr(index_mod, "SEARCH_STEP", 64)
    params = MiningParams(range_max=12, num_negatives=2, backend=backend, sampling="random", recall_sample=64,
                          nlist=8 if backend == "faiss-ivf" else None)
    one = mine(corpus, HashEncoder(16), tmp_path / "one", params=params, seed=3, show_progress=False)
    counting = CountingMap()
    many = mine(corpus, HashEncoder(16), tmp_path / "many", params=params, seed=3, show_progress=False,
                shards=3, map_shards=counting)
    # the encoding went through the map (3 chunks a call) and the search + bands in 3 blocks of anchors
    assert ("mine_shard", 3) in counting.calls and many.manifest.index["shards"] == 3
    assert any(name == "encode_slice" for name, _ in counting.calls)
    a, b = triplets(tmp_path / "one"), triplets(tmp_path / "many")
    assert len(a["band"]) > 500 and set(a["band"]) == {"random", "in_domain", "nli_contradiction",
                                                       "nearest_neighbour"}
    assert a == b
    assert one.bands == many.bands  # row counts, skip counts, difficulties
    ia, ib = one.manifest.index, many.manifest.index
    assert ia["backend"] == ib["backend"] == backend
    if backend == "faiss-ivf":  # the same sample, the same nprobe, the same measured recall
        assert ia["nprobe"] == ib["nprobe"] and ia["recall_at_k"] == pytest.approx(ib["recall_at_k"])
        assert not list((tmp_path / "many" / ".cache").glob("shard-index-*"))  # the saved index is removed


def test_shards_do_not_change_the_round_fingerprint(corpus, tmp_path):
    params = MiningParams(range_max=8)
    mine(corpus, HashEncoder(16), tmp_path / "out", params=params, show_progress=False, shards=2)
    again = mine(corpus, HashEncoder(16), tmp_path / "out", params=params, show_progress=False)
    assert again.cached


def test_interrupted_sharded_encoding_resumes_from_the_cache(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings_mod, "default_chunk_size", lambda: 100)  # several resume points
    params = MiningParams(range_max=8, backend="faiss-flat")
    one = mine(corpus, HashEncoder(16), tmp_path / "one", params=params, show_progress=False)
    broken = CountingMap(fail_on="encode_slice", fail_after=1)  # the second call of 2 chunks fails
    with pytest.raises(RuntimeError, match="worker lost"):
        mine(corpus, HashEncoder(16), tmp_path / "many", params=params, show_progress=False, shards=2,
             map_shards=broken)
    assert not round_dir(tmp_path / "many", 0).exists()  # nothing written for the round
    resumed = CountingMap()
    mine(corpus, HashEncoder(16), tmp_path / "many", params=params, show_progress=False, shards=2,
         map_shards=resumed)
    assert resumed.texts == len(corpus) - 200  # only what the first run had not finished
    assert triplets(tmp_path / "one") == triplets(tmp_path / "many") and one.bands["nearest_neighbour"]["rows"] > 0


def test_a_sharded_encoding_writes_the_cache_an_unsharded_one_writes_and_its_hits_are_verified(corpus, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(embeddings_mod, "default_chunk_size", lambda: 100)
    encode = functools.partial(local_map, functools.partial(encode_slice, HashEncoder(16)))
    sharded = embed_corpus(corpus, HashEncoder(16), tmp_path / "many", show_progress=False, map_chunks=encode,
                           chunks_per_call=2)
    single = embed_corpus(corpus, HashEncoder(16), tmp_path / "one", show_progress=False)
    assert sharded.path.relative_to(tmp_path / "many") == single.path.relative_to(tmp_path / "one")
    meta = [{k: v for k, v in json.loads((e.path.parent / "meta.json").read_text()).items() if k != "encode_seconds"}
            for e in (sharded, single)]
    assert meta[0] == meta[1] and meta[0]["sha256"] == sha256_file(sharded.path)  # version 2: the checksum too
    enc = HashEncoder(16)
    assert embed_corpus(corpus, enc, tmp_path / "many", show_progress=False).cached and enc.calls == 0
    tampered = np.load(sharded.path, mmap_mode="r+")
    tampered[:3] = -tampered[:3]
    tampered.flush()
    del tampered
    assert not embed_corpus(corpus, enc, tmp_path / "many", show_progress=False).cached and enc.calls > 0


def test_a_failed_shard_leaves_no_round_and_no_saved_index(corpus, tmp_path):
    params = MiningParams(range_max=8, backend="faiss-ivf", nlist=8, recall_sample=32)
    with pytest.raises(RuntimeError, match="worker lost"):
        mine(corpus, HashEncoder(16), tmp_path / "out", params=params, show_progress=False, shards=2,
             map_shards=CountingMap(fail_on="mine_shard"))
    assert not round_dir(tmp_path / "out", 0).exists()
    assert not list((tmp_path / "out" / ".cache").glob("shard-index-*"))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")


def worker_thread_variables(_: int) -> dict[str, str | None]:
    keys = (*THREAD_VARIABLES[:3], "MALLOC_TRIM_THRESHOLD_")
    return {key: os.environ[key] for key in keys if key in os.environ}


def test_sharded_on_a_two_worker_dask_local_cluster(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "SEARCH_STEP", 64)  # the driver's block size; exact search needs no alignment
    params = MiningParams(range_max=12, num_negatives=2, backend="faiss-flat")
    mine(corpus, HashEncoder(16), tmp_path / "one", params=params, seed=5, show_progress=False)
    threads = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    with dask_map(2) as on_cluster:
        # the nannies run in this process and set their workers' OMP_NUM_THREADS=1 etc. in os.environ: undone,
        # so this process's torch (torch-ivf searches here) does not start its thread pool on one thread
        assert {key: os.environ.get(key) for key in THREAD_VARIABLES} == threads
        workers_get = {key: threads[key] or "1" for key in THREAD_VARIABLES[:3]}  # Dask's, unless this process set one
        if os.environ.get("MALLOC_TRIM_THRESHOLD_"):  # not Dask's 65536 (slower encoding), only this process's own
            workers_get["MALLOC_TRIM_THRESHOLD_"] = os.environ["MALLOC_TRIM_THRESHOLD_"]
        assert on_cluster(worker_thread_variables, [0, 1]) == [workers_get] * 2
        many = mine(corpus, HashEncoder(16), tmp_path / "many", params=params, seed=5, show_progress=False,
                    shards=2, map_shards=on_cluster)
    assert {key: os.environ.get(key) for key in THREAD_VARIABLES} == threads
    assert many.manifest.index["shards"] == 2
    assert triplets(tmp_path / "one") == triplets(tmp_path / "many")


def test_sharded_on_a_local_two_cpu_ray_gives_the_triplets_of_one_process(corpus, tmp_path, monkeypatch):
    """`mine --shards 2 --engine ray`'s map: each shard a task on a real local Ray of 2 worker processes."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray

    from mining.shards import ray_map

    monkeypatch.setattr(index_mod, "SEARCH_STEP", 64)
    params = MiningParams(range_max=12, num_negatives=2, backend="faiss-flat")
    mine(corpus, HashEncoder(16), tmp_path / "one", params=params, seed=5, show_progress=False)
    threads = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    with ray_map(2) as on_ray:
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
        many = mine(corpus, HashEncoder(16), tmp_path / "many", params=params, seed=5, show_progress=False,
                    shards=2, map_shards=on_ray)
    assert not ray.is_initialized()  # the local Ray it started is shut down on exit
    assert {key: os.environ.get(key) for key in THREAD_VARIABLES} == threads
    assert many.manifest.index["shards"] == 2
    assert triplets(tmp_path / "one") == triplets(tmp_path / "many")


def tcp_listeners() -> list[tuple[str, set[int], str]]:
    """Every listening TCP socket `ss -ltnp` shows: ("address:port", the ids of the processes holding it, the
    process column). Another user's processes show no id."""
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    return [(line.split()[3], {int(pid) for pid in re.findall(r"pid=(\d+)", line)}, " ".join(line.split()[5:]))
            for line in out.splitlines() if line.startswith("LISTEN")]


def loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1); not *, 0.0.0.0 or ::."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:  # `*`
        return False
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


class ListenerProbe:
    """Made before an engine starts, then `around` its `MapShards`: after each of the mine's calls (every process
    of the engine up), what this process and the processes it started since listen on (`ss -ltnp`), but had not
    before."""

    def __init__(self):
        self.me = psutil.Process()
        self.before = {child.pid for child in self.me.children(recursive=True)}
        self.already = {local for local, pids, _ in tcp_listeners() if self.me.pid in pids}
        self.started: dict[int, psutil.Process] = {}
        self.listeners: dict[str, str] = {}  # "address:port" -> who

    def around(self, map_shards):
        def run(fn, items):
            result = map_shards(fn, items)
            self.look()
            return result

        return run

    def look(self) -> None:
        self.started |= {c.pid: c for c in self.me.children(recursive=True) if c.pid not in self.before}
        ours = {self.me.pid, *self.started}
        self.listeners |= {local: who for local, pids, who in tcp_listeners()
                           if pids & ours and local not in self.already}

    def exposed(self) -> list[str]:
        return sorted(f"{local} {who}" for local, who in self.listeners.items()
                      if not loopback(local.rsplit(":", 1)[0].strip("[]")))

    def still_running(self) -> list[str]:
        """The processes started since the probe was made that have not exited (bar multiprocessing's resource
        tracker: Dask's nannies start their workers with `spawn`, whose tracker lives as long as this process)."""
        running = []
        for process in self.started.values():
            with contextlib.suppress(psutil.Error):  # exited meanwhile
                command = " ".join(process.cmdline())
                if (process.is_running() and process.status() != psutil.STATUS_ZOMBIE
                        and "multiprocessing.resource_tracker" not in command):
                    running.append(f"{process.pid} {command[:200]}")
        return running


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_a_local_engine_listens_on_loopback_only_and_leaves_no_process(engine, corpus, tmp_path, monkeypatch):
    """Issue 24: every TCP port the local Dask or Ray of `mine --shards 2 --engine E` opens (its scheduler, GCS,
    raylet, workers, agents, autoscaler, this process's own servers) is on 127.0.0.1 or ::1, looked at with
    `ss -ltnp` while the shards run; when the mine ends every process it started has exited, and Ray's
    session folder (a temporary one of its own, not /tmp/ray) is gone."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    if engine == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed")
    import mining.shards

    monkeypatch.setattr(index_mod, "SEARCH_STEP", 64)
    params = MiningParams(range_max=12, num_negatives=2, backend="faiss-flat")
    probe = ListenerProbe()
    with mining.shards.engine_map(engine, 2) as on_engine:
        if engine == "ray":
            import ray

            session = Path(ray._private.worker._global_node.get_session_dir_path())
        many = mine(corpus, HashEncoder(16), tmp_path / "many", params=params, seed=5, show_progress=False,
                    shards=2, map_shards=probe.around(on_engine))
    assert many.manifest.index["shards"] == 2
    names = {re.search(r'\(\("([^"]+)"', who).group(1) for who in probe.listeners.values()}
    assert names >= ({"gcs_server", "raylet"} if engine == "ray" else {"python"})  # the probe saw the engine
    assert probe.exposed() == []
    assert probe.still_running() == []
    if engine == "ray":
        assert session.name.startswith("session_") and not session.exists() and not session.parent.exists()


def test_a_local_ray_found_listening_beyond_loopback_is_shut_down_with_one_line(tmp_path, monkeypatch):
    """Should a Ray version bind a listener elsewhere, the local Ray is stopped before any shard runs, with a
    one-line error naming the listener, and leaves neither processes nor its folder behind."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray

    import mining.shards
    from dataio.errors import UserError

    real_listeners, real_family, seen = mining.shards._listeners, mining.shards._family, []

    def listeners(processes):  # as if the GCS listened on every interface
        return real_listeners(processes) | ({("0.0.0.0", 6379, "gcs_server")} if len(processes) > 1 else set())

    def family(processes):
        found = real_family(processes)
        for process in found:
            with contextlib.suppress(psutil.Error):
                seen.append((process, process.name()))
        return found

    monkeypatch.setattr(mining.shards, "_listeners", listeners)
    monkeypatch.setattr(mining.shards, "_family", family)
    base = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp" if os.path.isdir("/tmp") else None))  # short: sockets
    monkeypatch.setenv("RAY_TMPDIR", str(base))
    try:
        with pytest.raises(UserError, match=r"^the local Ray \(ray [^)]+\) listens beyond 127\.0\.0\.1, on "
                                            r"0\.0\.0\.0:6379 \(gcs_server\), so it was shut down before mining: "
                                            r"use --engine dask, or a Ray cluster's address$"):
            with mining.shards.ray_map(2):
                pytest.fail("the map was opened")
        assert not ray.is_initialized()
        assert {name for _, name in seen} >= {"gcs_server", "raylet"}
        assert [name for p, name in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
        assert list(base.iterdir()) == []  # its temporary folder is removed
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(("engine", "address", "message"), [
    ("spark", None, "unknown engine 'spark'"),
    ("dask", "ray://10.0.0.5:10001", "is a Ray address, but the engine is dask: set the engine to ray"),
    ("ray", "tcp://10.0.0.5:8786", "is a Dask address, but the engine is ray: set the engine to dask"),
])
def test_an_engine_and_an_address_that_do_not_match_are_refused_before_connecting(engine, address, message):
    from mining.shards import engine_map

    with pytest.raises(ValueError, match=message):
        engine_map(engine, 2, address)


def test_one_shard_with_a_cluster_or_another_engine_is_refused():
    from mining.shards import EncoderRef, sharded_mining

    ref = EncoderRef.of(HashEncoder, 16)
    with sharded_mining(1, ref) as keywords:
        assert keywords == {}
    with pytest.raises(ValueError, match="a cluster address needs 2 or more shards"):
        with sharded_mining(1, ref, "tcp://127.0.0.1:8786"):
            pass
    with pytest.raises(ValueError, match="the ray engine needs 2 or more shards"):
        with sharded_mining(1, ref, engine="ray"):
            pass
