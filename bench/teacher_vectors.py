"""What keeping the teacher's vectors across nights saves (mining.vector_store, `teacher.vectors`), and whether the
judge's decisions change, on a corpus that grows night by night.

The Twitter corpus (`<data_dir>/twitter/unlabeled.txt`, its first `--lines` lines) is cut into `--slices`
contiguous slices; night k's pool is slices 1..k (a team's export that grows). Each night the pool is embedded
with the config's teacher twice, in this process, one after the other:

- `per run` (what a night did before the store, and what a run without `teacher.vectors` still does): a new run
  folder's cache, so the whole pool is encoded;
- `store`: the same, through one vector store shared by the nights, so only the texts no earlier night had are
  encoded.

Per night: seconds and texts encoded each way; the largest difference between the two matrices (the store's rows
were encoded in other batches, so float16 rounding may differ); and the judge's decision on both, the config's
rule for mined positives (`mining.judge.mine_positives`): how many anchors get a positive each way and how many
of those (anchor, positive) pairs are the same. `--again` adds a night whose pool is the last one again (a night
whose corpus did not change): the seconds it takes through the store, which then encodes nothing.

    python -m bench.teacher_vectors --config configs/domain_unlabeled.yaml --out runs/teacher-vectors [--again]

Each night is recorded in `<out>/night-<k>.json` as it finishes; a rerun with the same settings resumes after the
last recorded night, with the store those nights filled (other settings start over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import REPO, machine


def _pairs(mined: Any, corpus: Any) -> set[tuple[str, str]]:
    return {(corpus.texts[corpus.anchor[r]], corpus.texts[p]) for r, p in zip(mined.rows, mined.positive)}


def night(k: int, parts: list[Path], teacher: Any, params: Any, out: Path) -> dict[str, Any]:
    from mining.corpus import load_corpus
    from mining.embeddings import embed_corpus
    from mining.judge import mine_positives

    corpus = load_corpus(parts[:k])
    row: dict[str, Any] = {"night": k, "pool": len(corpus)}
    mined = {}
    for way, store in (("per_run", None), ("store", out / "store" / "teacher_vectors")):
        cache = out / way / f"night-{k}" / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # a rerun measures again
        t = time.perf_counter()
        emb = embed_corpus(corpus, teacher, cache, model_fp=teacher.fingerprint(), show_progress=False, store=store)
        row[f"{way}_seconds"] = time.perf_counter() - t
        meta = json.loads((emb.path.parent / "meta.json").read_text(encoding="utf-8"))
        row[f"{way}_encoded"] = meta.get("encoded", len(corpus))
        row[f"{way}_matrix"] = emb
        mined[way] = mine_positives(corpus, emb, params)
    a = np.asarray(row.pop("per_run_matrix").matrix, dtype=np.float32)
    b = np.asarray(row.pop("store_matrix").matrix, dtype=np.float32)
    row["max_abs_difference"] = float(np.abs(a - b).max())
    plain, stored = _pairs(mined["per_run"], corpus), _pairs(mined["store"], corpus)
    row.update(mined_per_run=len(plain), mined_store=len(stored), mined_same=len(plain & stored))
    return row


def again(parts: list[Path], teacher: Any, out: Path) -> dict[str, Any]:
    """The last pool embedded once more through the store, into a new cache: nothing is left to encode."""
    from mining.corpus import load_corpus
    from mining.embeddings import embed_corpus

    corpus = load_corpus(parts)
    cache = out / "store" / "again" / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    emb = embed_corpus(corpus, teacher, cache, model_fp=teacher.fingerprint(), show_progress=False,
                       store=out / "store" / "teacher_vectors")
    seconds = time.perf_counter() - t
    meta = json.loads((emb.path.parent / "meta.json").read_text(encoding="utf-8"))
    return {"pool": len(corpus), "store_seconds": seconds, "store_encoded": meta["encoded"]}


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"- Command: `{meta['command']}`; machine: {machine.text(meta['machine'])}; {meta['finished']}.", "",
             "| night | pool | per run: encoded, s | store: encoded, s | saved | max abs diff | "
             "mined positives per run / store / same |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['night']} | {r['pool']:,} | {r['per_run_encoded']:,}, {r['per_run_seconds']:.1f} | "
                     f"{r['store_encoded']:,}, {r['store_seconds']:.1f} | "
                     f"{100 * (1 - r['store_seconds'] / r['per_run_seconds']):.0f} % | {r['max_abs_difference']:.1e} | "
                     f"{r['mined_per_run']:,} / {r['mined_store']:,} / {r['mined_same']:,} |")
    total = {w: sum(r[f"{w}_seconds"] for r in rows) for w in ("per_run", "store")}
    lines += ["", f"All nights: {total['per_run']:.0f} s per run against {total['store']:.0f} s with the store "
                  f"({total['per_run'] / total['store']:.2f}x)."]
    if meta.get("again"):
        a = meta["again"]
        lines.append(f"The last pool again (a night whose corpus did not change): {a['store_encoded']:,} texts "
                     f"encoded, {a['store_seconds']:.1f} s through the store (per run: the last night's "
                     f"{rows[-1]['per_run_seconds']:.0f} s).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "domain_unlabeled.yaml"))
    parser.add_argument("--out", default=str(REPO / "runs" / "teacher-vectors"))
    parser.add_argument("--lines", type=int, help="only the corpus's first N lines")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--again", action="store_true", help="add a night whose pool is the last one again")
    args = parser.parse_args(argv)
    import torch

    from bench.twitter_nights import slice_corpus
    from dataio.atomic import atomic_write_json
    from dataio.tables import data_dir
    from flows.run.config import load_config
    from flows.run.inputs import teacher_of

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if config.teacher is None:
        raise SystemExit(f"{args.config} has no teacher: nothing to measure")
    out = Path(args.out).resolve()
    settings = {"config": str(Path(args.config).resolve()), "lines": args.lines, "slices": args.slices,
                "teacher_fingerprint": teacher_of(config).fingerprint()}
    recorded = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("night-*.json"))]
    if not recorded or any(r.get("settings") != settings for r in recorded):
        for path in out.glob("night-*.json"):
            path.unlink()
        shutil.rmtree(out / "store", ignore_errors=True)  # a new measurement starts from an empty store
        recorded = []
    parts = slice_corpus(data_dir() / "twitter" / "unlabeled.txt", out / "slices", args.slices, args.lines)
    teacher = teacher_of(config)
    teacher.encode(["load the model before the clock starts"], batch_size=1, show_progress_bar=False)
    rows = sorted(recorded, key=lambda r: r["night"])
    for k in range(len(rows) + 1, len(parts) + 1):
        rows.append({**night(k, parts, teacher, config.mining.params, out), "settings": settings})
        atomic_write_json(out / f"night-{k}.json", rows[-1])
        print(json.dumps(rows[-1]), flush=True)
    meta = {"command": " ".join(["python -m bench.teacher_vectors", *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine.describe(threads=args.threads, torch=True),
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "again": again(parts, teacher, out) if args.again else None}
    (out / "teacher_vectors.json").write_text(json.dumps({"meta": meta, "nights": rows}, indent=1) + "\n",
                                              encoding="utf-8")
    print(render(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
