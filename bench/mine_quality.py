"""Are the bands graded, and does the positive-aware filter keep labeled positives out of the negatives?

Data: `nli/triplets.csv` (premise, entailment, contradiction) with the wiki and Twitter sentences added to the
corpus; domain labels wiki / twitter / nli. Encoder: the offline all-MiniLM-L6-v2. Exact kNN.

1. Difficulty: mean anchor-negative cosine similarity per band (expected random < in_domain <
   nli_contradiction <~ nearest_neighbour), from one mining round with every band.
2. False negatives: mine every sentence as an unsupervised anchor (the NLI labels withheld, as when a team
   hands over raw text) and count nearest-neighbour negatives that are the anchor's labeled entailment
   partner (premise <-> entailment), with the filter (max_score, the unsupervised form of the positive-aware
   filter) and without it. With the labels given (supervised rows) the partner is the row's positive and the
   guard excludes it by id, so that share is 0 by construction; it is printed as a check.

    .venv/bin/python -m bench.mine_quality [--n-wiki N] [--n-twitter N] [--n-nli N] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from bench import machine
from dataio.tables import data_dir
from dataio.triplet_layout import BANDS
from mining.band_context import BandContext
from mining.bands import add_similarities, nearest_neighbour_band
from mining.corpus import CorpusSource, NliSource, load_corpus
from mining.embeddings import embed_corpus
from mining.encoders import load_encoder
from mining.index import knn
from mining.params import MiningParams
from mining.pipeline import mine


def write_inputs(data: Path, work: Path, n_wiki: int | None, n_twitter: int | None, n_nli: int | None) -> dict:
    wiki = (data / "wiki" / "sentences.txt").read_text(encoding="utf-8").splitlines()[:n_wiki]
    tweets = (data / "twitter" / "unlabeled.txt").read_text(encoding="utf-8").splitlines()[:n_twitter]
    with open(data / "nli" / "triplets.csv", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh)][1:][:n_nli]
    paths = {k: work / f"{k}.txt" for k in ("wiki", "twitter", "nli_sentences")}
    paths["wiki"].write_text("\n".join(wiki) + "\n", encoding="utf-8")
    paths["twitter"].write_text("\n".join(tweets) + "\n", encoding="utf-8")
    paths["nli"] = work / "nli.csv"
    with open(paths["nli"], "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["sent0", "sent1", "hard_neg"], *rows])
    # the same sentences, unlabeled, in the order the NLI loader adds them to the pool (so the pool, hence
    # the cached embeddings, are identical in both runs)
    flat = [c.strip() for r in rows for c in r if c.strip()]
    paths["nli_sentences"].write_text("\n".join(flat) + "\n", encoding="utf-8")
    return {"paths": paths, "rows": rows}


def partners(rows: list[list[str]]) -> dict[str, set[str]]:
    """Labeled entailment partners, both ways: premise -> entailments, entailment -> premises."""
    out: dict[str, set[str]] = {}
    for a, p, _n in rows:
        a, p = a.strip(), p.strip()
        out.setdefault(a, set()).add(p)
        out.setdefault(p, set()).add(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--n-wiki", type=int, default=None)
    ap.add_argument("--n-twitter", type=int, default=None)
    ap.add_argument("--n-nli", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--range-max", type=int, default=50)
    ap.add_argument("--backend", default="faiss-flat", help="exact by default; quality figures need exact kNN")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mine-quality"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = args.data_dir or data_dir()
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = write_inputs(data, args.work, args.n_wiki, args.n_twitter, args.n_nli)
    paths = inputs["paths"]
    encoder = load_encoder(None, max_length=args.max_length)
    print(f"machine: {machine.text()}")
    print(f"MiniLM max length {args.max_length}")

    supervised = load_corpus([CorpusSource(paths["wiki"], domain="wiki"),
                              CorpusSource(paths["twitter"], domain="twitter")],
                             nli=[NliSource(paths["nli"], domain="nli")])
    unsupervised = load_corpus([CorpusSource(paths["wiki"], domain="wiki"),
                                CorpusSource(paths["twitter"], domain="twitter"),
                                CorpusSource(paths["nli_sentences"], domain="nli")])
    assert supervised.pool_fingerprint() == unsupervised.pool_fingerprint(), "both runs must share one pool"
    t = time.perf_counter()
    emb = embed_corpus(supervised, encoder, args.work / "cache", batch_size=args.batch_size)
    print(f"pool {len(supervised)} sentences; {supervised.describe()['anchor_rows']} anchor rows; "
          f"encoded in {time.perf_counter() - t:.0f}s{' (cache)' if emb.cached else ''}")

    params = MiningParams(range_max=args.range_max, backend=args.backend, batch_size=args.batch_size)
    shutil.rmtree(args.work / "supervised", ignore_errors=True)  # fresh round: the band arrays are needed
    res = mine(supervised, encoder, args.work / "supervised", params=params, embeddings=emb, keep_results=True,
               show_progress=False)
    print("\n1. Difficulty by band (supervised NLI rows + unsupervised wiki/Twitter anchors, every band)\n")
    print("| band | rows | mean anchor-negative sim | std | skipped |\n|---|---:|---:|---:|---|")
    for band in BANDS:
        s = res.bands.get(band)
        if not s:
            continue
        sims = res.results[band].anchor_negative_sim
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "-"
        print(f"| {band} | {s['rows']} | {s['mean_anchor_negative_sim']:.4f} | {float(np.std(sims)):.4f} | {skipped} |")
    d = res.difficulties()
    order = sorted(d, key=d.get)
    print(f"\nmeasured order (easy to hard): {' < '.join(order)}")
    nli_rows = supervised.kind == 2
    nn = res.results["nearest_neighbour"]
    texts = supervised.texts
    labeled = partners(inputs["rows"])
    entailments: dict[str, set[str]] = {}
    for a, p, _n in inputs["rows"]:
        entailments.setdefault(a.strip(), set()).add(p.strip())
    own = sum(texts[n] in entailments.get(texts[a], ()) for a, n in zip(nn.anchor, nn.negative))
    reverse = sum(texts[n] in labeled.get(texts[a], ()) for a, n in zip(nn.anchor, nn.negative)) - own
    print(f"supervised: nearest-neighbour negatives that are the anchor's own labeled entailment: {own} (0 by "
          f"construction: the guard excludes every labeled positive of the anchor); that are a premise the anchor "
          f"is itself the entailment of: {reverse}; over {int(nli_rows.sum())} NLI rows")

    print("\n2. False negatives among nearest-neighbour negatives, labels withheld (every sentence an unsupervised "
          "anchor)\n")
    shares = {}
    # one kNN of every sentence, then the band under each filter setting (no Parquet needed here)
    variants = (("none", None, 0), ("max_score 0.95", 0.95, 0), ("max_score 0.90", 0.90, 0),
                ("max_score 0.95, range_min 3", 0.95, 3), ("max_score 0.95, range_min 10", 0.95, 10))
    base = MiningParams(range_max=args.range_max, backend=args.backend, batch_size=args.batch_size)
    ctx = BandContext(unsupervised, emb, base, seed=0, round_=0)
    t = time.perf_counter()
    result = knn(emb.matrix, ctx.uq, ctx.knn_depth(["nearest_neighbour"]), args.backend)
    ctx.set_knn(result, ctx.uq)
    print(f"(kNN of {len(ctx.uq)} anchors: {time.perf_counter() - t:.0f}s, {result.backend})\n")
    print("| filter | NN rows of NLI sentences | labeled entailment partner mined as negative | share | mean sim |"
          "\n|---|---:|---:|---:|---:|")
    shares = {}
    for name, max_score, range_min in variants:
        ctx.params = MiningParams(range_min=range_min, unsupervised_range_min=None, range_max=args.range_max,
                                  backend=args.backend, max_score=max_score, batch_size=args.batch_size)
        b = add_similarities(nearest_neighbour_band(ctx), emb)
        considered = [(a, n) for a, n in zip(b.anchor, b.negative) if texts[a] in labeled]
        hits = sum(texts[n] in labeled[texts[a]] for a, n in considered)
        shares[name] = {"rows": len(considered), "false_negatives": hits, "share": hits / max(1, len(considered)),
                        "mean_sim": b.mean_sim(), "skipped": dict(b.skipped)}
        print(f"| {name} | {len(considered)} | {hits} | {100 * hits / max(1, len(considered)):.2f}% | "
              f"{b.mean_sim():.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine.describe(), "bands": res.bands, "order": order,
                                               "false_negatives": shares, "pool": len(supervised),
                                               "index": res.manifest.index}, indent=2, default=str))


if __name__ == "__main__":
    main()
