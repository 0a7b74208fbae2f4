"""CurriculumScheduler: competence, band mixture and alpha over a run, advanced per step or per round.

One class for every schedule so experiments compare like with like:
- paced:    competence follows the pacing function, one unit per training step or per round;
- adaptive: one unit per round, but only when the dev metric did not fall and the train accuracy
            (positive ranked first) reached the threshold; otherwise the stage is held (self-paced);
- static:   a constant mixture and alpha (one band, or a fixed mix); the stage still counts, for the record.
Every change is written to the state file at once (atomically), so a killed run resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curriculum.config import CurriculumConfig
from curriculum.errors import StateError
from curriculum.mixture import curriculum_mixture, static_mixture, usable_difficulties
from curriculum.state import CurriculumState, HistoryEntry, Plan

# Per-step pacing changes competence a little every step; history keeps a point each time it moved by
# this much (plus every round start/end), so state.json stays small and cheap to rewrite every step.
HISTORY_RESOLUTION = 0.01


@dataclass(frozen=True)
class Decision:
    """What `end_round` decided: advanced or held, and why."""

    advanced: bool
    reason: str
    stage: int
    competence: float


class CurriculumScheduler:
    def __init__(self, config: CurriculumConfig, state: CurriculumState | None = None,
                 state_path: str | Path | None = None) -> None:
        self.config = config
        self.pacing = config.make_pacing()
        self.stages = config.stage_order()
        self.alpha_schedule = config.make_alpha()
        self.state_path = Path(state_path) if state_path is not None else None
        snapshot = config.model_dump(mode="json")
        if state is None:
            state = CurriculumState(config=snapshot, competence=self.pacing(self.stages[0]))
            self.state = state
            self._refresh()
        else:
            if state.config and state.config != snapshot:
                changed = sorted(k for k in set(state.config) | set(snapshot) if state.config.get(k) != snapshot.get(k))
                raise StateError(f"curriculum state was written with different settings ({', '.join(changed)}); "
                                 f"use the run's original curriculum config or start a new run")
            self.state = state

    @classmethod
    def resume(cls, config: CurriculumConfig, state_path: str | Path) -> CurriculumScheduler:
        """Continue from `state_path` if it exists, else start fresh; every change is saved there."""
        path = Path(state_path)
        state = CurriculumState.load(path) if path.exists() else None
        return cls(config, state, state_path=path)

    def set_baseline(self, dev_metric: float | None) -> None:
        """The starting model's dev metric: adaptive mode compares round 0 with it (idempotent)."""
        if dev_metric is None:
            return
        if not math.isfinite(dev_metric):
            raise ValueError(f"baseline dev metric must be a finite number, got {dev_metric}")
        if self.state.baseline_dev_metric != float(dev_metric):
            self.state.baseline_dev_metric = float(dev_metric)
            self.save()

    # ---------------------------------------------------------------- queries
    @property
    def plan(self) -> Plan:
        s = self.state
        return Plan(round=s.round, stage=s.stage, competence=s.competence, mixture=dict(s.mixture), alpha=dict(s.alpha))

    @property
    def sampler_state(self) -> dict[str, Any] | None:
        """The saved sampler position of the open round (None at the start of a round)."""
        return self.state.sampler if self.state.round_open else None

    # ------------------------------------------------------------ transitions
    def start_round(self, round_: int, difficulties: Mapping[str, float]) -> Plan:
        """Begin round `round_` with its bands' measured difficulties (`RoundManifest.difficulties()`).

        Calling it again for the round already open (a resumed run) keeps the saved position.
        """
        s = self.state
        if s.round_open:
            if s.round == round_:
                if usable_difficulties(difficulties) != s.difficulties:
                    raise StateError(f"round {round_} is being resumed but its band statistics changed; "
                                     f"the round was re-mined, so start the round again from a fresh state")
                return self.plan
            raise StateError(f"round {s.round} was started but not ended; call end_round before starting {round_}")
        if s.round is not None and round_ <= s.round:
            raise StateError(f"round {round_} is not after the last round ({s.round}); rounds only move forward")
        s.round, s.round_open, s.round_steps, s.sampler = round_, True, 0, None
        s.difficulties = usable_difficulties(difficulties)  # bands without rows have no (finite) difficulty
        self._refresh()
        self._record("start_round")
        self.save()
        return self.plan

    def after_batch(self, sampler_state: Mapping[str, Any] | None = None) -> Plan:
        """Report one trained batch (and the sampler position after it); returns the plan for the next one."""
        s = self.state
        if not s.round_open:
            raise StateError("after_batch called outside a round; call start_round first")
        s.step += 1
        s.round_steps += 1
        s.sampler = dict(sampler_state) if sampler_state is not None else None
        total = self.config.total_units
        if self.config.unit == "step" and self.config.mode != "adaptive" and s.stage < total:
            before = s.competence
            s.stage += 1
            self._refresh()
            last = s.history[-1].competence if s.history else before
            if (abs(s.competence - last) >= HISTORY_RESOLUTION or s.stage == total
                    or self.config.order != "easy_to_hard"):
                self._record("step")
        self.save()
        return self.plan

    def end_round(self, dev_metric: float | None = None, train_accuracy: float | None = None) -> Decision:
        """Close the open round with its dev metric and train accuracy; advance or hold the stage."""
        s, cfg = self.state, self.config
        if not s.round_open:
            raise StateError("end_round called outside a round; call start_round first")
        for name, value in (("dev_metric", dev_metric), ("train_accuracy", train_accuracy)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        # Plain floats (a numpy or torch scalar must not reach the JSON state).
        dev_metric = None if dev_metric is None else float(dev_metric)
        train_accuracy = None if train_accuracy is None else float(train_accuracy)

        if cfg.mode == "adaptive":
            advanced, reason = self._adaptive_decision(dev_metric, train_accuracy)
        elif cfg.unit == "round":
            advanced, reason = True, "paced: one stage per round"
        else:
            advanced, reason = False, "paced per step: the round does not move the stage"
        if advanced and s.stage >= cfg.total_units:
            advanced, reason = False, "competence is already 1"
        if advanced:
            s.stage += 1
            s.holds = 0
        elif cfg.mode == "adaptive" and reason != "competence is already 1":
            s.holds += 1

        if dev_metric is not None:
            s.last_dev_metric = float(dev_metric)
            s.best_dev_metric = (float(dev_metric) if s.best_dev_metric is None
                                 else max(s.best_dev_metric, float(dev_metric)))
        s.round_open, s.sampler = False, None
        self._refresh()
        event = "advance" if advanced else ("hold" if cfg.mode == "adaptive" else "end_round")
        self._record(event, dev_metric=dev_metric, train_accuracy=train_accuracy,
                     reason=reason)
        self.save()
        return Decision(advanced=advanced, reason=reason, stage=s.stage, competence=s.competence)

    def _adaptive_decision(self, dev_metric: float | None, train_accuracy: float | None) -> tuple[bool, str]:
        s, a = self.state, self.config.adaptive
        if dev_metric is None or train_accuracy is None:
            raise ValueError("adaptive mode needs both dev_metric and train_accuracy at end_round")
        # Round 0 is compared with the starting model (`set_baseline`): training must not make it worse.
        previous = s.last_dev_metric if s.last_dev_metric is not None else s.baseline_dev_metric
        known = [x for x in (s.best_dev_metric, s.baseline_dev_metric) if x is not None]
        reference = previous if a.compare_to == "previous" else (max(known) if known else None)
        fell = reference is not None and dev_metric < reference - a.tolerance
        low = train_accuracy < a.accuracy_threshold
        if not fell and not low:
            return True, (f"dev {dev_metric:.4f} did not fall and train accuracy {train_accuracy:.3f} "
                          f">= {a.accuracy_threshold}")
        why = []
        if fell:
            why.append(f"dev {dev_metric:.4f} fell below {a.compare_to} {reference:.4f}")
        if low:
            why.append(f"train accuracy {train_accuracy:.3f} < {a.accuracy_threshold}")
        if a.max_holds is not None and s.holds + 1 > a.max_holds:
            return True, f"forced after {s.holds} holds ({'; '.join(why)})"
        return False, "; ".join(why)

    # -------------------------------------------------------------- internals
    def _refresh(self) -> None:
        """Recompute competence, mixture and alpha from the stage and the round's difficulties."""
        s, cfg = self.state, self.config
        s.competence = self.pacing(self.stages[min(s.stage, len(self.stages) - 1)])
        difficulties = usable_difficulties(s.difficulties, cfg.mixture.bands)
        if not difficulties:
            s.mixture, s.alpha = {}, {}
            return
        if cfg.mode == "static":
            assert cfg.static is not None  # guaranteed by the config validator
            s.mixture = static_mixture(cfg.static.weights, difficulties)
            s.alpha = {b: self.alpha_schedule.constant(b) for b in s.mixture}
        else:
            s.mixture = curriculum_mixture(difficulties, s.competence, floor=cfg.mixture.floor,
                                           floor_band=cfg.mixture.floor_band, tilt=cfg.mixture.tilt)
            s.alpha = self.alpha_schedule.for_bands(s.competence, s.mixture)

    def _record(self, event: str, **extra: Any) -> None:
        s = self.state
        s.history.append(HistoryEntry(event=event, round=s.round, step=s.step, stage=s.stage,
                                      competence=s.competence, mixture=dict(s.mixture), alpha=dict(s.alpha), **extra))

    def save(self, path: str | Path | None = None) -> None:
        """Write the state (atomically) to `path` or the scheduler's state file, if it has one."""
        target = Path(path) if path is not None else self.state_path
        if target is not None:
            self.state.save(target)
