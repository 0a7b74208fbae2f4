"""Writing a model card (`simcse.model_card` says what a card holds): `README.md`, rendered by sentence-transformers'
own machinery (`SentenceTransformerModelCardData` and its template, as `SentenceTransformer.save()` does) with the
SimCSE sections added, a plain card in the same form where sentence-transformers cannot render the folder, and
`simcse_card.json`, the card as data, beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import textwrap
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dataio.atomic import atomic_write_text
from simcse.model_card import (
    CARD_DATA,
    README,
    SIMCSE_CITATION,
    TAGS,
    ModelCardInfo,
    read_card_info,
)
from simcse.model_folder import quiet_transformers

_log = logging.getLogger(__name__)
def write_model_card(folder: str | os.PathLike, info: ModelCardInfo,
                     location: str | os.PathLike | None = None) -> Path:
    """Write `README.md` (the card) and `simcse_card.json` (its data) into a model folder; returns the README.

    `location`: where the folder will be once written (it may be written under a temporary name first); the
    card's usage loads the model from there."""
    folder = Path(folder)
    text = render_model_card(folder, info, location=location)
    atomic_write_text(folder / CARD_DATA, info.model_dump_json(indent=1) + "\n")
    atomic_write_text(folder / README, text)
    return folder / README


def update_model_card(folder: str | os.PathLike, info: ModelCardInfo) -> Path:
    """Add what `info` says to a folder's card (what the card said before stays unless `info` replaces it)."""
    previous = read_card_info(folder) or ModelCardInfo()
    return write_model_card(folder, previous.merged(info))


def render_model_card(folder: str | os.PathLike, info: ModelCardInfo,
                      location: str | os.PathLike | None = None) -> str:
    """The card's markdown: sentence-transformers' card of the folder plus the SimCSE sections.

    What sentence-transformers' template cannot know is put right: the usage loads the model from its folder
    (`location`, default `folder`), not from a Hub id it does not have; a local base model is named as a
    folder, not linked to the Hub; the training samples are the rows the steps trained on (`rows_trained`),
    not the size of the data they were drawn from; the maximum sequence length says what training used."""
    where = str(Path(location if location is not None else folder).resolve())
    try:
        return _render_with_sentence_transformers(Path(folder), info, where)
    except Exception as exc:  # noqa: BLE001 - any failure there: a plain card in the same form instead
        _log.warning("sentence-transformers could not render the model card of %s (%s: %s); writing a plain card",
                     folder, type(exc).__name__, exc)
        return render_plain_card(info, where)


def _title(info: ModelCardInfo) -> str:
    if info.title:
        return info.title
    base = info.base_model or "a transformer"
    name = Path(base).name if _is_local(base) else base
    return f"SimCSE model from {name}" + (f", curriculum round {info.round}" if info.round is not None else "")


def _tags(info: ModelCardInfo) -> list[str]:
    tags = list(TAGS)
    if info.curriculum:
        tags.append("curriculum-learning")
    if (info.loss or {}).get("hard_negatives"):
        tags.append("hard-negatives")
    return tags


# A folder's sentence-transformers skeleton (its modules, weights moved to the meta device) serves every card
# of the same architecture: the card reads the module layout and settings, never the weights.
_SKELETONS: dict[str, Any] = {}
_SKELETON_LOCK = threading.Lock()
_SKELETON_CACHE_SIZE = 4


