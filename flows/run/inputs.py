"""The run's inputs and the evaluation of a model on them: the input files resolved and fingerprinted, the
mining corpus, the evaluation sets, the model to load, and a model's scores on the run's evaluation files.

Plain functions (no Prefect), shared by the Prefect tasks (flows.orchestration.tasks), the plain round loop
(flows.rounds.loop),
the input check (flows.rounds.validate), the estimate (flows.rounds.estimate) and the experiment harness. Every step
loads its
model through `load_encoder` here (a Dask worker of sharded mining through `open_encoder`, by reference), so
there is one place that turns `model:` settings into an encoder, and one that keeps the round's model in memory
between the steps (loaded once per round).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dataio.errors import InputError
from dataio.eval_sets import read_labeled_pairs, read_sts
from dataio.table_files import symlink_loop, table_files
from flows.run.config import RunConfig
from flows.run.config_sections import DEFAULT_MODEL, TableFile
from flows.run.demo_data import build_demo_data
from flows.run.fingerprint import combine, file_fingerprint, folder_listing, path_fingerprint
from flows.run.progress import bars_on
from flows.run.rundir import RunDir, jsonable
from flows.run.step_records import Evaluation, RunInputs
from mining.corpus import CorpusSource, NliSource, PairSource, load_corpus
from mining.encoders import Teacher
from mining.exclusions import read_excluded_pairs
from mining.params import MiningParams
from simcse.evaluation import SimCSEEvaluator, metric_names, primary_score

_log = logging.getLogger("flows")


# ------------------------------------------------------------------------------------------- inputs
def base_model_path(config: RunConfig) -> str:
    """The base model as a folder path when it is the offline default, else as given."""
    if config.model.name_or_path in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from simcse.model import default_model_path  # torch: only when a model is loaded or trained

        return str(default_model_path())
    return config.model.name_or_path


_File = TypeVar("_File", bound=TableFile)


def _present(entry: _File | None, what: str, config: RunConfig | None = None,
             skipped: list[str] | None = None) -> _File | None:
    if entry is None:
        return None
    if not entry.path.exists():
        if symlink_loop(entry.path):  # not "not found", and not skipped as a missing optional file
            raise InputError("a symbolic link loop (its links lead back to themselves); point the link at "
                             "the file or folder meant", path=entry.path)
        if entry.optional:
            message = f"{what} {entry.path} not found; skipped (optional)"
            if skipped is None:
                _log.warning("%s", message)
            else:
                skipped.append(message)
            return None
        base = config.base_folder() if config is not None else None
        where = f"relative paths are read from {base}, the config's folder" if base else "check the path"
        raise InputError(f"{what} file not found; {where}", path=entry.path)
    return entry


def eval_inputs(config: RunConfig, skipped: list[str] | None = None,
                ) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """The evaluation files present (STS, labeled pairs) and, by path, the column maps of those that rename.
    An optional file that is absent is logged as skipped, or said in `skipped` when a list is given (a check)."""
    sts_entries = [e for e in config.eval.sts if _present(e, "eval.sts", config, skipped)]
    pair_entries = [e for e in config.eval.pairs if _present(e, "eval.pairs", config, skipped)]
    columns = {str(e.path): e.columns.model_dump() for e in [*sts_entries, *pair_entries] if e.columns.model_dump()}
    return [str(e.path) for e in sts_entries], [str(e.path) for e in pair_entries], columns


def prepare_inputs(config: RunConfig, run: RunDir, skipped: list[str] | None = None) -> RunInputs:
    """The input files of the run as plain JSON (paths, column names) with their content fingerprints. An optional
    file that is absent is logged as skipped, or said in `skipped` when a list is given (a check).

    For `data.builtin` the demo corpus is built into `<run>/data` first (offline, a few seconds).
    """
    corpus: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    nli: list[dict[str, Any]] = []
    sts, pair_files, eval_columns = eval_inputs(config, skipped)
    if config.data.builtin == "python_docstrings":
        demo = build_demo_data(run.data, max_sentences=config.data.builtin_max_sentences, seed=config.seed)
        _log.info("built-in corpus: %d docstring sentences, %d pairs, %d evaluation pairs in %s",
                 demo.sentences, demo.train_pairs, demo.eval_rows, demo.folder)
        corpus.append({"path": str(demo.corpus), "columns": {"text": "text", "id": "id", "domain": "domain"}})
        pairs.append({"path": str(demo.pairs), "columns": {}})
        pair_files.append(str(demo.eval_pairs))
    for entry, out, what in ((config.data.corpus, corpus, "data.corpus"), (config.data.pairs, pairs, "data.pairs"),
                             (config.data.nli, nli, "data.nli")):
        present = _present(entry, what, config, skipped)
        if present is not None:  # a folder (a corpus that grows between runs): each of its files, in sorted order
            out.extend({"path": str(path), "columns": present.columns.model_dump(), "domain": present.domain_label}
                       for path in table_files(present.path))
    if not corpus and not nli and not pairs:
        raise InputError("no training input is present (all inputs were optional and missing)")
    fingerprinted: list[Any] = [(e["path"], file_fingerprint(e["path"]) if Path(e["path"]).is_file()
                                 else path_fingerprint(e["path"]), e["columns"], e.get("domain"))
                                for e in corpus + pairs + nli]
    exclude = config.mining.exclude_pairs
    if exclude is not None:  # its content, not just its path, decides what a round mines
        if not exclude.is_file():
            base = config.base_folder()
            where = f"relative paths are read from {base}, the config's folder" if base else "check the path"
            raise InputError(f"mining.exclude_pairs: no such file; {where}", path=exclude)

        read_excluded_pairs(exclude)  # a bad row stops the run here, before anything is mined
        fingerprinted.append(("exclude_pairs", file_fingerprint(exclude)))
    fingerprint = combine(fingerprinted)
    eval_fingerprint = combine([path_fingerprint(p) for p in sts], [path_fingerprint(p) for p in pair_files],
                               *([eval_columns] if eval_columns else []))
    return RunInputs(corpus=corpus, pairs=pairs, nli=nli, sts=sts, eval_pairs=pair_files, eval_columns=eval_columns,
                     exclude_pairs=str(exclude) if exclude is not None else None, fingerprint=fingerprint,
                     eval_fingerprint=eval_fingerprint)


def load_mining_corpus(inputs: RunInputs, params: Any = None) -> Any:
    """The mining corpus of the prepared inputs; `params` (the config's mining.params, a MiningParams or a
    mapping of its fields) may turn off `unsupervised_anchors` so that corpus sentences join the pool as
    candidates only."""
    def cols(entry: dict[str, Any], name: str) -> str | None:
        return entry["columns"].get(name)

    corpus = [CorpusSource(Path(e["path"]), text_column=cols(e, "text"), id_column=cols(e, "id"),
                           domain_column=cols(e, "domain"), domain=e.get("domain")) for e in inputs.corpus]
    pairs = [PairSource(Path(e["path"]), anchor_column=cols(e, "anchor"), positive_column=cols(e, "positive"),
                        label_column=cols(e, "label"), domain=e.get("domain")) for e in inputs.pairs]
    nli = [NliSource(Path(e["path"]), anchor_column=cols(e, "anchor"), positive_column=cols(e, "positive"),
                     negative_column=cols(e, "negative"), domain=e.get("domain")) for e in inputs.nli]
    if not isinstance(params, MiningParams):
        params = MiningParams.from_dict(params or {})
    unsupervised = params.unsupervised_anchors
    return load_corpus(corpus, pairs, nli, unsupervised_anchors=unsupervised)


@dataclass
class _Held:
    key: tuple[str, tuple[tuple[str, Any], ...]]  # (folder, settings)
    signature: tuple[tuple[str, int, int], ...]  # the folder's files as they were when the encoder matched them
    encoder: Any


# The one student encoder this process keeps between a round's steps: the round's model is evaluated, then mines
# and trains the next round without being read from disk again (one load per round, not three). Training changes
# weights in place, so the train step takes the encoder out (`take_encoder`) and hands the trained one back under
# the folder it was saved to (`hold_encoder`). A folder whose files changed since is loaded afresh.
_HELD: _Held | None = None


def _held_key(model_path: str | os.PathLike, config: RunConfig) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return os.path.abspath(model_path), tuple(sorted(encoder_settings(config).items()))


def _folder_signature(model_path: str | os.PathLike) -> tuple[tuple[str, int, int], ...] | None:
    """The folder's listing without its model card (a round's card is written after its model is evaluated);
    None for a name that is not a folder (a hub id)."""
    return folder_listing(Path(model_path)) if Path(model_path).is_dir() else None


def load_encoder(model_path: str, config: RunConfig, encode_runtime: str = "torch") -> Any:
    """The encoder in `model_path` with the run's `model:` settings (pooling, lengths, remote code);
    `encode_runtime`: what its `encode` runs on (simcse.runtimes; the mining step passes `mining.encode_runtime`).
    The encoder this process holds is returned when it is that folder's, unchanged; a loaded folder is held."""
    global _HELD
    key, signature = _held_key(model_path, config), _folder_signature(model_path)
    if _HELD is not None and signature is not None and (_HELD.key, _HELD.signature) == (key, signature):
        return _HELD.encoder.use_encode_runtime(encode_runtime)
    encoder = open_encoder(model_path, encode_runtime=encode_runtime, **encoder_settings(config))
    _HELD = _Held(key, signature, encoder) if signature is not None else None
    return encoder


