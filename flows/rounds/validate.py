"""Check everything a run reads before anything is written: `simcse-curriculum validate`, `run --dry-run`,
and the first thing every run does.

A run used to find a wrong column inside the flow, after Prefect had started and the base model had been
evaluated, and the folder it left (config.yaml, base_metrics.json, .prefect/) then refused the corrected
config. Here, before the run folder is touched: the run folder (a different run there is refused), the
base model (a folder, or a name in the local Hugging Face cache when offline), every input file, column,
label and row (read with the loaders the run itself uses: `flows.run.inputs.prepare_inputs`,
`load_mining_corpus`, `read_eval_sets`, so there is one copy of each rule), the dev metric,
and the bands against the curriculum (`curriculum.preview`: a band that is mined every round but never
trained on is a warning naming the setting). Bad input raises `InputError` (one line, exit code 2).

The result is kept per process for the same settings and unchanged files, so the check the CLI runs before
starting Prefect is not repeated by the flow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curriculum.preview import preview_schedule
from dataio.column_specs import check_columns
from dataio.errors import InputError, InputErrors, did_you_mean
from dataio.folder_lock import check_free, held_folders
from dataio.table_files import symlink_loop, table_files
from dataio.tables import read_header
from flows.registry.mlflow_store import check_database, require_mlflow, store_for
from flows.registry.warm_start import resolve_start
from flows.run.config import RunConfig
from flows.run.inputs import base_model_path, eval_inputs, load_mining_corpus, prepare_inputs, read_eval_files
from flows.run.output_folder import check_run_folder
from flows.run.rundir import RunDir
from flows.run.scheduled_folders import manual_run_warning
from mining.bands import available_bands
from mining.corpus import check_size
from mining.encoders import Teacher
from simcse.evaluation import closest_metric, metric_names

_log = logging.getLogger("flows")

# Bands the built-in docstring corpus allows: it has domains and pairs but no NLI triplets.
BUILTIN_BANDS = ["random", "in_domain", "nearest_neighbour"]


@dataclass
class RunCheck:
    """What a run will read and do, as far as it is known before anything runs."""

    config: RunConfig
    bands: list[str]  # mined every round
    schedule: Any  # curriculum.preview.SchedulePreview
    corpus: Any = None  # mining.corpus.MiningCorpus (None for the built-in corpus, built at run time)
    eval_rows: dict[str, int] = field(default_factory=dict)  # "sts/<stem>" or "pairs/<stem>" -> rows
    eval_sentences: int = 0  # distinct sentences in the evaluation files
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumes: bool = False  # the run folder holds this run already

    def summary(self) -> dict[str, Any]:
        """Plain JSON: what `validate --json` prints."""
        corpus = self.corpus.describe() if self.corpus is not None else None
        return {"config": str(self.config.source) if self.config.source else None,
                "run_dir": str(self.config.output_dir), "resumes": self.resumes, "corpus": corpus,
                "eval": self.eval_rows, "bands": self.bands,
                "schedule": [{"round": r.round, "competence": [r.competence_start, r.competence_end],
                              "share": r.share} for r in self.schedule.rounds],
                "warnings": self.warnings, "notes": self.notes}

    def lines(self) -> list[str]:
        """A few lines for a person: what is read, what each round mines, what the curriculum trains on."""
        cfg = self.config
        out = [f"run folder: {cfg.output_dir} ({'resumes the run there' if self.resumes else 'new'})"]
        if self.corpus is None:
            out.append(f"data: the built-in docstring corpus (up to {cfg.data.builtin_max_sentences} sentences, "
                       f"built at run time)")
        else:
            for src in self.corpus.sources:
                dropped = [f"{n} {what}" for n, what in ((src.empty, "empty"), (src.duplicates, "duplicate"),
                                                         (src.missing_negative, "without a negative"),
                                                         (src.label_0, "labeled 0 (not paraphrases)")) if n]
                out.append(f"{src.kind} {src.path}: {src.rows} rows, {src.kept} kept"
                           + (f"; dropped: {', '.join(dropped)}" if dropped else ""))
            info = self.corpus.describe()
            kinds = info["anchor_rows"]
            domains = info["domains"]
            out.append(f"pool: {info['pool']} distinct sentences; anchors: {kinds['pair']} pairs, {kinds['nli']} NLI, "
                       f"{kinds['unsupervised']} unsupervised; "
                       + (f"{len(domains)} domain labels" if domains else "no domain labels"))
        out.append("evaluation: " + (", ".join(f"{k} ({n} rows)" for k, n in self.eval_rows.items())
                                     or "none (no dev metric: every round's model counts the same)"))
        out.append(f"each round mines: {', '.join(self.bands)}")
        for r in self.schedule.rounds:
            share = ", ".join(f"{b} {p:.2f}" for b, p in r.share.items())
            competence = (f"{r.competence_start:.2f}" if abs(r.competence_end - r.competence_start) < 5e-3
                          else f"{r.competence_start:.2f}-{r.competence_end:.2f}")
            out.append(f"round {r.round}: competence {competence}, planned share {share}")
        return out


_CHECKED: dict[str, RunCheck] = {}


def _stat(path: Any) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _memo_key(config: RunConfig) -> str:
    """The settings plus the size and change time of every file the check read."""
    files = [e.path for e in (config.data.corpus, config.data.pairs, config.data.nli) if e is not None]
    files += [p for f in files if f.is_dir() for p in sorted(f.rglob("*"))]  # a folder's files, added or changed
    files += [e.path for e in (*config.eval.sts, *config.eval.pairs)]
    files += [config.mining.exclude_pairs] if config.mining.exclude_pairs else []
    files.append(Path(config.output_dir) / "config.yaml")
    payload = json.dumps([config.model_dump(mode="json"), [_stat(f) for f in files]], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def check_run(config: RunConfig, announce: bool = False) -> RunCheck:
    """Check the run `config` describes without writing anything; InputError on the first problem. `announce`:
    log the step's start (a run's first line), when the check is not already done for these settings and files."""
    if config.registry is not None:  # the run starts from the registry's current version (flows.registry.warm_start)
        require_mlflow()
        config = resolve_start(config, for_run=False).config
    key = _memo_key(config)
    if key in _CHECKED:
        return _CHECKED[key]
    if announce:
        _log.info("checking the config and every input file (columns, labels, rows) before anything is written")
    warnings: list[str] = []
    notes: list[str] = []
    resumes = _check_run_folder(config)
    _check_scheduled_output(config, warnings)
    _check_tracking(config)
    _check_encode_runtime(config)
    _check_engine(config)
    _check_paths_and_columns(config)
    _check_model(config, notes)
    _check_teacher(config)
    try:
        corpus, eval_sets = _read_inputs(config, warnings)
    except InputError as exc:
        raise _naming_the_setting(exc, config) from None
    eval_rows, eval_sentences = _check_eval_metric(config, eval_sets)
    bands, with_rows = _bands(config, corpus, warnings, notes)
    schedule = _check_schedule(config, with_rows, warnings, notes)
    check = RunCheck(config=config, bands=bands, schedule=schedule, corpus=corpus, eval_rows=eval_rows,
                     eval_sentences=eval_sentences, warnings=warnings, notes=notes, resumes=resumes)
    _CHECKED[key] = check
    return check


def _read_inputs(config: RunConfig, warnings: list[str]) -> tuple[Any, tuple[list[Any], list[Any]]]:
    """Every input file read with the run's own loaders: (the mining corpus or None, the STS and labeled-pair
    evaluation sets)."""
    corpus = None
    if config.data.builtin:
        eval_sets = read_eval_files(*eval_inputs(config, warnings))  # the corpus is built at run time
    else:
        inputs = prepare_inputs(config, RunDir(Path(config.output_dir)), skipped=warnings)
        corpus = load_mining_corpus(inputs, config.mining.params)
        check_size(corpus, config.mining.params.num_negatives)
        if corpus.n_anchor_rows < config.batch_size:  # the sampler never repeats a sentence within a batch
            raise InputError(f"batch_size: {config.batch_size} rows is more than the {corpus.n_anchor_rows} anchors "
                             f"the inputs give (a batch never repeats a sentence); lower batch_size",
                             path=config.source)
        _check_domain_label(config, warnings)
        eval_sets = read_eval_files(inputs.sts, inputs.eval_pairs, inputs.eval_columns)
    return corpus, eval_sets


def _input_entries(config: RunConfig) -> list[tuple[str, Any, str]]:
    """(config key, entry, kind of input as `dataio.tables.INPUT_COLUMNS` names it) of every input file."""
    entries: list[tuple[str, Any, str]] = [(f"data.{k}", getattr(config.data, k), k)
                                           for k in ("corpus", "pairs", "nli")]
    entries += [(f"eval.sts[{i}]", e, "sts") for i, e in enumerate(config.eval.sts)]
    entries += [(f"eval.pairs[{i}]", e, "labeled_pairs") for i, e in enumerate(config.eval.pairs)]
    return [(k, e, kind) for k, e, kind in entries if e is not None]


def _naming_the_setting(exc: InputError, config: RunConfig) -> InputError:
    """A data file's error (which names the file, line and column) plus the config key that reads the file and
    the line of the config where it is written."""
    path = str(exc.path) if exc.path is not None else None
    key = next((k for k, e, _ in _input_entries(config) if path is not None
                and (str(e.path) == path or Path(path).is_relative_to(e.path))), None)  # a folder's file too
    if key is None or config.source is None:
        return exc
    setting = f"{key}.columns" if exc.column is not None else key
    line = config.line_of(setting)
    return InputError(f"{exc} (read as {setting} of {config.source}{f', line {line}' if line else ''})")


def missing_path(config: RunConfig, key: str, path: Path) -> InputError:
    """A path the config names that is not there: the config's file, line and key, the closest name in that
    folder, and the folder relative paths are read from."""
    path = Path(path)
    if symlink_loop(path):  # exists() is False for a loop too: say what it is, not "not found"
        return InputError("a symbolic link loop (its links lead back to themselves); point the link at the file or "
                          f"folder meant (read as {key} of {config.source})", path=path)
    near = did_you_mean(path.name, [c.name for c in path.parent.iterdir()]) if path.parent.is_dir() else ""
    base = config.base_folder()
    where = (f"; relative paths are read from {base}, the folder of {config.source.name}" if base is not None
             and config.source is not None else "; check the path")
    install = (f"; to install all-mpnet-base-v2 there: pip install 'simcse-curriculum[teacher]', then "
               f"simcse-curriculum teacher install --out {path} (README, 'A stronger teacher'); or run without a "
               f"teacher: remove `teacher:` and mining.params' mined_positives" if key == "teacher.path" else "")
    return InputError(f"{key}: not found: {path}{near}{where}{install}", path=config.source,
                      line=config.line_of(key))


def _check_paths_and_columns(config: RunConfig) -> None:
    """Every path the config names that is missing, and every column problem of every input file (from the
    files' headers: `dataio.column_specs.check_columns`), reported at once, before any file is read whole; a team with
    wrong relative paths, or an export's different column names, learns all of them from one try."""
    problems: list[InputError] = []
    for key, entry, kind in _input_entries(config):
        if not entry.path.exists():
            if not entry.optional:  # an optional one that is absent is a warning (flows.run.inputs)
                problems.append(missing_path(config, f"{key}.path", entry.path))
            continue
        try:
            for file in table_files(entry.path):
                check_columns(file, kind, entry.columns.model_dump())
        except InputError as exc:
            problems.append(_naming_the_setting(exc, config))
    others = [("mining.exclude_pairs", config.mining.exclude_pairs),
              ("teacher.path", Path(config.teacher.path) if config.teacher is not None else None)]
    model = Path(base_model_path(config))
    others.append(("model.name_or_path", model if model.is_absolute() else None))  # a folder, not a hub name
    problems += [missing_path(config, key, path) for key, path in others if path is not None and not path.exists()]
    vectors = Path(config.teacher.vectors) if config.teacher is not None and config.teacher.vectors else None
    if vectors is not None and vectors.exists() and not vectors.is_dir():
        problems.append(InputError(f"teacher.vectors: {vectors} is a file; name a folder (created when missing) "
                                   f"where the teacher's vectors are kept", path=config.source,
                                   line=config.line_of("teacher.vectors")))
    if problems:
        raise InputErrors.of(problems)


# ------------------------------------------------------------------------------------------ the checks
def _check_scheduled_output(config: RunConfig, warnings: list[str]) -> None:
    """A run made by hand in the output_dir of scheduled runs (flows.run.scheduled_folders.manual_run_warning)."""
    warning = manual_run_warning(config)
    if warning is not None:
        warnings.append(warning)


def _check_run_folder(config: RunConfig) -> bool:
    """True when the folder holds this run (a resume). Refused now, with the line `run` gives, not after Prefect
    has started: a folder another command holds (`dataio.folder_lock.check_free`), a folder that is not a run
    folder, the user's own `config.yaml` included (`flows.run.output_folder.check_run_folder`), and a run with other
    settings (`RunDir.check_claim`). A folder this process holds was checked when it was locked (OutputFolder):
    it holds this command's own files by now (run.log, cache/), not yet its config.yaml."""
    root = Path(config.output_dir)
    if root.resolve() not in held_folders():
        check_free(root)
        check_run_folder(root)
    run = RunDir(root)
    if not run.config_path.is_file():
        return False
    run.check_claim(config)
    return True


def _check_tracking(config: RunConfig) -> None:
    """`tracking.enabled` needs MLflow (an optional extra) and a tracking store that can be opened: say so now,
    not after the base model's evaluation. A damaged store (`mlflow.db` truncated, overwritten, empty) refuses the
    run rather than running it untracked: the team asked for every run in MLflow, and a run missing from it is
    found out late; moving the file aside or restoring it takes a minute, and nothing is lost by waiting."""
    if config.tracking.enabled:
        require_mlflow()
        store = store_for(config)
        if store is not None and store.folder is not None:
            check_database(store.folder)


def _check_encode_runtime(config: RunConfig) -> None:
    """`mining.encode_runtime: openvino` needs the openvino package (an optional extra): say so now, not when the
    first round is mined."""
    runtime = config.mining.encode_runtime
    if runtime == "torch":  # the default needs nothing more, and checking it costs no torch import here
        return
    # torch: only when a model is loaded or trained
    from simcse.runtimes import RUNTIME_INSTALL_HINT, missing_runtime_package

    package = missing_runtime_package(runtime)
    if package is not None:
        raise InputError(f"mining.encode_runtime: {runtime} needs the {package} package; {RUNTIME_INSTALL_HINT} "
                         f"or use torch", path=config.source)


def _check_engine(config: RunConfig) -> None:
    """`mining.engine: ray` needs the ray package (an optional extra): say so now, not when the first round is
    mined."""

    if config.mining.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise InputError("mining.engine: ray needs the ray package; pip install 'simcse-curriculum[ray]', or use "
                         "dask", path=config.source)


def _check_model(config: RunConfig, notes: list[str]) -> None:
    """The base model is a model folder, or (offline) a name in the local Hugging Face cache."""
    name = base_model_path(config)
    path = Path(name)
    if path.is_absolute() or path.exists():
        if not path.is_dir():
            raise InputError("model.name_or_path: no such model folder; check the path in the config", path=path)
        if not ((path / "config.json").is_file() or (path / "modules.json").is_file()):
            raise InputError("model.name_or_path: not a model folder (no config.json or modules.json)", path=path)
        return
    from huggingface_hub import try_to_load_from_cache  # huggingface_hub: only to look in the hub's local cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a name that is not a valid repository id
        cached = None
    if isinstance(cached, str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise InputError(f"model.name_or_path: {name!r} is not a folder and not in the local Hugging Face cache "
                         f"(offline); give a model folder", path=config.source)
    notes.append(f"model {name!r} is not in the local Hugging Face cache; the run will download it")


def _check_teacher(config: RunConfig) -> None:
    """The teacher is a model folder (it is never downloaded); `teacher.path` names the setting to fix."""
    if config.teacher is None:
        return

    try:
        Teacher(config.teacher.path)
    except InputError as exc:
        raise InputError(f"teacher.path: {exc}") from None


def _check_domain_label(config: RunConfig, warnings: list[str]) -> None:
    """A constant domain label that is also a column name is most likely meant as the column."""
    entry = config.data.corpus
    if entry is None or entry.domain_label is None or not entry.path.exists():
        return

    if entry.domain_label in read_header(table_files(entry.path)[0]):
        warnings.append(f"data.corpus.domain_label: every row is labeled {entry.domain_label!r}, which is also a "
                        f"column of {entry.path}; to read each row's domain from that column write "
                        f"`columns: {{domain: {entry.domain_label}}}` instead")


def _check_eval_metric(config: RunConfig, eval_sets: tuple[list[Any], list[Any]]) -> tuple[dict[str, int], int]:
    """The evaluation files' rows by metric name; the dev metric must name one of them."""
    sts, pairs = eval_sets
    rows = {name: len(data.sentence1) for name, data in zip(metric_names(sts, pairs), [*sts, *pairs])}
    choice = config.eval.dev_metric
    builtin = {"pairs/eval_pairs"} if config.data.builtin else set()  # built at run time
    if choice and choice not in rows and choice not in builtin:
        raise InputError(f"eval.dev_metric: {choice!r} names no evaluation file{closest_metric(choice, rows)}; the "
                         f"files give {', '.join(sorted(rows)) or 'none'}", path=config.source,
                         line=config.line_of("eval.dev_metric"))
    sentences = {s for data in [*sts, *pairs] for s in (*data.sentence1, *data.sentence2)}
    return rows, len(sentences)


def _bands(config: RunConfig, corpus: Any, warnings: list[str], notes: list[str]) -> tuple[list[str], list[str]]:
    """The bands each round mines (mining's own default: every band the inputs allow), and those of them that
    can have rows."""
    if corpus is None:
        available = BUILTIN_BANDS
    else:
        available = available_bands(corpus)
    chosen = list(dict.fromkeys(config.mining.bands)) if config.mining.bands else list(available)
    if "nli_contradiction" in chosen and "nli_contradiction" not in available:
        warnings.append("mining.bands: nli_contradiction will have no rows: it needs NLI triplets with a negative "
                        "(data.nli); leave it out of mining.bands")
    if corpus is not None and "in_domain" in chosen and len({d for d in corpus.domains if d}) < 2:
        notes.append("in_domain: fewer than two domain labels, so mining groups the sentences by k-means clusters "
                     "(a domain column is read with data.corpus.columns.domain)")
    return chosen, [b for b in chosen if b in available]


def _check_schedule(config: RunConfig, bands: list[str], warnings: list[str], notes: list[str]) -> Any:
    """Run the curriculum over the planned rounds and steps (no data); name each mined band it never trains on."""
    try:
        schedule = preview_schedule(config.curriculum, bands, config.rounds, config.steps_per_round)
    except ValueError as exc:
        raise InputError(f"curriculum: {exc}", path=config.source) from None
    if config.negatives == "in_batch":
        notes.append("negatives: in_batch trains on no mined negative (the plain SimCSE baseline); the bands are "
                     "mined for comparison only")
        return schedule
    pacing_fix: str | None = None
    for unused in schedule.unused_bands(config.batch_size, config.negatives_per_anchor):
        fix = f"leave {unused.band} out of mining.bands to save mining it"
        if unused.cause == "pacing":
            pacing_fix = pacing_fix or _pacing_fix(config, bands)
            fix = (f"{pacing_fix or 'a smaller curriculum.total'}; or {fix} (assuming the usual difficulty order "
                   f"random < in_domain < nli_contradiction < nearest_neighbour; the run orders the bands by their "
                   f"measured difficulty)")
        warnings.append(f"band {unused.band} is mined every round but never trained on: {unused.why}; {fix}")
    return schedule


def _pacing_fix(config: RunConfig, bands: list[str]) -> str | None:
    """The curriculum setting that makes the schedule reach every band, checked by running the preview with it:
    `total: auto` where a `total` beyond the run was given, else `unit: step` where competence grows per round
    (a one-round run stays at c0 all its round: `total: auto`, already on, counts rounds); None when neither does."""
    cfg = config.curriculum
    units = config.rounds * config.steps_per_round if cfg.unit == "step" else config.rounds
    candidates = []
    if cfg.total != max(1, units - 1):
        candidates.append(({"total": "auto"}, f"curriculum.total: auto reaches competence 1 on the run's last "
                                              f"{cfg.unit}"))
    if cfg.unit == "round" and cfg.mode != "adaptive":
        auto = cfg.total == max(1, units - 1)
        advice = (f"set curriculum: {{unit: step{'' if auto else ', total: auto'}}}: competence then grows every step "
                  f"and reaches 1 on the run's last one (step {config.rounds * config.steps_per_round - 1}), so "
                  + ("the one round goes from easy to hard bands" if config.rounds == 1 else
                     "the rounds move from easy to hard bands within them"))
        if auto and config.rounds == 1:
            advice += (" (curriculum.total: auto is on already, but it counts rounds, and one round never leaves "
                       "the first)")
        candidates.append(({"unit": "step", "total": "auto"}, advice))
    for update, advice in candidates:
        trial = cfg.model_copy(update=update).resolved(config.rounds, config.steps_per_round, config.seed)
        preview = preview_schedule(trial, bands, config.rounds, config.steps_per_round)
        if not [u for u in preview.unused_bands(config.batch_size, config.negatives_per_anchor)
                if u.cause == "pacing"]:
            return advice
    return None
