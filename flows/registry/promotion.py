"""The promotion gate: does a run's model become the registry's current model?

Which set decides: the gate's metric (`--metric`, by default the run's dev metric, the *selection* set,
e.g. the select half of the Twitter pairs) picks the run's candidate (its best round) and decides
promotion: the candidate must beat the model the run started from (evaluated in the same run on the same
files, as the run's baseline) by more than `min_gain` points. A guard metric (e.g. STS-B dev for a domain
run) may veto: it must not fall by more than `guard_tolerance` points. Every other metric is recorded with
the version and never decides (report on a set that is neither the gate's nor the guard's).

The baseline must be the version's: before the gate compares, the run's evaluation of the version it started
from is compared with the scores recorded with that version, on every metric measured on the same file with the
same settings (`parent_drift`). Evaluating the same model on the same data repeats its score up to float noise,
so a gap beyond `parent_tolerance` means the version's files (or the evaluation) changed since it was registered,
and a comparison against that baseline would promote on the wrong numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from simcse.evaluation import check_metric_name
from simcse.evaluation import metric_value as evaluation_metric

# How far a run's evaluation of the version it starts from may be from the score recorded with that version, in
# points (scores are x100), where both were measured on the same file with the same settings. Such an evaluation
# is deterministic up to float noise: all-MiniLM-L6-v2 on the demo's 419 evaluation pairs, encoded on CPU in
# batches of 256, 17 and 1 (other padding, other summation order), gave the same AP to 14 digits and alignment
# within 1e-8. Another device or precision moves an embedding more (not measured here), still far less than a point
# on a dev set of a few hundred rows. 0.5 points is far beyond that noise and far below what a changed model
# shows (the report that led to this check: 4 flipped bytes in a weight file, -8.5 points).
PARENT_TOLERANCE = 0.5


@dataclass(frozen=True)
class GateSettings:
    """When a run's model becomes the current one: `metric` (default: the run's dev metric) must gain more than
    `min_gain` points (scores are x100; negative tolerates a small fall), and `guard`, if given, must not fall
    by more than `guard_tolerance` points. `parent_tolerance`: how far the run's evaluation of the version it
    started from may be from the scores recorded with that version (`parent_drift`)."""

    metric: str | None = None
    min_gain: float = 0.0
    guard: str | None = None
    guard_tolerance: float = 1.0
    parent_tolerance: float = PARENT_TOLERANCE

    def __post_init__(self) -> None:
        check_metric_name(self.metric)
        check_metric_name(self.guard)
        if self.guard_tolerance < 0:
            raise ValueError(f"guard_tolerance must be 0 or more, got {self.guard_tolerance}")
        if self.parent_tolerance < 0:
            raise ValueError(f"parent_tolerance must be 0 or more, got {self.parent_tolerance}")
        if self.guard is not None and self.guard == self.metric:
            raise ValueError("the guard must be another metric than the one that decides")


def metric_value(evaluation: dict[str, Any] | None, name: str) -> float | None:
    """`sts/<stem>` or `pairs/<stem>` of an evaluation (read by simcse.evaluation.metric_value); None when
    absent or NaN, which no gate can compare."""
    value = evaluation_metric(evaluation, name)
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with every number it used; `reason` is one sentence a person can read."""

    passed: bool
    reason: str
    metric: str
    candidate: float | None
    parent: float | None
    min_gain: float
    guard: str | None = None
    guard_candidate: float | None = None
    guard_parent: float | None = None
    guard_tolerance: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def decide(candidate: dict[str, Any] | None, parent: dict[str, Any] | None, gate: GateSettings,
           dev_metric: str | None, parent_label: str = "the starting model") -> GateDecision:
    """Whether `candidate` (an evaluation) may replace `parent` (the starting model's, from the same run)."""
    metric = gate.metric or dev_metric
    if metric is None:
        return GateDecision(False, "no metric decides: give eval.sts or eval.pairs (or registry.gate.metric)",
                            "", None, None, gate.min_gain)
    new, old = metric_value(candidate, metric), metric_value(parent, metric)
    common = {"metric": metric, "candidate": new, "parent": old, "min_gain": gate.min_gain}
    if gate.guard is not None:
        common.update(guard=gate.guard, guard_candidate=metric_value(candidate, gate.guard),
                      guard_parent=metric_value(parent, gate.guard), guard_tolerance=gate.guard_tolerance)
    if new is None:
        return GateDecision(False, f"{metric} of the new model is not a number (did training diverge?)", **common)
    if old is None:
        return GateDecision(False, f"{metric} of {parent_label} is missing, so there is nothing to beat", **common)
    gain = new - old
    if not gain > gate.min_gain:
        return GateDecision(False, f"{metric} {_f(old)} -> {_f(new)} ({gain:+.2f}) against {parent_label}: not above "
                                   f"the margin {gate.min_gain:+.2f}", **common)
    verdict = f"{metric} {_f(old)} -> {_f(new)} ({gain:+.2f}, margin {gate.min_gain:+.2f})"
    if gate.guard is not None:
        g_new, g_old = common["guard_candidate"], common["guard_parent"]
        if g_new is None or g_old is None:
            return GateDecision(False, f"{verdict}, but the guard {gate.guard} is missing for "
                                       f"{'the new model' if g_new is None else parent_label}", **common)
        fall = g_old - g_new
        if fall > gate.guard_tolerance:
            return GateDecision(False, f"{verdict}, but the guard {gate.guard} fell {fall:.2f} points "
                                       f"({_f(g_old)} -> {_f(g_new)}), more than the tolerance "
                                       f"{gate.guard_tolerance:.2f}", **common)
        verdict += f"; guard {gate.guard} {_f(g_old)} -> {_f(g_new)} (tolerance {gate.guard_tolerance:.2f})"
    return GateDecision(True, verdict, **common)


