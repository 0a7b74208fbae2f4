"""CurriculumState: the small JSON document a run resumes from (written after every change)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from curriculum.errors import StateError
from dataio.atomic import atomic_write_text
from dataio.errors import load_json_model

STATE_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """What to train on now: competence, band mixture (band -> probability) and alpha (band -> weight)."""

    round: int | None
    stage: int
    competence: float
    mixture: dict[str, float] = field(default_factory=dict)
    alpha: dict[str, float] = field(default_factory=dict)


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["start_round", "step", "advance", "hold", "end_round"]
    round: int | None
    step: int
    stage: int
    competence: float
    mixture: dict[str, float]
    alpha: dict[str, float]
    dev_metric: float | None = None
    train_accuracy: float | None = None
    reason: str | None = None


class CurriculumState(BaseModel):
    """Everything needed to continue a run exactly where it stopped."""

    model_config = ConfigDict(extra="forbid")
    version: int = STATE_VERSION
    config: dict[str, Any] = Field(default_factory=dict, description="the curriculum settings the run started with")
    stage: int = Field(0, ge=0, description="pacing units advanced so far (t)")
    competence: float = 0.0
    mixture: dict[str, float] = Field(default_factory=dict)
    alpha: dict[str, float] = Field(default_factory=dict)
    difficulties: dict[str, float] = Field(default_factory=dict, description="the current round's measured difficulty")
    round: int | None = None
    round_open: bool = False
    step: int = Field(0, ge=0, description="training batches reported so far, all rounds")
    round_steps: int = Field(0, ge=0)
    holds: int = Field(0, ge=0, description="adaptive holds in a row")
    last_dev_metric: float | None = None
    best_dev_metric: float | None = None
    baseline_dev_metric: float | None = Field(None, description="the starting model's dev metric (round 0's "
                                                                "reference in adaptive mode)")
    history: list[HistoryEntry] = Field(default_factory=list)
    sampler: dict[str, Any] | None = Field(None, description="TripletSampler.state_dict() of the open round")

    def to_json(self) -> str:
        # json (not pydantic's serialiser) so floats keep Python's round-tripping repr.
        return json.dumps(self.model_dump(mode="python"), indent=1, sort_keys=False, allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Atomic: a reader (or a resumed run) sees the old or the new document, never half of one."""
        atomic_write_text(path, self.to_json(), fsync=True)

    @classmethod
    def load(cls, path: str | Path) -> CurriculumState:
        path = Path(path)
        if not path.is_file():
            raise StateError(f"{path}: no curriculum state to resume from")
        state = load_json_model(path, cls, StateError, "delete it to start the curriculum over")
        if state.version != STATE_VERSION:
            raise StateError(f"{path}: state version {state.version}, this code reads {STATE_VERSION}")
        return state

