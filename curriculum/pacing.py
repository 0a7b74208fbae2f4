"""Competence functions c(t) in [c0, 1] (Platanios et al. 2019, "Competence-based curriculum learning").

`t` is a count of training units (steps or rounds, the caller decides); c reaches 1 at t = total and
stays there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PACING_KINDS = ("linear", "root", "geometric", "step")


@dataclass(frozen=True)
class Pacing:
    """A competence function.

    kind: linear  c = c0 + (1 - c0) t/T
          root    c = (c0^p + (1 - c0^p) t/T)^(1/p)   (p = power; Platanios' "sqrt" is p = 2)
          geometric c = c0 (1/c0)^(t/T)               (slow start, fast finish)
          step    c rises in `steps` equal jumps, the last one at t = T
    """

    kind: str = "root"
    total: int = 10
    c0: float = 0.1
    power: float = 2.0
    steps: int = 4

    def __post_init__(self) -> None:
        if self.kind not in PACING_KINDS:
            raise ValueError(f"unknown pacing {self.kind!r}; expected one of {', '.join(PACING_KINDS)}")
        if self.total < 1:
            raise ValueError(f"pacing total must be >= 1, got {self.total}")
        if not 0.0 < self.c0 <= 1.0:
            raise ValueError(f"c0 must be in (0, 1], got {self.c0}")
        if self.power <= 0:
            raise ValueError(f"root power must be > 0, got {self.power}")
        if self.steps < 1:
            raise ValueError(f"step count must be >= 1, got {self.steps}")

    def __call__(self, t: float) -> float:
        """Competence after `t` units; non-decreasing in t, c0 at t = 0, 1 from t = total on."""
        if t < 0 or math.isnan(t):
            raise ValueError(f"t must be >= 0, got {t}")
        x = min(t / self.total, 1.0)
        if x >= 1.0:
            return 1.0  # exactly, whatever the rounding of the formula
        c0 = self.c0
        if self.kind == "linear":
            c = c0 + (1.0 - c0) * x
        elif self.kind == "root":
            c0p = c0**self.power
            c = (c0p + (1.0 - c0p) * x) ** (1.0 / self.power)
        elif self.kind == "geometric":
            c = c0 ** (1.0 - x)  # == c0 * (1/c0)**x, written so x = 1 gives exactly 1.0
        else:  # step
            # Small epsilon so t = k * total / steps lands on jump k despite float rounding.
            jumps = min(self.steps, math.floor(min(t, self.total) * self.steps / self.total + 1e-9))
            c = c0 + (1.0 - c0) * jumps / self.steps
        # Floating error must not take c outside [c0, 1].
        return min(1.0, max(c0, c))
