"""What re-encoding only part of the pool costs in triplets, and what it saves in time (issue 15, part 5).

A curriculum round re-encodes the whole pool with the model the last round trained, then re-mines. ANCE
refreshes its index asynchronously instead: negatives come from a checkpoint that lags training. Two cheaper
schemes are measured here against the full re-encode, on the embeddings of one pool under two consecutive
round models (OLD mined the last round, NEW is the model just trained):

- `stale` (f = 0): no re-encode this round, the last round's embeddings as they are (re-encoding every other
  round, or an asynchronous refresh one round behind);
- `mixed f`: a fraction f of the pool re-encoded with NEW, the rest kept from OLD (a rotating partial refresh;
  which rows is a seeded hash draw, several seeds).

For each scheme, the embedding-dependent bands (`nearest_neighbour`, and `in_domain`, whose groups are k-means
clusters when the corpus has no domains) are mined with the product's own code (`mining.bands` on
`mining.index.knn`, exact search) and compared with the full re-encode's triplets: the share of anchor rows
whose negative is the same, the overlap of the kNN windows, how hard the kept negatives are under NEW (mean
cos_NEW(anchor, negative)), and how many would be false-negative suspects under NEW (cos_NEW > max_score, which
the full re-encode's guard rejects). Time saved is (1 - f) of the pool's encode time with NEW, measured.

The rule, fixed before measuring: a scheme pays, and becomes a setting, if it keeps at least 90 % of the full
re-encode's nearest-neighbour triplets while saving at least a third of the encode time (f <= 2/3), and leaks
no more false-negative suspects than 1 % of anchors. Otherwise the docs say it does not pay and by how much.

    .venv/bin/python -m bench.partial_reencode --corpus CORPUS.txt --models OLD NEW [NEWER ...] \
        [--cache DIR] [--fractions 0,0.25,0.5,0.75,1] [--seeds 0,1,2] [--json out.json]

Consecutive model pairs (OLD, NEW), (NEW, NEWER), ... are each measured. Embeddings are cached in `--cache`
(the mining cache format: a flow run's `cache/` folder is reused when its fingerprints match).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench import machine

BANDS = ("nearest_neighbour", "in_domain")
PAYS = {"agreement": 0.90, "max_fraction": 2 / 3, "suspects": 0.01}


def refreshed_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows re-encoded: a seeded draw of round(f * n) rows."""
    mask = np.zeros(n, dtype=bool)
    k = int(round(fraction * n))
    if k:
        mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return mask


def mine_bands(corpus, matrix: np.ndarray, params, seed: int) -> dict:
    """The embedding-dependent bands of one round mined on `matrix` with the product's code, exact search."""
    from mining.band_context import BandContext
    from mining.bands import BAND_FUNCTIONS
    from mining.embeddings import Embeddings
    from mining.index import knn

    emb = Embeddings(matrix, list(corpus.ids), "bench", corpus.pool_fingerprint())
    ctx = BandContext(corpus, emb, params, seed, 1)
    depth = ctx.knn_depth(list(BANDS))
    result = knn(emb.matrix, ctx.uq, depth, "faiss-flat")
    ctx.set_knn(result, ctx.uq)
    out = {band: BAND_FUNCTIONS[band](ctx) for band in BANDS}
    out["_knn"] = result.indices
    return out


def compare(ref: dict, got: dict, new: np.ndarray, max_score: float, window: int) -> dict:
    """How `got`'s triplets differ from the full re-encode's (`ref`), scored in NEW's embeddings."""
    row = {}
    for band in BANDS:
        r, g = ref[band], got[band]
        key_r = dict(zip(r.anchor.tolist(), r.negative.tolist()))
        key_g = dict(zip(g.anchor.tolist(), g.negative.tolist()))
        same = sum(1 for a, n in key_g.items() if key_r.get(a) == n)
        cos = np.einsum("ij,ij->i", new[g.anchor].astype(np.float32), new[g.negative].astype(np.float32))
        cos_r = np.einsum("ij,ij->i", new[r.anchor].astype(np.float32), new[r.negative].astype(np.float32))
        row[band] = {"rows": int(g.rows), "ref_rows": int(r.rows), "same_negative": same / max(1, len(key_r)),
                     "mean_cos_new": float(cos.mean()) if len(cos) else None,
                     "ref_mean_cos_new": float(cos_r.mean()) if len(cos_r) else None,
                     "suspects_new": float((cos > max_score).mean()) if len(cos) else 0.0}
    w_r, w_g = ref["_knn"][:, :window + 1], got["_knn"][:, :window + 1]
    overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(w_r.tolist(), w_g.tolist())]
    row["window_overlap"] = float(np.mean(overlap))
    return row