def take_encoder(model_path: str, config: RunConfig) -> Any:
    """`load_encoder(model_path, config)` for a caller that changes its weights (training): no longer held."""
    global _HELD
    encoder = load_encoder(model_path, config)
    _HELD = None
    return encoder


def hold_encoder(model_path: str, config: RunConfig, encoder: Any) -> None:
    """Hold `encoder` as the model saved in `model_path` (the folder it was just saved to, complete)."""
    global _HELD
    encoder.source = str(model_path)  # as `from_pretrained` would name it: the next round's card says "trained from"
    signature = _folder_signature(model_path)
    _HELD = _Held(_held_key(model_path, config), signature, encoder) if signature is not None else None


def release_encoder() -> None:
    """Hold no encoder (a run's end: a long-lived process, e.g. `serve`, keeps no model between runs)."""
    global _HELD
    _HELD = None


_TEACHERS: dict[tuple[str, int], Any] = {}


def teacher_of(config: RunConfig) -> Any:
    """The run's teacher (`mining.encoders.Teacher`), one per folder and length in this process: its content hash
    is computed once, and the model is loaded only when a round's teacher embeddings are not cached yet."""
    settings = config.teacher
    key = (settings.path, settings.max_length or config.model.max_length)
    if key not in _TEACHERS:
        _TEACHERS[key] = Teacher(settings.path, max_length=key[1])
    return _TEACHERS[key]