def best_round(rounds: dict[int, dict[str, Any]], metric: str) -> int | None:
    """The round whose model scores best on `metric` (the later round on a tie); None when none scored."""
    scored = [(value, r) for r, evaluation in rounds.items() if (value := metric_value(evaluation, metric)) is not None]
    return max(scored)[1] if scored else None


@dataclass(frozen=True)
class Drift:
    """A score of the version a run started from that the run's evaluation does not repeat."""

    metric: str
    fresh: float
    recorded: float
    tolerance: float

    @property
    def gap(self) -> float:
        return self.fresh - self.recorded

    def describe(self, label: str) -> str:
        return (f"the run's evaluation of {label} gives {self.metric} {_f(self.fresh)}, but {_f(self.recorded)} was "
                f"recorded with the version on the same file and settings ({self.gap:+.2f} points; evaluating the "
                f"same model on the same data repeats its score up to float noise, the tolerance is "
                f"{self.tolerance:.2f})")


def parent_drift(fresh: dict[str, Any] | None, fresh_keys: dict[str, str] | None, recorded: dict[str, float],
                 recorded_keys: dict[str, str] | None, tolerance: float) -> Drift | None:
    """The largest gap beyond `tolerance` between a fresh evaluation of a version (`fresh`, an evaluation, with its
    `eval_keys`) and the scores recorded with it (`recorded`, flat metrics, with theirs), over the metrics whose
    keys agree (the same file, columns and model settings); None when every such score is repeated, or when none
    can be compared (a version recorded without keys, or evaluated on other files)."""
    worst: Drift | None = None
    for name, key in (recorded_keys or {}).items():
        if not key or (fresh_keys or {}).get(name) != key:
            continue
        new, old = metric_value(fresh, name), recorded.get(name)
        if new is None or old is None or not math.isfinite(old):
            continue
        if abs(new - old) > tolerance and (worst is None or abs(new - old) > abs(worst.gap)):
            worst = Drift(name, new, float(old), tolerance)
    return worst
