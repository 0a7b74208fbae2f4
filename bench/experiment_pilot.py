"""The experiment's pilot: pick the budget and learning rate before the pre-registered run, on dev only.

One training run per call, the plain SimCSE trainer on the experiment's data, scored on the selection set
every `--eval-every` steps (General: STS-B dev; Domain: the selection half of the Twitter dev pairs, plus
STS-B dev as a guard). The report sets (STS-B test, the Twitter report half) are never read here.

    python -m bench.experiment_pilot --setting general --start tuned --arm static_nli --lr 3e-5 --steps 200
    python -m bench.experiment_pilot --setting domain --start tuned --arm in_batch --temperature 0.1
    python -m bench.experiment_pilot summary --out runs/pilot

Arms: `in_batch` (anchors and positives only; Domain: unsupervised SimCSE, two dropout views) and
`static_nli` (General: the labeled contradiction as hard negative, SimCSE's supervised recipe).
`--view word_deletion:P` (Domain) makes the positive a copy of the tweet with each word deleted with
probability P (seeded per sentence), a harder view than dropout alone; `--view mined_pairs:T` trains on
in-domain pairs mined from the unlabeled corpus: each tweet and its nearest neighbour by the start model
when their cosine is at least T (in-batch negatives, no dropout-view positives).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO, machine
from bench.experiment_data import make_weak_start, split_twitter_dev


def word_deletion(text: str, p: float, salt: str) -> str:
    """Delete each word with probability `p` (a hash of the sentence and position decides); keep one word."""
    words = text.split()
    kept = []
    for i, w in enumerate(words):
        h = hashlib.blake2b(f"{salt}\0{i}\0{text}".encode(), digest_size=8).digest()
        if int.from_bytes(h, "little") / 2**64 >= p:
            kept.append(w)
    if not kept:
        kept = [words[len(words) // 2]] if words else [text]
    return " ".join(kept)


class ViewBatches:
    """Unsupervised batches whose positive is a deleted-words copy of the anchor (a new copy every epoch)."""

    def __init__(self, inner: Any, p: float) -> None:
        self.inner, self.p, self.epoch = inner, p, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for batch in self.inner:
            anchors = batch["anchor"]
            yield {"anchor": anchors, "positive": [word_deletion(a, self.p, f"e{self.epoch}") for a in anchors]}


def mined_pairs(texts: list[str], model: str, threshold: float) -> tuple[list[str], list[str]]:
    """In-domain pairs mined from an unlabeled corpus: each text with its nearest neighbour (by the start
    model) when their cosine is at least `threshold` (near-paraphrases, e.g. tweets about one headline)."""
    import faiss
    import numpy as np

    from simcse.model import SimCSEEncoder

    emb = SimCSEEncoder.from_pretrained(model, pooling=None).encode(texts, batch_size=128).astype(np.float32)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    scores, ids = index.search(emb, 2)
    anchors, positives = [], []
    for i in range(len(texts)):
        j = int(ids[i, 1]) if int(ids[i, 0]) == i else int(ids[i, 0])
        s = float(scores[i, 1] if int(ids[i, 0]) == i else scores[i, 0])
        if s >= threshold and texts[j] != texts[i]:
            anchors.append(texts[i])
            positives.append(texts[j])
    return anchors, positives


def start_model(name: str) -> str:
    from simcse.model import default_model_path

    if name == "tuned":
        return default_model_path()
    if name == "weak":
        return str(make_weak_start(REPO / "runs" / "experiment" / "starts" / "weak"))
    return name


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dataio.tables import data_dir
    from simcse.batching import triplet_batches, unsupervised_batches
    from simcse.data import load_sentences, load_triplets
    from simcse.evaluation import SimCSEEvaluator, primary_score
    from simcse.model import SimCSEEncoder
    from simcse.train import TrainConfig, train

    data = data_dir()
    tag = (f"{args.setting}-{args.start}-{args.arm}-lr{args.lr:g}-s{args.steps}-b{args.batch_size}"
           f"-t{args.temperature:g}-{args.view.replace(':', '')}-seed{args.seed}")
    out = Path(args.out) / tag
    result_file = out / "pilot.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if args.setting == "general":
        rows = load_triplets(data / "nli" / "triplets.csv")
        negative = rows.negative if args.arm == "static_nli" else None
        batches = triplet_batches(rows.anchor, rows.positive, negative, args.batch_size, seed=args.seed)
        evaluator = SimCSEEvaluator([data / "stsb" / "dev.tsv"])
    else:
        if args.arm != "in_batch":
            raise SystemExit("domain pilot arms: in_batch")
        tweets = load_sentences(data / "twitter" / "unlabeled.txt").texts
        batches = unsupervised_batches(tweets, args.batch_size, seed=args.seed)
        if args.view.startswith("word_deletion:"):
            batches = ViewBatches(batches, float(args.view.split(":")[1]))
        elif args.view.startswith("mined_pairs:"):
            anchors, positives = mined_pairs(tweets, start_model(args.start), float(args.view.split(":")[1]))
            print(f"mined pairs: {len(anchors)} of {len(tweets)} tweets have a neighbour above the threshold")
            batches = triplet_batches(anchors, positives, None, args.batch_size, seed=args.seed)
        halves = split_twitter_dev(data / "twitter" / "dev_pairs.tsv",
                                   REPO / "runs" / "experiment" / "data" / "twitter")
        # the domain setting's dev score is the select half of the Twitter pairs (STS-B dev rides along)
        evaluator = SimCSEEvaluator([data / "stsb" / "dev.tsv"], [halves["select"]], primary_metric="pairs/dev_pairs")
    encoder = SimCSEEncoder.from_pretrained(start_model(args.start), pooling=None, max_length=32)
    base = evaluator(encoder)
    config = TrainConfig(lr=args.lr, max_steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                         save_every=0, final_checkpoint=False, seed=args.seed, temperature=args.temperature,
                         progress=False)
    start = time.perf_counter()
    res = train(encoder, batches, config, out / "train", evaluator=evaluator)
    seconds = time.perf_counter() - start

    def point(ev: dict[str, Any], step: int) -> dict[str, Any]:
        return {"step": step, "dev": primary_score(evaluator, ev),
                "sts_dev": ev["sts"].get("dev"), "alignment": ev.get("alignment"), "uniformity": ev.get("uniformity")}

    result = {"tag": tag, **{k: v for k, v in vars(args).items() if k not in ("out", "func")},
              "base": point(base, 0), "curve": [point(e, e["step"]) for e in res.evaluations],
              "train_accuracy": res.train_accuracy, "history": res.history, "seconds": seconds,
              "triplets_per_s": res.triplets_per_s, "machine": machine.describe(torch=True)}
    out.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    import shutil

    shutil.rmtree(out / "train", ignore_errors=True)
    return result


def summary(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/pilot.json"))]
    for r in rows:
        curve = " ".join(f"{c['step']}:{c['dev']:.2f}" for c in r["curve"])
        print(f"{r['tag']:<70} base {r['base']['dev']:.2f} | {curve} | acc {r['train_accuracy'] or 0:.3f} "
              f"| {r['seconds']:.0f}s")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "summary":
        p = argparse.ArgumentParser()
        p.add_argument("--out", default=str(REPO / "runs" / "pilot"))
        summary(Path(p.parse_args(argv[1:]).out))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=("general", "domain"), required=True)
    p.add_argument("--start", default="tuned", help="tuned, weak or a model folder")
    p.add_argument("--arm", default="in_batch", choices=("in_batch", "static_nli"))
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--view", default="dropout", help="dropout, word_deletion:P or mined_pairs:T (domain)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default=str(REPO / "runs" / "pilot"))
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run(args)
    print(json.dumps({k: result[k] for k in ("tag", "base", "curve", "train_accuracy", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