def encoder_settings(config: RunConfig) -> dict[str, Any]:
    """The run's `model:` settings as `SimCSEEncoder.from_pretrained` takes them: plain, hashable values, so a
    Dask worker can be told how to load the same encoder (`open_encoder`, mining.shards.EncoderRef)."""
    m = config.model
    return {"pooling": m.pooling, "mlp_only_train": m.mlp_only_train, "max_length": m.max_length,
            "trust_remote_code": m.trust_remote_code}


def open_encoder(model_path: str, *, encode_runtime: str = "torch", **settings: Any) -> Any:
    """`SimCSEEncoder.from_pretrained(model_path, **settings)` encoding on `encode_runtime`."""
    from simcse.model import SimCSEEncoder  # torch: only when a model is loaded or trained

    return SimCSEEncoder.from_pretrained(model_path, **settings).use_encode_runtime(encode_runtime)


# --------------------------------------------------------------------------------------- evaluation
def read_eval_sets(inputs: RunInputs) -> tuple[list[Any], list[Any]]:
    """The prepared inputs' STS and labeled-pair files, read and checked (with their column maps)."""
    return read_eval_files(inputs.sts, inputs.eval_pairs, inputs.eval_columns)


def read_eval_files(sts: list[str], pairs: list[str], columns: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """STS and labeled-pair files, read and checked with their column maps (by path)."""
    return ([read_sts(p, columns.get(p)) for p in sts], [read_labeled_pairs(p, columns.get(p)) for p in pairs])


def evaluate_model(model_path: str, inputs: RunInputs, config: RunConfig) -> Evaluation:
    """STS Spearman, pair AP, alignment and uniformity of one model on the run's evaluation files, and its dev
    metric: the evaluator's primary metric, `eval.dev_metric` (default: the first file's)."""
    start = time.perf_counter()
    # The files are read before the model loads: a bad file (or a dev metric naming none) stops at once.
    sts, pairs = read_eval_sets(inputs)
    evaluator = SimCSEEvaluator(sts, pairs, primary_metric=config.eval.dev_metric, show_progress_bar=bars_on())
    sentences = len({s for data in [*sts, *pairs] for s in (*data.sentence1, *data.sentence2)})
    _log.info("evaluating %s: %d sentences of %d evaluation files", model_label(model_path), sentences,
             len(sts) + len(pairs))
    result = evaluator(load_encoder(model_path, config))
    name = evaluator.primary_metric
    dev = {"name": name, "value": primary_score(evaluator, result)} if name else None
    return Evaluation(model=model_path, evaluation=jsonable(result), dev_metric=jsonable(dev),
                      eval_keys=eval_keys(inputs, config, sts, pairs), seconds=time.perf_counter() - start)


def model_label(model_path: str | os.PathLike) -> str:
    """A model as a step's log line names it: `round 2's model` for a round's folder, else its path or name."""
    path = Path(model_path)
    if path.name == "model" and path.parent.name.isdigit() and path.parent.parent.name == "rounds":
        return f"round {path.parent.name}'s model"
    return str(model_path)


def eval_keys(inputs: RunInputs, config: RunConfig, sts: list[Any], pairs: list[Any]) -> dict[str, str]:
    """What each per-file score of an evaluation was measured on, by metric name (`sts/<stem>`, `pairs/<stem>`):
    the file's bytes, its column map and the `model:` settings that change an embedding (pooling, lengths, ...).
    The same model scored under the same key gives the same score up to float noise, so the registry compares a
    version's recorded scores with a later run's evaluation of it only where the keys agree
    (flows.registry.promotion)."""
    settings = config.model.model_dump(mode="json", exclude={"name_or_path"})
    paths = [*inputs.sts, *inputs.eval_pairs]
    return {metric: combine(path_fingerprint(path), inputs.eval_columns.get(path), settings)
            for metric, path in zip(metric_names(sts, pairs), paths)}


def describe_evaluation(evaluated: Evaluation) -> str:
    ev = evaluated.evaluation
    parts = [f"STS {k} {v:.2f}" for k, v in (ev.get("sts") or {}).items()]
    parts += [f"AP {k} {v:.2f}" for k, v in (ev.get("pairs") or {}).items()]
    for name in ("alignment", "uniformity"):
        if ev.get(name) is not None:
            parts.append(f"{name} {ev[name]:.3f}")
    return ", ".join(parts) or "no evaluation files"
