"""Mining throughput against sentence-transformers, same machine, same data, same run.

(a) encoding: sentences/s of `SimCSEEncoder.encode` (what mining uses) vs `SentenceTransformer.encode`,
    same model (all-MiniLM-L6-v2, offline), same batch size, max length set on both.
(b) end to end: `mining.pipeline.mine` (encode + index + every band + Parquet) vs
    `sentence_transformers.util.mine_hard_negatives` doing the same job (every anchor row of the inputs,
    the same search pool, range_min/range_max/num_negatives/relative_margin alike; unsupervised anchors
    are given to sentence-transformers as (s, s) pairs, whose relative margin on a positive score of 1.0 is
    our absolute max_score 0.95).
Prints a table, then `encode_ratio: X` and `mine_ratio: Y` (ours over sentence-transformers' throughput).

`--backends torch,onnx,openvino` (CPU): sentence-transformers on ONNX Runtime and OpenVINO too, fp32
(bench/cpu_anchors.py; `onnx-O2`, and the lossy `openvino-default` and `onnx-qint8`, on request), timed in the
same run, interleaved with ours and the torch path, each checked against the torch fp32 embeddings (max
abs(1 - cos) <= 1e-4 and the same top-k windows); our encoder's forward on each runtime is timed beside them.
Adds a table and `encode_ratio_strongest` / `mine_ratio_strongest`: ours against the fastest lossless anchor.

`--growth`: time and peak RSS of mining 10k / 100k / 1M sentences, each in a fresh process. Sizes up to
`--growth-full-max` run end to end (encode included); larger ones mine on precomputed embeddings (index +
bands + Parquet), and their encode time is extrapolated from the measured encode throughput. `--growth-shards
1,2` runs each size in one process and on a local Dask cluster of 2 single-threaded workers (`mine --shards 2`);
`--growth-engine ray` puts the shards on a local Ray instead (`mine --shards 2 --engine ray`).

    .venv/bin/python -m bench.mine_throughput                      # CPU comparison, a few minutes
    .venv/bin/python -m bench.mine_throughput --device cpu --repeats 3 --backends torch,onnx,onnx-O2,openvino
    .venv/bin/python -m bench.mine_throughput --n-nli 7358 --n-corpus 48000 --batch-size 1024   # GPU sizes
    .venv/bin/python -m bench.mine_throughput --growth             # 10k, 100k (end to end), 1M (precomputed)
    .venv/bin/python -m bench.mine_throughput --growth --growth-sizes 100000 --growth-shards 1,2
    .venv/bin/python -m bench.mine_throughput --growth --growth-sizes 100000 --growth-shards 2 --growth-engine ray
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from bench import child_options, machine, module_command
from dataio.process_memory import peak_rss_mb


def default_data_dir() -> Path:
    from dataio.tables import data_dir

    return data_dir()


# ------------------------------------------------------------------------------------------------ data
def shared_sentences(data: Path) -> dict[str, list]:
    wiki = [s.strip() for s in (data / "wiki" / "sentences.txt").read_text(encoding="utf-8").splitlines()]
    tweets = [s.strip() for s in (data / "twitter" / "unlabeled.txt").read_text(encoding="utf-8").splitlines()]
    with open(data / "nli" / "triplets.csv", encoding="utf-8", newline="") as fh:
        nli = [tuple(r) for r in csv.reader(fh)][1:]
    return {"wiki": [s for s in wiki if s], "twitter": [s for s in tweets if s], "nli": nli}


def write_inputs(folder: Path, data: dict[str, list], n_nli: int, n_corpus: int) -> dict[str, Path]:
    """NLI rows + a corpus of wiki and Twitter sentences (half each), as a team would hand them over."""
    half = n_corpus // 2
    paths = {"wiki": folder / "wiki.txt", "twitter": folder / "twitter.txt", "nli": folder / "nli.csv"}
    paths["wiki"].write_text("\n".join(data["wiki"][:half]) + "\n", encoding="utf-8")
    paths["twitter"].write_text("\n".join(data["twitter"][:n_corpus - half]) + "\n", encoding="utf-8")
    with open(paths["nli"], "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sent0", "sent1", "hard_neg"])
        w.writerows(data["nli"][:n_nli])
    return paths


def load_inputs(paths: dict[str, Path]):
    from mining.corpus import CorpusSource, NliSource, load_corpus

    return load_corpus([CorpusSource(paths["wiki"], domain="wiki"), CorpusSource(paths["twitter"], domain="twitter")],
                       nli=[NliSource(paths["nli"], domain="nli")])


def load_models(max_length: int, device: str | None):
    from sentence_transformers import SentenceTransformer

    from mining.encoders import load_encoder, offline_minilm_path

    path = offline_minilm_path()
    st = SentenceTransformer(path, device=device)
    st.max_seq_length = max_length
    ours = load_encoder(path, max_length=max_length, device=device)
    return st, ours


# ------------------------------------------------------------------------------------------- compare
def time_encode(encoders: dict[str, Callable[[list[str]], np.ndarray]], texts: list[str], batch_size: int,
                repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best-of-`repeats` sentences/s of each encoder, all interleaved (the order reversed every other round)
    so load changes hit them alike; and each one's embeddings of `texts` from its last run."""
    warm = texts[: min(len(texts), 2 * batch_size)]
    for fn in encoders.values():
        fn(warm)
    best = {name: float("inf") for name in encoders}
    out: dict[str, np.ndarray] = {}
    names = list(encoders)
    for i in range(max(1, repeats)):
        for name in (names if i % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            out[name] = np.asarray(encoders[name](texts), dtype=np.float32)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: len(texts) / s for name, s in best.items()}, out


