"""Curriculum settings (pydantic), with errors that name the key.

`parse_config({...})` validates the `curriculum:` section of a run's config.yaml and raises
`ConfigError("curriculum.pacing: unknown 'sqroot'; expected one of linear, root, geometric, step")`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from curriculum.alpha import AlphaSchedule
from curriculum.errors import ConfigError
from curriculum.pacing import Pacing
from dataio.errors import describe_validation_error
from dataio.triplet_layout import DEFAULT_ALPHA, BandName, DifficultyMeasure


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class MixtureConfig(_Strict):
    floor: float = Field(0.1, ge=0.0, lt=1.0, description="probability kept on the random band")
    floor_band: BandName = "random"
    tilt: float = Field(1.0, ge=0.0, le=20.0, description="how strongly harder bands are weighted up as c grows")
    bands: list[BandName] | None = Field(None, description="schedule only these bands (default: all with rows)")


class AlphaRange(_Strict):
    start: float
    end: float


class AlphaConfig(_Strict):
    start: float = DEFAULT_ALPHA  # constant plain SimCSE unless the config ramps it
    end: float = DEFAULT_ALPHA
    per_band: dict[BandName, AlphaRange] = Field(default_factory=dict)


class AdaptiveConfig(_Strict):
    accuracy_threshold: float = Field(0.8, ge=0.0, le=1.0, description="train accuracy needed to advance")
    tolerance: float = Field(0.0, ge=0.0, description="how far the dev metric may fall and still count as not fallen")
    compare_to: Literal["previous", "best"] = "previous"
    max_holds: int | None = Field(None, ge=1, description="advance anyway after this many holds in a row")


class StaticConfig(_Strict):
    weights: dict[BandName, float] = Field(description="fixed band weights, renormalised over bands with rows")

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be >= 0")
        if sum(weights.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return weights


class CurriculumConfig(_Strict):
    mode: Literal["paced", "adaptive", "static"] = "paced"
    pacing: Literal["linear", "root", "geometric", "step"] = "root"
    unit: Literal["step", "round"] = "round"
    total: int | Literal["auto"] = Field(
        "auto", description="the unit (step or round, counted from 0) at which competence reaches 1; auto: the "
                            "run's last step or round (`resolved`), so the hardest stage is always trained on")
    order: Literal["easy_to_hard", "hard_to_easy", "shuffled"] = Field(
        "easy_to_hard", description="the order the stages are visited in: the curriculum, its reverse (an "
                                    "anti-curriculum), or a seeded shuffle (the same stages, so the same band "
                                    "mix and alpha on average, in no order: the control for order)")
    shuffle_seed: int | None = Field(None, ge=0, description="seed of the shuffled order (default: the run's seed)")
    c0: float = Field(0.1, gt=0.0, le=1.0, description="initial competence")
    root_power: float = Field(2.0, gt=0.0)
    step_count: int = Field(4, ge=1)
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)
    alpha: AlphaConfig = Field(default_factory=AlphaConfig)
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    static: StaticConfig | None = Field(None, validate_default=True)
    difficulty: DifficultyMeasure = Field(
        "student", description="what orders the bands easy to hard: their mean anchor-negative cosine by the "
                               "student (the encoder that mined the round) or by the run's teacher (needs a teacher; "
                               "with the graded bands, the teacher's grades)")

    @field_validator("unit")
    @classmethod
    def _adaptive_per_round(cls, unit: str, info: ValidationInfo) -> str:
        if info.data.get("mode") == "adaptive" and unit != "round":
            raise ValueError("adaptive mode decides once per round from the dev metric; set unit: round")
        return unit

    @field_validator("total")
    @classmethod
    def _positive_total(cls, total: int | str) -> int | str:
        if isinstance(total, int) and total < 1:
            raise ValueError("total must be >= 1 or 'auto'")
        return total

    @field_validator("order")
    @classmethod
    def _adaptive_in_order(cls, order: str, info: ValidationInfo) -> str:
        if info.data.get("mode") == "adaptive" and order != "easy_to_hard":
            raise ValueError("adaptive mode advances through the stages in order; use order: easy_to_hard")
        return order

    @field_validator("static")
    @classmethod
    def _static_needs_weights(cls, static: StaticConfig | None, info: ValidationInfo) -> StaticConfig | None:
        if info.data.get("mode") == "static" and static is None:
            raise ValueError("static mode needs static.weights, e.g. {nearest_neighbour: 1.0}")
        return static

    @model_serializer(mode="wrap")
    def _difficulty_when_not_the_student(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`difficulty` is dumped only when it is not the default, so the curriculum state and fingerprints of
        runs recorded before it existed stay valid."""
        out = handler(self)
        if self.difficulty == "student":
            out.pop("difficulty", None)
        return out

    def resolved(self, rounds: int, steps_per_round: int, seed: int = 0) -> CurriculumConfig:
        """This config for a run of `rounds` x `steps_per_round`: `total: auto` becomes the index of the run's
        last unit (competence 1 on the last step or round) and an unset shuffle seed the run's seed."""
        update: dict[str, Any] = {}
        if self.total == "auto":
            units = rounds * steps_per_round if self.unit == "step" else rounds
            update["total"] = max(1, units - 1)
        if self.order == "shuffled" and self.shuffle_seed is None:
            update["shuffle_seed"] = int(seed)
        return self.model_copy(update=update) if update else self

    @property
    def total_units(self) -> int:
        if self.total == "auto" and self.mode == "static":
            return 1  # a static schedule has no stages to pace
        if self.total == "auto":
            raise ConfigError("curriculum.total is 'auto': resolve it for the run first "
                              "(CurriculumConfig.resolved(rounds, steps_per_round); the flows do)")
        return int(self.total)

    def make_pacing(self) -> Pacing:
        return Pacing(kind=self.pacing, total=self.total_units, c0=self.c0, power=self.root_power,
                      steps=self.step_count)

    def stage_order(self) -> list[int]:
        """The stage visited at each unit 0..total: identity, reversed or a seeded permutation."""
        stages = list(range(self.total_units + 1))
        if self.order == "hard_to_easy":
            return stages[::-1]
        if self.order == "shuffled":
            import numpy as np

            rng = np.random.default_rng([int(self.shuffle_seed or 0), self.total_units])
            return [int(x) for x in rng.permutation(len(stages))]
        return stages

    def make_alpha(self) -> AlphaSchedule:
        per_band = {b: (r.start, r.end) for b, r in self.alpha.per_band.items()}
        return AlphaSchedule(start=self.alpha.start, end=self.alpha.end, c0=self.c0, per_band=per_band)


def parse_config(data: Mapping[str, Any] | None, prefix: str = "curriculum") -> CurriculumConfig:
    """Validate a `curriculum:` mapping; raise `ConfigError` with a one-line message naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return CurriculumConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix, CurriculumConfig)) from None


def format_validation_error(err: ValidationError, prefix: str = "curriculum",
                            model: type[BaseModel] | None = None) -> str:
    """One line for a pydantic error: `prefix.key.sub: what is wrong` (+ how many more errors)."""
    key, message = describe_validation_error(err, prefix, model)
    return f"{key}: {message}"