def encode(corpus, model: str, cache: Path, batch_size: int, max_length: int) -> tuple[np.ndarray, float, bool]:
    from mining.embeddings import embed_corpus
    from mining.encoders import load_encoder

    encoder = load_encoder(model, max_length=max_length)
    t = time.perf_counter()
    emb = embed_corpus(corpus, encoder, cache, batch_size=batch_size, show_progress=False)
    seconds = time.perf_counter() - t
    if emb.cached:  # the cache's own record of the encode that wrote it
        meta = json.loads((Path(emb.path).parent / "meta.json").read_text())
        seconds = float(meta.get("encode_seconds", float("nan")))
    return np.asarray(emb.matrix, dtype=np.float16), seconds, emb.cached


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", required=True, help="corpus files of the pool (one text per line or TSV)")
    p.add_argument("--models", nargs="+", required=True, help="consecutive round models, oldest first")
    p.add_argument("--cache", type=Path, default=Path("partial-reencode-cache"))
    p.add_argument("--fractions", default="0,0.25,0.5,0.75,1")
    p.add_argument("--seeds", default="0,1,2", help="draws of the refreshed rows (mixed fractions)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if len(args.models) < 2:
        p.error("--models needs at least two consecutive round models")

    from mining.corpus import CorpusSource, load_corpus
    from mining.params import MiningParams

    corpus = load_corpus([CorpusSource(Path(c)) for c in args.corpus])
    params = MiningParams()
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {machine.text()}")
    print(f"pool {len(corpus):,}")
    encoded = [encode(corpus, m, args.cache, args.batch_size, args.max_length) for m in args.models]
    names = {m: f"M{i}" for i, m in enumerate(args.models)}
    for m, (_, s, cached) in zip(args.models, encoded):
        print(f"{names[m]} = {m}: encode {s:.1f} s{' (from the cache, its recorded time)' if cached else ''}")
    pairs = []
    for (old_m, new_m), (old, _, _), (new, new_s, _) in zip(zip(args.models, args.models[1:]), encoded,
                                                            encoded[1:]):
        ref = mine_bands(corpus, new, params, 0)
        rows = []
        for f in fractions:
            for seed in (seeds if 0 < f < 1 else [0]):
                mask = refreshed_rows(len(corpus), f, seed)
                mixed = np.where(mask[:, None], new, old)
                got = mine_bands(corpus, mixed, params, 0)
                row = {"fraction": f, "seed": seed, "encode_saved_s": (1 - f) * new_s,
                       **compare(ref, got, new, params.max_score, params.range_max)}
                rows.append(row)
                nn, dom = row["nearest_neighbour"], row["in_domain"]
                print(f"{names[old_m]}->{names[new_m]} f={f:.2f} seed={seed}: nn same {nn['same_negative']:.3f}"
                      f" cos_new {nn['mean_cos_new']:.3f} (ref {nn['ref_mean_cos_new']:.3f}) suspects "
                      f"{nn['suspects_new']:.4f}; in_domain same {dom['same_negative']:.3f}; window overlap "
                      f"{row['window_overlap']:.3f}; saves {row['encode_saved_s']:.0f} s", flush=True)
        pairs.append({"old": old_m, "new": new_m, "encode_new_s": new_s, "rows": rows})
    print("\n| models | f re-encoded | encode saved | nn same negative | in_domain same | kNN window overlap | "
          "nn mean cos_NEW (full: ref) | nn suspects under NEW | pays? |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for pair in pairs:
        for f in fractions:
            rs = [r for r in pair["rows"] if r["fraction"] == f]

            def mean(get, rs=rs):
                return float(np.mean([get(r) for r in rs]))

            def spread(get, rs=rs):
                v = [get(r) for r in rs]
                return f" ({min(v):.3f}-{max(v):.3f})" if len(v) > 1 else ""

            nn_same = mean(lambda r: r["nearest_neighbour"]["same_negative"])
            sus = mean(lambda r: r["nearest_neighbour"]["suspects_new"])
            pays = (0 < 1 - f and f <= PAYS["max_fraction"] and nn_same >= PAYS["agreement"]
                    and sus <= PAYS["suspects"])
            print(f"| {names[pair['old']]} → {names[pair['new']]} | {f:.2f} | "
                  f"{(1 - f) * pair['encode_new_s']:.0f} s ({1 - f:.0%}) | {nn_same:.3f}"
                  f"{spread(lambda r: r['nearest_neighbour']['same_negative'])} | "
                  f"{mean(lambda r: r['in_domain']['same_negative']):.3f} | "
                  f"{mean(lambda r: r['window_overlap']):.3f} | "
                  f"{mean(lambda r: r['nearest_neighbour']['mean_cos_new']):.3f} "
                  f"({rs[0]['nearest_neighbour']['ref_mean_cos_new']:.3f}) | {sus:.4f} | "
                  f"{'yes' if pays else ('-' if f == 1 else 'no')} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.describe(), "pool": len(corpus), "pays_rule": PAYS,
                                         "pairs": pairs}, indent=2))


if __name__ == "__main__":
    main()