def _architecture_key(folder: Path) -> str:
    """A hash of the folder's settings files (module layout, configs), not of its weights or vocabulary."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        if path.name.startswith(("tokenizer", "special_tokens", "simcse_card")):
            continue
        digest.update(rel.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _skeleton(folder: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    key = _architecture_key(folder)
    model = _SKELETONS.get(key)
    if model is None:
        with quiet_transformers():
            model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        model.to("meta")  # frees the weights; the card needs the module layout only
        if len(_SKELETONS) >= _SKELETON_CACHE_SIZE:
            _SKELETONS.pop(next(iter(_SKELETONS)))
        _SKELETONS[key] = model
    return model


class _EvaluatedFile:
    """One evaluation file's scores in the shape sentence-transformers' card reads from an evaluator
    (`name`, `description`, `primary_metric`, `get_config_dict`); metric values on its 0-1 scale.
    The card prints an evaluator's class as "Evaluated with <module>.<class>", so the class the card sees
    (`_evaluated_by`) is named after the function that computed the scores."""

    def __init__(self, name: str, description: str, primary_metric: str | None, config: dict[str, Any]) -> None:
        self.name = name
        self.description = description
        self.primary_metric = primary_metric
        self._config = config

    def get_config_dict(self) -> dict[str, Any]:
        return dict(self._config)


_evaluated_by = type("evaluate", (_EvaluatedFile,), {"__module__": "simcse.evaluation"})


def _evaluation_results(info: ModelCardInfo) -> dict[_EvaluatedFile, dict[str, float]]:
    """simcse's evaluation (x100 scores) as sentence-transformers evaluator results (`spearman_cosine`,
    `cosine_ap` on 0-1, as its EmbeddingSimilarityEvaluator and BinaryClassificationEvaluator report them)."""
    ev = info.evaluation or {}
    dev_name = str((info.dev_metric or {}).get("name") or "")
    out: dict[_EvaluatedFile, dict[str, float]] = {}
    for kind, description, metric in (("sts", "Semantic Similarity", "spearman_cosine"),
                                      ("pairs", "Binary Classification", "cosine_ap")):
        for stem, value in (ev.get(kind) or {}).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            primary = metric if dev_name == f"{kind}/{stem}" else None
            config = {"metric": "Spearman correlation of cosine similarity" if kind == "sts"
                      else "average precision of cosine similarity"}
            out[_evaluated_by(stem, description, primary, config)] = {metric: float(value) / 100.0}
    geometry = {k: float(ev[k]) for k in ("alignment", "uniformity")
                if isinstance(ev.get(k), (int, float)) and math.isfinite(ev[k])}
    if geometry:
        out[_evaluated_by("positive-pairs", "Alignment and Uniformity", None,
                           {"reference": "Wang & Isola (2020)", "lower_is_better": True})] = geometry
    return out


LOAD_COMMENT = "# Load from this model folder (the path it was written to; give its new path if it moved)"


def _render_with_sentence_transformers(folder: Path, info: ModelCardInfo, location: str) -> str:
    from sentence_transformers import SentenceTransformerModelCardData
    from sentence_transformers.base.model_card import generate_model_card

    with _SKELETON_LOCK:
        model = _skeleton(folder)
        data = SentenceTransformerModelCardData(license=info.licence, model_name=_title(info),
                                                local_files_only=True, generate_widget_examples=False)
        data.add_tags(_tags(info))
        data.register_model(model)
        data.base_model = info.base_model  # set directly: naming a local base is not a Hub lookup
        data._snippet_default_model_id = location  # the usage loads this folder (there is no Hub id)
        data.set_losses([])  # the Sentence-BERT citation; SimCSE's is added below
        data.citations["SimCSE"] = SIMCSE_CITATION
        if info.training_rows:
            data.train_datasets = [_train_dataset(info)]
        if info.hyperparameters:
            data.all_hyperparameters = dict(info.hyperparameters)
            data.non_default_hyperparameters = {k: v for k, v in info.hyperparameters.items()
                                                if k not in info.default_hyperparameters
                                                or info.default_hyperparameters[k] != v}
        data.eval_results_dict = _evaluation_results(info)
        if info.training_logs:
            data.training_logs = [dict(line) for line in info.training_logs]
            if info.dev_metric and info.dev_metric.get("step") is not None:
                data.set_best_model_step(int(info.dev_metric["step"]))
        model.model_card_data = data
        text = generate_model_card(model)
    return _insert_sections(_put_right(text, info, location), simcse_sections(info))


def _put_right(text: str, info: ModelCardInfo, location: str) -> str:
    """sentence-transformers' card, where its template says what is not so of a folder we wrote."""
    text = text.replace("# Download from the 🤗 Hub", LOAD_COMMENT)
    text = text.replace('("sentence_transformers_model_id")', f"({json.dumps(location)})")  # if the id was not set
    base = info.base_model
    if base and _is_local(base):
        text = text.replace(f"[{base}](https://huggingface.co/{base})", f"`{base}` (a local folder)")
    if info.max_length:
        text = re.sub(r"^- \*\*Maximum Sequence Length:\*\* (\d+) tokens$",
                      lambda m: f"- **Maximum Sequence Length:** {info.max_length} tokens in training (longer "
                                f"sentences were truncated); {m.group(1)} tokens when encoding (the folder's "
                                f"max_seq_length)", text, count=1, flags=re.MULTILINE)
    return text