def encode_fns(st_models: dict[str, Any], ours_models: dict[str, Any], batch_size: int) -> dict[str, Callable]:
    from mining.embeddings import encode_texts

    fns: dict[str, Callable] = {}
    for name, enc in ours_models.items():
        fns[name] = lambda texts, enc=enc: encode_texts(enc, texts, batch_size)
    for name, st in st_models.items():
        fns[name] = lambda texts, st=st: st.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                                   convert_to_numpy=True)
    return fns


def time_index(cache: Path, corpus, k: int) -> dict[str, float]:
    """Exact kNN of every anchor over the pool: our blocked torch search vs faiss-cpu IndexFlatIP."""
    from mining.index import knn

    folder = next(cache.glob("emb-*"))
    matrix = np.load(folder / "embeddings.npy", mmap_mode="r")
    queries = np.unique(corpus.anchor)
    out = {}
    # twice each, interleaved; best kept. Without FAISS (the lent GPU host has none) only torch is timed.
    backends = ("torch", "faiss-flat") if importlib.util.find_spec("faiss") else ("torch",)
    for backend in backends * 2:
        t = time.perf_counter()
        knn(matrix, queries, k, backend)
        out[backend] = min(out.get(backend, float("inf")), time.perf_counter() - t)
    return out


def time_mine(st_models: dict[str, Any], ours, corpus, args, work: Path) -> dict:
    """Our mining against `mine_hard_negatives` on each sentence-transformers anchor (key "st": its torch path),
    interleaved, the order reversed every other round (ABBA for two), best time of each kept."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from mining.params import MiningParams
    from mining.pipeline import mine

    # unsupervised_range_min off: sentence-transformers has no such window, and the triplets are compared
    params = MiningParams(range_min=args.range_min, unsupervised_range_min=None, range_max=args.range_max,
                          num_negatives=args.num_negatives,
                          relative_margin=args.relative_margin, max_score=1 - args.relative_margin,
                          batch_size=args.batch_size, backend=args.backend)
    texts = corpus.texts
    ds = Dataset.from_dict({"anchor": [texts[i] for i in corpus.anchor],
                            "positive": [texts[i] for i in corpus.positive]})

    def run_ours(i: int):
        t = time.perf_counter()  # a fresh folder and cache each time: nothing is reused between runs
        out = mine(corpus, ours, work / f"ours{i}", params=params, cache_dir=work / f"cache{i}", show_progress=False)
        return out, time.perf_counter() - t

    def run_st(model):
        t = time.perf_counter()
        out = mine_hard_negatives(ds, model, corpus=list(texts), range_min=args.range_min, range_max=args.range_max,
                                  num_negatives=args.num_negatives, relative_margin=args.relative_margin,
                                  sampling_strategy="top", batch_size=args.batch_size, verbose=False,
                                  output_format="triplet")
        return out, time.perf_counter() - t

    names = ["ours", *st_models]
    times: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, Any] = {}
    repeats = max(1, args.repeats)
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            outs[name], secs = run_ours(i) if name == "ours" else run_st(st_models[name])
            times[name].append(secs)
    res, st_out = outs["ours"], outs["st"]
    ours_s, st_s = min(times["ours"]), min(times["st"])
    last = repeats - 1
    index_cmp = time_index(work / f"cache{last}", corpus, args.range_max + 8)
    from dataio.triplets import read_triplets

    ours_nn = read_triplets(work / f"ours{last}", bands=["nearest_neighbour"]).to_pydict()
    ours_pairs = set(zip(ours_nn["anchor"], ours_nn["positive"], ours_nn["negative"]))

    def triplets(out) -> set:
        return set(zip(out["anchor"], out["positive"], out["negative"]))

    st_pairs = triplets(st_out)
    agreement = len(ours_pairs & st_pairs) / max(1, len(st_pairs))
    anchors = {}
    for name in st_models:
        got = triplets(outs[name])
        anchors[name] = {"s": min(times[name]), "runs_s": times[name], "rows": len(outs[name]),
                         "same_triplets_as_torch": len(got & st_pairs) / max(1, len(got | st_pairs))}
    return {"agreement": agreement, "index_compare": index_cmp, "ours_s": ours_s, "st_s": st_s,
            "ours_runs_s": times["ours"], "st_runs_s": times["st"], "ours_timings": res.timings,
            "ours_rows": res.bands, "st_rows": len(st_out), "index": res.manifest.index or {}, "pool": len(corpus),
            "anchor_rows": corpus.n_anchor_rows, "anchors": anchors}


def compare(args) -> None:
    import torch

    from bench.cpu_anchors import Anchor, agreement, load_anchor, ours_on_runtime, parse_backends, runtime_versions
    from mining.encoders import offline_minilm_path

    backends = parse_backends(args.backends)
    data = shared_sentences(args.data_dir)
    st, ours = load_models(args.max_length, args.device)
    if len(backends) > 1 and ours.device.type != "cpu":
        raise SystemExit(f"--backends {','.join(backends[1:])} are CPU runtimes; run them with --device cpu")
    where = machine.describe(torch=True)
    print(f"machine: {machine.text(where)}")
    if len(backends) > 1:
        print(f"runtimes: {runtime_versions()}")
    enc_texts = (data["wiki"] + data["twitter"])[: args.n_encode]
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="mine-bench-") as tmp:
        work = Path(tmp)
        anchors = {"torch": Anchor("torch", st, "SentenceTransformer(path)", "fp32")}
        for name in backends[1:]:
            anchors[name] = load_anchor(name, offline_minilm_path(), work / "anchors", args.max_length, threads)
        st_models = {_st_key(name): a.model for name, a in anchors.items()}
        ours_models = {"ours": ours}
        for runtime in ("onnx", "openvino"):
            if runtime in backends:
                try:  # openvino: the product's setting (simcse.runtimes); onnx: a bench hook (bench/cpu_anchors.py)
                    ours_models[f"ours+{runtime}"] = copy.copy(ours).use_encode_runtime(runtime) \
                        if runtime == "openvino" else ours_on_runtime(ours, runtime, work / "ours-runtime", threads)
                    ours_models[f"ours+{runtime}"].encode(enc_texts[:8])  # converts here, outside the timing
                except Exception as exc:  # an extra row: say why it is missing, measure the anchors all the same
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    print(f"ours+{runtime}: not measured, the export failed here ({type(exc).__name__}: {first})")
        sps, embs = time_encode(encode_fns(st_models, ours_models, args.batch_size), enc_texts, args.batch_size,
                                args.repeats)
        ours_sps, st_sps = sps["ours"], sps["st"]
        diff = float(np.abs(embs["st"] - embs["ours"]).max())
        checks = {name: agreement(embs["st"], emb, args.check_queries, args.range_max)
                  for name, emb in embs.items() if name != "st"}
        corpus = load_inputs(write_inputs(work, data, args.n_nli, args.n_corpus))
        m = time_mine(st_models, ours, corpus, args, work)
    t = m["ours_timings"]
    rows = {b: s["rows"] for b, s in m["ours_rows"].items()}
    print(f"\nencode: {len(enc_texts)} sentences, batch {args.batch_size}, max length {args.max_length} "
          f"(max |difference| of the embeddings {diff:.1e})")
    print(f"mine: pool {m['pool']} sentences, {m['anchor_rows']} anchor rows; range [{args.range_min}, "
          f"{args.range_max}), {args.num_negatives} negative(s), relative_margin {args.relative_margin}; "
          f"index {m['index'].get('backend')}"
          + (f" (recall@k {m['index']['recall_at_k']:.3f})" if m["index"].get("recall_at_k") is not None else ""))
    print("\n| measure | ours | sentence-transformers | ratio |\n|---|---:|---:|---:|")
    print(f"| encode, sentences/s | {ours_sps:,.0f} | {st_sps:,.0f} | {ours_sps / st_sps:.2f} |")
    print(f"| mine end to end, s | {m['ours_s']:.1f} | {m['st_s']:.1f} | {m['st_s'] / m['ours_s']:.2f} |")
    print(f"| - its runs (ABBA; best kept), s | {' / '.join(f'{x:.1f}' for x in m['ours_runs_s'])} | "
          f"{' / '.join(f'{x:.1f}' for x in m['st_runs_s'])} | |")
    print(f"| - encode / index / bands / Parquet (last run), s | {t['encode']:.1f} / {t['index']:.1f} / "
          f"{t['bands']:.1f} / {t['write']:.1f} | - | |")
    ic = m["index_compare"]
    if "faiss-flat" in ic:
        print(f"| exact kNN of the anchors, s: torch (ours) vs faiss-cpu IndexFlatIP | {ic['torch']:.2f} | "
              f"{ic['faiss-flat']:.2f} (faiss) | {ic['faiss-flat'] / ic['torch']:.2f} |")
    else:
        print(f"| exact kNN of the anchors, s: torch (ours); FAISS not installed | {ic['torch']:.2f} | - | |")
    print(f"| triplet rows | {sum(rows.values())} ({', '.join(f'{b} {n}' for b, n in rows.items())}) | "
          f"{m['st_rows']} (nearest neighbours only) | |")
    print(f"\nnearest-neighbour triplets identical to sentence-transformers': {100 * m['agreement']:.1f}% "
          f"(ours ranks the window before the margin filter, sentence-transformers after it)")
    strongest = print_anchors(anchors, sps, checks, m, ours_sps, args) if len(backends) > 1 else None
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "encode": {"ours": ours_sps, "st": st_sps},
                                               "mine": m, "encode_all": sps, "equality": checks,
                                               "anchors": {n: {"built_by": a.built_by, "precision": a.precision,
                                                               "build_s": a.build_s, "lossy": a.lossy}
                                                           for n, a in anchors.items()},
                                               "strongest": strongest}, indent=2, default=str))
    print(f"encode_ratio: {ours_sps / st_sps:.2f}")
    print(f"mine_ratio: {m['st_s'] / m['ours_s']:.2f}")
    if strongest:
        print(f"strongest_encode_anchor: {strongest['encode']}")
        print(f"encode_ratio_strongest: {strongest['encode_ratio']:.2f}")
        print(f"strongest_mine_anchor: {strongest['mine']}")
        print(f"mine_ratio_strongest: {strongest['mine_ratio']:.2f}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _st_key(anchor: str) -> str:
    return "st" if anchor == "torch" else f"st-{anchor}"


def print_anchors(anchors: dict, sps: dict[str, float], checks: dict[str, dict], m: dict, ours_sps: float,
                  args) -> dict:
    """The anchor table, and the strongest lossless anchor for encoding and for mining (fastest of those whose
    embeddings equal the torch path's: max abs(1 - cos) <= 1e-4 and the same kNN windows)."""
    from bench.cpu_anchors import MAX_COS_DIFF, is_equal

    k = next(iter(checks.values()))["k"]
    q = next(iter(checks.values()))["queries"]
    print(f"\nCPU anchors, same run ({args.repeats} interleaved repeats, best kept; runtimes on "
          f"{_threads()} thread(s)). Equality against sentence-transformers' torch fp32 embeddings of the "
          f"{args.n_encode} encoded sentences: max abs(1 - cos), and the top-{k} neighbour ids of {q} queries "
          f"(same set / same order). Lossless: max abs(1 - cos) <= {MAX_COS_DIFF:g} and every window the same.")
    print("\n| encoder | built by | precision | export s | encode, sentences/s | ours / it | max abs(1 - cos) | "
          "kNN windows same (set / order) | mine end to end, s | it / ours | NN triplets same as torch's |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    mine_anchors = m["anchors"]
    for name, a in anchors.items():
        key = _st_key(name)
        c = checks.get(key)
        cos, win = ("reference", "reference") if c is None else \
            (f"{c['max_cos_diff']:.1e}", f"{100 * c['windows_same']:.1f}% / {100 * c['windows_same_order']:.1f}%")
        ma = mine_anchors[key]
        label = f"sentence-transformers, {name}" + (" (**lossy**)" if a.lossy else "")
        print(f"| {label} | {a.built_by} | {a.precision} | {a.build_s:.1f} | {sps[key]:,.0f} | "
              f"{ours_sps / sps[key]:.2f} | {cos} | {win} | {ma['s']:.1f} | {ma['s'] / m['ours_s']:.2f} | "
              f"{100 * ma['same_triplets_as_torch']:.1f}% |")
    for key in (k for k in sps if k.startswith("ours")):
        c = checks[key]
        what = {"ours": "SimCSEEncoder.encode", "ours+openvino": "SimCSEEncoder.encode, encode_runtime openvino",
                "ours+onnx": "SimCSEEncoder.encode, its forward on ONNX Runtime (bench hook)"}[key]
        mine = f"{m['ours_s']:.1f}" if key == "ours" else "-"
        print(f"| {key} | {what} | fp32 | - | {sps[key]:,.0f} | {ours_sps / sps[key]:.2f} | "
              f"{c['max_cos_diff']:.1e} | {100 * c['windows_same']:.1f}% / {100 * c['windows_same_order']:.1f}% | "
              f"{mine} | - | - |")
    lossless = [n for n, a in anchors.items() if not a.lossy and (n == "torch" or is_equal(checks[_st_key(n)]))]
    failed = [n for n, a in anchors.items() if not a.lossy and n not in lossless]
    if failed:
        print(f"\nnot lossless, so not an anchor: {', '.join(failed)}")
    enc = max(lossless, key=lambda n: sps[_st_key(n)])
    mine = min(lossless, key=lambda n: mine_anchors[_st_key(n)]["s"])
    return {"encode": enc, "encode_ratio": ours_sps / sps[_st_key(enc)], "mine": mine,
            "mine_ratio": mine_anchors[_st_key(mine)]["s"] / m["ours_s"], "lossless": lossless}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------- growth
def base_sentences(data: dict[str, list], limit: int | None = None) -> tuple[list[str], list[str]]:
    """Distinct shared sentences (wiki, Twitter, NLI sides) in a fixed order, with their source as domain."""
    base, domains, seen = [], [], set()
    for dom, items in (("wiki", data["wiki"]), ("twitter", data["twitter"]),
                       ("nli", [s.strip() for row in data["nli"] for s in row])):
        for s in items:
            if s not in seen:
                seen.add(s)
                base.append(s)
                domains.append(dom)
    return base[:limit], domains[:limit]


def growth_corpus(data: dict[str, list], size: int,
                  base_limit: int | None = None) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """`size` distinct sentences: the first `base_limit` shared ones, then recombinations "a b" of two of them.

    Returns texts, domains, and for each recombined sentence the indices of its two parts in the base.
    """
    base, domains = base_sentences(data, base_limit)
    seen = set(base)
    texts, doms = base[:size], domains[:size]
    parts: list[tuple[int, int]] = []
    b = len(base)
    i = 0
    while len(texts) < size:
        if i >= b * b:
            raise SystemExit(f"cannot make {size} distinct sentences from {b} base sentences")
        x, r = i % b, i // b  # round r pairs x with a scrambled partner; pairs never repeat across rounds
        y = (x * 7919 + 1 + r) % b
        i += 1
        t = base[x] + " " + base[y]
        if x == y or t in seen:
            continue
        seen.add(t)
        texts.append(t)
        doms.append("mixed")
        parts.append((x, y))
    return texts, doms, parts


def growth_child(args) -> None:
    """One growth measurement in this (fresh) process; prints one JSON line."""
    from mining.corpus import CorpusSource, load_corpus
    from mining.embeddings import Embeddings
    from mining.encoders import load_encoder, offline_minilm_path
    from mining.params import MiningParams
    from mining.pipeline import mine
    from mining.shards import EncoderRef, sharded_mining

    work = Path(args.work)
    size, mode = args.child_size, args.child_mode
    t0 = time.perf_counter()
    corpus = load_corpus([CorpusSource(work / f"corpus-{size}.tsv")])
    load_s = time.perf_counter() - t0
    params = MiningParams(range_max=args.range_max, num_negatives=args.num_negatives,
                          relative_margin=args.relative_margin, max_score=1 - args.relative_margin,
                          batch_size=args.batch_size, backend=args.backend)
    shards = args.child_shards
    out = work / f"out-{size}-shards{shards}"
    shutil.rmtree(out, ignore_errors=True)  # a complete round there would be reused, and nothing measured
    cache = work / f"cache-{size}-shards{shards}"
    shutil.rmtree(cache, ignore_errors=True)  # likewise a cached encode
    ref = EncoderRef.of(load_encoder, offline_minilm_path(), max_length=args.max_length, device=args.device)
    with sharded_mining(shards, ref, None, args.child_engine if shards > 1 else "dask") as sharding:
        if mode == "full":
            ours = load_encoder(offline_minilm_path(), max_length=args.max_length, device=args.device)
            res = mine(corpus, ours, out, params=params, cache_dir=cache, show_progress=False, **sharding)
        else:
            path = work / f"emb-{size}.npy"  # workers map the same file (Embeddings pickles a memmap as its path)
            emb = Embeddings(np.load(path, mmap_mode="r"), list(corpus.ids), "precomputed-" + str(size),
                             corpus.pool_fingerprint(), path=path)
            res = mine(corpus, None, out, params=params, embeddings=emb, show_progress=False, **sharding)
    peak_mb = peak_rss_mb()
    # Dask's worker processes are this process's children, reaped when the cluster closes: the largest one. Ray's
    # are its raylet's children, which RUSAGE_CHILDREN does not see (it reports a Ray daemon): not measured.
    worker_mb = None if shards > 1 and args.child_engine == "ray" else \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if shards > 1 else 0.0
    print(json.dumps({"size": size, "mode": mode, "shards": shards,
                      "engine": args.child_engine if shards > 1 else "one process", "load_s": load_s,
                      "timings": res.timings,
                      "peak_rss_mb": peak_mb, "worker_peak_rss_mb": worker_mb, "index": res.manifest.index or {},
                      "rows": {b: s["rows"] for b, s in res.bands.items()}, "difficulty": res.difficulties()}))


def load_base_embeddings(folder: Path, data: dict[str, list]) -> np.ndarray:
    """Real embeddings of the base sentences from an embeddings cache folder (e.g. bench/mine_quality.py's),
    checked row by row against the base sentences' ids."""
    from mining.corpus import text_id

    ids = json.loads((folder / "ids.json").read_text())
    base, _ = base_sentences(data)
    n = min(len(ids), len(base))
    mismatch = next((i for i in range(n) if ids[i] != text_id(base[i])), None)
    if mismatch is not None:
        raise SystemExit(f"{folder}: row {mismatch} is not base sentence {mismatch}; use a cache of the same pool")
    return np.asarray(np.load(folder / "embeddings.npy", mmap_mode="r")[:n], dtype=np.float32)


def growth(args) -> None:
    from mining.corpus import CorpusSource, load_corpus
    from mining.embeddings import embed_corpus

    data = shared_sentences(args.data_dir)
    sizes = [int(s) for s in args.growth_sizes.split(",")]
    where = machine.describe(torch=True)
    print(f"machine: {machine.text(where)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="mine-growth-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    base_emb = None
    enc_sps = None
    if args.base_embeddings:
        base_emb = load_base_embeddings(Path(args.base_embeddings), data)
        args.growth_base = len(base_emb)
    for size in sizes:
        mode = "full" if size <= args.growth_full_max else "precomputed"
        texts, doms, parts = growth_corpus(data, size, None if mode == "full" else args.growth_base)
        with open(work / f"corpus-{size}.tsv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(["text", "domain"])
            w.writerows(zip(texts, doms))
        if mode == "precomputed":
            if base_emb is None:
                _, ours = load_models(args.max_length, args.device)
                base_texts, base_doms = base_sentences(data, args.growth_base)
                base_file = work / "base.tsv"
                with open(base_file, "w", encoding="utf-8", newline="") as fh:
                    w = csv.writer(fh, delimiter="\t")
                    w.writerow(["text", "domain"])
                    w.writerows(zip(base_texts, base_doms))
                base_corpus = load_corpus([CorpusSource(base_file)])
                t = time.perf_counter()
                base = embed_corpus(base_corpus, ours, work / "base-cache", batch_size=args.batch_size,
                                    show_progress=False)
                if not base.cached:
                    enc_sps = len(base_corpus) / (time.perf_counter() - t)
                base_emb = np.asarray(base.matrix, dtype=np.float32)
                del ours
            # the first rows are the base sentences themselves (real embeddings); the rest recombine two of
            # them, embedded as the normalised sum of their parts' real embeddings (a proxy, stated in the docs)
            emb = np.lib.format.open_memmap(work / f"emb-{size}.npy", mode="w+", dtype=np.float16,
                                            shape=(size, base_emb.shape[1]))
            direct = len(texts) - len(parts)
            emb[:direct] = base_emb[:direct]
            for s in range(0, len(parts), 200_000):
                chunk = np.asarray(parts[s:s + 200_000])
                v = base_emb[chunk[:, 0]] + base_emb[chunk[:, 1]]
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                emb[direct + s:direct + s + len(chunk)] = v
            emb.flush()
            del emb
        for shards in [int(s) for s in args.growth_shards.split(",")]:
            cmd = module_command("bench.mine_throughput", "--child-size", str(size), "--child-mode", mode,
                                 "--work", str(work.resolve()), "--child-shards", str(shards),
                                 "--child-engine", args.growth_engine, "--range-max", str(args.range_max),
                                 "--num-negatives", str(args.num_negatives),
                                 "--relative-margin", str(args.relative_margin), "--batch-size", str(args.batch_size),
                                 "--max-length", str(args.max_length), "--backend", args.backend)
            if args.device:
                cmd += ["--device", args.device]
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **child_options())
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"growth run for {size} ({shards} shards) failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if mode == "full" and shards == 1:
                enc_sps = enc_sps or size / max(r["timings"]["encode"], 1e-9)
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| sentences | shards | measured | encode s | index s | bands s | Parquet s | total s | peak RSS MB "
          "(driver + largest worker) | index (recall@k) |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        t = r["timings"]
        idx = r["index"]
        rec = f" ({idx['recall_at_k']:.3f})" if idx.get("recall_at_k") is not None else ""
        if r["mode"] == "full":
            enc, total, what = f"{t['encode']:.1f}", f"{t['total']:.1f}", "end to end"
        else:
            est = r["size"] / enc_sps if enc_sps else float("nan")
            enc = f"~{est:.0f} (extrapolated)"
            total = f"{t['total']:.1f} + ~{est:.0f}"
            what = "index+bands+Parquet on precomputed embeddings"
        shards = r.get("shards", 1)
        worker_mb = r["worker_peak_rss_mb"]
        workers = "" if shards == 1 else " + n/a" if worker_mb is None else f" + {worker_mb:.0f}"
        on = f" ({r.get('engine', 'dask')})" if shards > 1 else ""
        print(f"| {r['size']:,} | {shards}{on} | {what} | {enc} | {t['index']:.1f} | {t['bands']:.1f} | "
              f"{t['write']:.1f} | {total} | {r['peak_rss_mb']:.0f}{workers} | {idx.get('backend')}{rec} |")
    if enc_sps:
        print(f"\nencode throughput used for extrapolation: {enc_sps:,.0f} sentences/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "results": results, "encode_sps": enc_sps},
                                              indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--n-encode", type=int, default=2000, help="sentences in the encode comparison")
    p.add_argument("--n-nli", type=int, default=1000, help="NLI rows in the mining comparison")
    p.add_argument("--n-corpus", type=int, default=2000, help="corpus sentences (half wiki, half Twitter)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--range-min", type=int, default=0)
    p.add_argument("--range-max", type=int, default=50)
    p.add_argument("--num-negatives", type=int, default=1)
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument("--backend", default="auto", help="kNN index backend of our mining")
    p.add_argument("--backends", default="torch", help="sentence-transformers anchors, comma-separated: torch, "
                   "onnx, onnx-O2, openvino (fp32), openvino-default, onnx-qint8 (lossy); the non-torch ones are "
                   "CPU runtimes (bench/cpu_anchors.py); onnx/openvino also time our encoder on that runtime")
    p.add_argument("--check-queries", type=int, default=200,
                   help="queries whose top-k windows are compared against the torch embeddings")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--growth", action="store_true", help="time and peak RSS by corpus size")
    p.add_argument("--growth-sizes", default="10000,100000,1000000")
    p.add_argument("--growth-shards", default="1", help="shard counts per size: 1 is one process, N > 1 a local "
                   "Dask cluster of N single-threaded workers (mining.shards), e.g. 1,2")
    p.add_argument("--growth-engine", default="dask", choices=["dask", "ray"], help="what runs the shards of N > 1")
    p.add_argument("--growth-full-max", type=int, default=100_000, help="largest size encoded end to end")
    p.add_argument("--growth-base", type=int, default=10**9, help="real sentences encoded for precomputed sizes")
    p.add_argument("--work", default=None, help="working folder for --growth (default: a temporary one)")
    p.add_argument("--base-embeddings", default=None, help="embeddings cache folder of the base sentences "
                   "(e.g. from bench/mine_quality.py) for the precomputed sizes, instead of encoding them")
    p.add_argument("--child-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-shards", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--child-engine", default="dask", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data_dir = args.data_dir or default_data_dir()
    if args.child_size:
        growth_child(args)
    elif args.growth:
        growth(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
