"""The model card of a round's model: what the run knows that the trainer does not.

The trainer writes each model folder with its card (base model and licence, loss, hyperparameters, logs;
simcse.model_card). A curriculum round adds: the round, the data it came from (files, content
fingerprints, the licences named in the config, rows kept and dropped, from the mining manifest), the
round's curriculum (mode, pacing, mixture, α per band, band difficulties) and, once evaluated, the metrics
and the curriculum's decision. `round_card` gathers this; `write_round_card` adds it to the round model's
card when the round closes. The card is not part of the model's fingerprint (flows.run.fingerprint), so
rewriting it never invalidates a cache key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataio.triplets import RoundManifest, is_complete, read_manifest
from flows.run.config import RunConfig
from flows.run.config_sections import TableFile
from flows.run.fingerprint import file_fingerprint
from flows.run.inputs import base_model_path
from flows.run.rundir import RunDir
from simcse.card_writer import update_model_card
from simcse.model_card import ModelCardInfo, describe_base, read_card_info

BUILTIN_LICENCE = "PSF-2.0 (Python standard library docstrings)"
TRIPLET_COLUMNS = ["anchor", "positive", "negative"]


def _licences(config: RunConfig) -> dict[str, str | None]:
    """Resolved input path -> the licence the config names for it."""
    out: dict[str, str | None] = {}
    entries: list[TableFile | None] = [config.data.corpus, config.data.pairs, config.data.nli]
    for entry in entries:
        if entry is not None:
            out[str(Path(entry.path).resolve())] = entry.licence
            if Path(entry.path).is_dir():  # a folder of files (a corpus that grows): each of them
                out.update({str(f.resolve()): entry.licence for f in Path(entry.path).rglob("*") if f.is_file()})
    return out


def _data_sources(config: RunConfig, manifest: RoundManifest | None) -> list[dict[str, Any]]:
    """The round's source files as the mining manifest read them, with fingerprints and licences."""
    licences = _licences(config)
    sources = ((manifest.corpus if manifest is not None else None) or {}).get("sources") or []
    out = []
    for src in sources:
        path = Path(src["path"])
        licence = BUILTIN_LICENCE if config.data.builtin else licences.get(str(path.resolve()))
        dropped = {"empty": src.get("empty", 0), "duplicate": src.get("duplicates", 0),
                   "no negative": src.get("missing_negative", 0), "label-0 pairs": src.get("label_0", 0)}
        out.append({"path": str(path), "kind": src.get("kind"), "rows": src.get("rows"), "kept": src.get("kept"),
                    "dropped": dropped, "licence": licence,
                    "sha256": file_fingerprint(path) if path.is_file() else None})
    return out


def round_card(config: RunConfig, run: RunDir, round_: int, curriculum: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None) -> ModelCardInfo:
    """What the run knows of round `round_`'s model: data, curriculum (the round's plan, or its
    metrics.json `curriculum` entry with the decision) and, given `metrics`, the evaluation."""
    manifest = read_manifest(run.triplets, round_) if is_complete(run.triplets, round_) else None
    info = ModelCardInfo(round=round_, rounds=config.rounds, data=_data_sources(config, manifest))
    bands = manifest.bands if manifest is not None else {}
    if manifest is not None:
        info.training_rows = {"name": f"mined triplets, round {round_}", "columns": TRIPLET_COLUMNS,
                              "rows": manifest.rows}
    cur = dict(curriculum or (metrics or {}).get("curriculum") or {})
    if cur:
        info.curriculum = {"mode": config.curriculum.mode, "pacing": config.curriculum.pacing,
                           "stage": cur.get("stage"), "competence": cur.get("competence"),
                           "mixture": cur.get("mixture") or {}, "alpha": cur.get("alpha") or {},
                           "difficulties": {b: s.mean_anchor_negative_sim for b, s in bands.items()},
                           "decision": cur.get("decision")}
        if config.negatives == "hard" and cur.get("alpha"):
            info.loss = {"alpha": dict(cur["alpha"])}
    if metrics is not None:
        info.evaluation = metrics.get("evaluation")
        dev = metrics.get("dev_metric")
        info.dev_metric = dict(dev) if dev else None
    return info


def write_round_card(config: RunConfig, run: RunDir, round_: int, metrics: dict[str, Any]) -> Path:
    """Add the closed round's facts (metrics, decision, data, curriculum) to its model's card."""
    folder = run.model_dir(round_)
    info = round_card(config, run, round_, metrics=metrics)
    if read_card_info(folder) is None:  # a folder without card data: name the round's base model at least
        info = describe_base(base_model_path(config) if round_ == 0 else run.model_dir(round_ - 1)).merged(info)
    return update_model_card(folder, info)