def _train_dataset(info: ModelCardInfo) -> dict[str, Any]:
    rows = info.training_rows or {}
    loss = info.loss or {}
    params = {k: loss[k] for k in ("temperature", "alpha") if loss.get(k) is not None}
    entry: dict[str, Any] = {"name": rows.get("name", "training rows"), "columns": list(rows.get("columns") or []),
                             "loss": {"fullname": loss.get("function", "simcse.losses")}}
    trained = info.rows_trained if info.rows_trained is not None else rows.get("rows")
    if trained is not None:  # the rows the steps trained on, not the size of what they were drawn from
        entry["size"] = int(trained)
    if params:  # formatted as sentence-transformers formats a loss's config
        entry["loss"]["config_code"] = textwrap.indent(f"```json\n{json.dumps(params, indent=4)}\n```", "  ")
    return entry


def _insert_sections(text: str, sections: str) -> str:
    """Our sections go into "Training Details", before the framework versions (or the citations)."""
    for anchor in ("\n### Framework Versions", "\n## Citation"):
        at = text.find(anchor)
        if at >= 0:
            return text[:at] + "\n" + sections.rstrip() + "\n" + text[at:]
    return text.rstrip() + "\n\n" + sections


def render_plain_card(info: ModelCardInfo, location: str | None = None) -> str:
    """The card written without sentence-transformers: the same front matter and SimCSE sections."""
    import yaml

    meta: dict[str, Any] = {}
    if info.licence:
        meta["license"] = info.licence
    meta["library_name"] = "sentence-transformers"
    meta["tags"] = ["sentence-transformers", "sentence-similarity", "feature-extraction", *_tags(info)]
    if info.base_model:
        meta["base_model"] = info.base_model
    metrics = [m for results in _evaluation_results(info).values() for m in results]
    if metrics:
        meta["metrics"] = list(dict.fromkeys(metrics))
    meta["pipeline_tag"] = "sentence-similarity"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", f"# {_title(info)}", "",
             "This is a [sentence-transformers](https://www.SBERT.net) model trained with SimCSE"
             + (f" from {info.base_model}" if info.base_model else "") + ".", "",
             "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             LOAD_COMMENT, f"model = SentenceTransformer({json.dumps(location or 'path/to/this/folder')})",
             'embeddings = model.encode(["The weather is lovely today.", "It\'s so sunny outside!"])', "```", ""]
    results = _evaluation_results(info)
    if results:
        lines += ["## Evaluation", "", "| dataset | metric | value |", "|---|---|---|"]
        for file, values in results.items():
            lines += [f"| {file.name} | {m} | {v:.4f} |" for m, v in values.items()]
        lines.append("")
    lines += ["## Training Details", "", simcse_sections(info).rstrip(), "",
              "## Citation", "", "```bibtex", SIMCSE_CITATION, "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- our sections
def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return "n/a" if value is None else str(value)


def _base_line(info: ModelCardInfo) -> str:
    base = info.base_model
    if base is None:
        named = "unknown"
    elif _is_local(base):
        named = f"local folder `{base}` (no Hub id known)"
    else:
        named = f"[{base}](https://huggingface.co/{base})"
    licence = info.licence or "not stated in the base model's card"
    return f"- **Base model:** {named}; licence: {licence}"


def _is_local(name: str) -> bool:
    """A path rather than a Hub id (`name` or `org/name`)."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def simcse_sections(info: ModelCardInfo) -> str:
    """The SimCSE-specific markdown: base model and licence, round, loss, α, curriculum, data provenance."""
    lines = ["### SimCSE Training", "", _base_line(info)]
    if info.licence:
        lines.append(f"- **Licence of this model:** {info.licence}, carried from the base model; the training "
                     f"data's licences are listed below")
    if info.trained_from:
        lines.append(f"- **Trained from:** `{info.trained_from}`")
    if info.round is not None:
        lines.append(f"- **Curriculum round:** {info.round}" + (f" of {info.rounds}" if info.rounds else "")
                     + " (rounds counted from 0)")
    loss = info.loss or {}
    if loss:
        lines.append(f"- **Loss:** {loss.get('name', 'SimCSE')} (`{loss.get('function', 'simcse.losses')}`)")
        lines.append(f"- **Temperature τ:** {_fmt(loss.get('temperature'))}")
        alpha = loss.get("alpha")
        if isinstance(alpha, Mapping):
            alpha = ", ".join(f"{band} {_fmt(a)}" for band, a in alpha.items())
        if alpha is not None:
            lines.append(f"- **α (hard-negative weight):** {_fmt(alpha) if isinstance(alpha, float) else alpha}")
    if info.steps is not None:
        rows = info.rows_trained
        source = info.training_rows or {}
        drawn_from = (f", drawn from {source.get('name', 'the training data')} ({source['rows']:,} rows)"
                      if rows and source.get("rows") is not None else "")
        lines.append(f"- **Training steps:** {info.steps}" + (
            f", {rows} rows ({rows / info.steps:.0f} per step){drawn_from}" if rows and info.steps else ""))
    if info.max_length:
        lines.append(f"- **Maximum sequence length in training:** {info.max_length} tokens")
    if info.dev_metric and info.dev_metric.get("value") is not None:
        dev = info.dev_metric
        at = f" at step {dev['step']}" if dev.get("step") is not None else ""
        lines.append(f"- **Dev metric:** {dev.get('name')} = {_fmt(dev.get('value'), 2)}{at}")
    ev = info.evaluation or {}
    scores = [f"STS {k} {_fmt(v, 2)}" for k, v in (ev.get("sts") or {}).items()]
    scores += [f"AP {k} {_fmt(v, 2)}" for k, v in (ev.get("pairs") or {}).items()]
    scores += [f"{k} {_fmt(ev[k], 4)}" for k in ("alignment", "uniformity") if ev.get(k) is not None]
    if scores:
        lines.append(f"- **Metrics:** {', '.join(scores)} (STS: Spearman x100; AP: average precision x100; "
                     f"alignment and uniformity: lower is better)")
    lines.append("")

    cur = info.curriculum
    if cur:
        lines += ["#### Curriculum", ""]
        how = [f"{name} {_fmt(cur[name])}" for name in ("mode", "pacing", "stage", "competence")
               if cur.get(name) is not None]
        if how:
            lines += ["- " + ", ".join(how)]
        if cur.get("decision"):
            lines.append(f"- **After this round:** {cur['decision']}")
        mixture = cur.get("mixture") or {}
        if mixture:
            alphas = cur.get("alpha") or {}
            difficulty = cur.get("difficulties") or {}
            lines += ["", "| band | share of rows (mixture at the round's start) | α "
                          "| difficulty (mean anchor-negative cosine) |",
                      "|---|---|---|---|"]
            for band, share in mixture.items():
                lines.append(f"| {band} | {_fmt(share)} | {_fmt(alphas.get(band))} | {_fmt(difficulty.get(band))} |")
        lines.append("")

    if info.data:
        lines += ["#### Training Data Provenance", "",
                  "| file | kind | rows read | rows kept | dropped | sha256 (first 32 hex digits) | licence |",
                  "|---|---|---|---|---|---|---|"]
        for src in info.data:
            dropped = ", ".join(f"{k} {v}" for k, v in (src.get("dropped") or {}).items() if v) or "none"
            digest = src.get("sha256")
            lines.append(f"| `{src.get('path')}` | {src.get('kind', '')} | {_fmt(src.get('rows'))} | "
                         f"{_fmt(src.get('kept'))} | {dropped} | {f'`{digest[:32]}`' if digest else 'n/a'} | "
                         f"{src.get('licence') or 'not stated'} |")
        lines += ["", "Licences are those named with the data; \"not stated\" where none was given.", ""]
    return "\n".join(lines)
