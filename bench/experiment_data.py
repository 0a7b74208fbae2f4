"""Inputs the curriculum experiment makes once, deterministically: the weak start and the Twitter dev split.

- **Weak start.** No raw (not sentence-trained) checkpoint is installable offline (the raw-MiniLM package
  on the index ships no weights), so the experiment's second start is a surrogate: all-MiniLM-L6-v2 with its
  top `reinit_layers` transformer layers re-initialised as BERT initialises them (Linear weights normal with
  std 0.02, biases 0, LayerNorm 1 and 0), seeded.
  The lower layers keep their token features, the top ones must be learned again: a start where SimCSE
  training matters, as it does for the paper's raw BERT. Saved once as a sentence-transformers folder.
- **Twitter dev split.** `twitter/dev_pairs.tsv` pairs one source headline (`sentence1`) with several
  tweets, so the pairs are split *by headline*: a seeded half of the headlines selects (budget, learning rate,
  the selected round), the other half reports. No headline, and so no pair, is in both halves. But a tweet can
  sit under two headlines (57 tweets were in both halves, in 62 report pairs), so the second split (`component`,
  used from the domain-judge experiment on) assigns whole *connected components* of the pairs' text graph (two
  texts connected when they form a pair) to a half: no text, headline or tweet, is on both sides.

    python -m bench.experiment_data weak-start --out runs/experiment/starts/weak
    python -m bench.experiment_data split-twitter --out runs/experiment/data/twitter
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from bench import REPO

WEAK_REINIT_LAYERS = 2
WEAK_SEED = 0
SPLIT_SEED = "twitter-dev-split-v1"


def make_weak_start(out: Path, *, reinit_layers: int = WEAK_REINIT_LAYERS, seed: int = WEAK_SEED) -> Path:
    """all-MiniLM-L6-v2 with its top `reinit_layers` layers re-initialised (seeded); returns the folder.

    An existing folder made with the same recipe is kept (its `weak_start.json` says how it was made)."""
    import torch

    from simcse.model import SimCSEEncoder, default_model_path

    recipe = {"base": "all-MiniLM-L6-v2", "reinit_layers": int(reinit_layers), "seed": int(seed),
              "initialiser": "Linear: normal(0, initializer_range), bias 0; LayerNorm: 1, 0"}
    marker = out / "weak_start.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == recipe:
        return out
    encoder = SimCSEEncoder.from_pretrained(default_model_path(), pooling=None, device="cpu")
    backbone = encoder.backbone
    layers = backbone.encoder.layer
    if not 0 < reinit_layers <= len(layers):
        raise ValueError(f"reinit_layers must be in 1..{len(layers)}, got {reinit_layers}")
    std = float(backbone.config.initializer_range)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # BERT's initialiser, written out: transformers skips weights it has loaded
        for layer in layers[len(layers) - reinit_layers:]:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                    module.bias.zero_()
                elif isinstance(module, torch.nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    encoder.save(out)
    (out / "weak_start.json").write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")
    return out


def _half(key: str, seed: str = SPLIT_SEED) -> str:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return "select" if digest[0] % 2 == 0 else "report"


SPLITS = ("headline", "component")  # headline: the first experiment's split; component: no text on both sides
COMPONENT_SEED = "twitter-dev-split-v2"


def _component_keys(rows: list[dict[str, str]]) -> list[str]:
    """For each pair, a key of its connected component in the graph whose edges are the pairs (union-find over
    the texts): the component's smallest text."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        a, b = find(r["sentence1"]), find(r["sentence2"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(r["sentence1"]) for r in rows]


def split_twitter_dev(src: Path, out: Path, by: str = "headline") -> dict[str, Path]:
    """Write `select/dev_pairs.tsv` and `report/dev_pairs.tsv` (same stem, so both score as pairs/dev_pairs),
    split by headline or by connected component (`SPLITS`)."""
    if by not in SPLITS:
        raise ValueError(f"unknown split {by!r}; choose from {', '.join(SPLITS)}")
    with open(src, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        header = reader.fieldnames or ["sentence1", "sentence2", "label"]
        rows = list(reader)
    if by == "headline":
        halves = [_half(r["sentence1"]) for r in rows]
    else:
        halves = [_half(key, COMPONENT_SEED) for key in _component_keys(rows)]
    paths = {}
    for half in ("select", "report"):
        path = out / half / src.name
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r, h in zip(rows, halves) if h == half]
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
        paths[half] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    weak = sub.add_parser("weak-start")
    weak.add_argument("--out", default=str(REPO / "runs" / "experiment" / "starts" / "weak"))
    weak.add_argument("--reinit-layers", type=int, default=WEAK_REINIT_LAYERS)
    weak.add_argument("--seed", type=int, default=WEAK_SEED)
    split = sub.add_parser("split-twitter")
    split.add_argument("--src", help="default: <data_dir>/twitter/dev_pairs.tsv")
    split.add_argument("--out", default=str(REPO / "runs" / "experiment" / "data" / "twitter"))
    split.add_argument("--by", choices=SPLITS, default="headline")
    args = parser.parse_args(argv)
    if args.command == "weak-start":
        print(make_weak_start(Path(args.out), reinit_layers=args.reinit_layers, seed=args.seed))
    else:
        from dataio.tables import data_dir

        src = Path(args.src) if args.src else data_dir() / "twitter" / "dev_pairs.tsv"
        for half, path in split_twitter_dev(src, Path(args.out), args.by).items():
            print(half, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
