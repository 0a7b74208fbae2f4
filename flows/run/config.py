"""A run's settings: one YAML file, validated by pydantic, with errors that name the key and its line.

Paths in the file resolve relative to the YAML file's folder, so a config travels with its data.
`{data_dir}` at the start of a path stands for the shared data folder (`$SIMCSE_DATA_DIR`, else
`../shared/data` beside the repository). Bad settings raise `dataio.errors.InputError`
(`configs/x.yaml: line 12: curriculum.pacing: unknown 'sqroot'; expected one of ...`), exit code 2.

One typed tree: the sections a package owns are that package's own model, embedded here, not copied
(`curriculum:` curriculum.config.CurriculumConfig, `mining.params:` mining.params.MiningParams, `training:`
simcse.train_config.TrainConfig), and the column names each input is read under come from
dataio.tables.COLUMN_ALIASES, the table every loader uses. The sections themselves are
`flows.run.config_sections`; this module holds the run's own settings and reads the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from curriculum.config import CurriculumConfig
from dataio.errors import InputError, InputErrors, describe_validation_errors
from dataio.tables import data_dir
from flows.run.config_sections import (
    AsWritten,
    DataSettings,
    EvalSettings,
    MiningSettings,
    ModelSettings,
    RegistrySettings,
    RetentionSettings,
    RunTraining,
    StrictSettings,
    TeacherSettings,
    TrackingSettings,
)
from flows.run.config_yaml import key_lines, line_for, parse_yaml, read_yaml
from flows.run.locations import is_uri

# Sections that say where a run is tracked, where its model is registered and how long old runs are kept, not what
# it computes.
OPERATIONAL_SECTIONS = ("tracking", "registry", "retention")
# Mining settings that say how mining is spread over processes, not what it computes (shards give the
# triplets of one process): like the sections above, left out of the run's fingerprint and cache keys.
OPERATIONAL_MINING = ("shards", "engine", "cluster")
# Where the teacher's vectors are kept across runs (mining.vector_store): a place to read from, not a setting of
# what the run computes.
OPERATIONAL_TEACHER = ("vectors",)


class RunConfig(StrictSettings):
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
        if self.mining.params.needs_teacher and self.teacher is None:
            raise ValueError(f"mining.params.positive_judge: {self.mining.params.positive_judge} judges mined "
                             f"positives with the run's teacher: give teacher: {{path: ...}} or set "
                             f"positive_judge: student")
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
                                                     "mining": set(OPERATIONAL_MINING),
                                                     "teacher": set(OPERATIONAL_TEACHER), **self._unset_new_sections()})

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
    if isinstance(data.get("teacher"), dict) and isinstance(data["teacher"].get("vectors"), (str, Path)):
        data["teacher"] = {**data["teacher"], "vectors": _expand(str(data["teacher"]["vectors"]), base)}
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
