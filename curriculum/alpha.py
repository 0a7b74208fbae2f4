"""The hard-negative weight alpha, moved from `start` to `end` as competence goes from c0 to 1.

The SimCSE loss takes one alpha per hard-negative column; here one per band, so a band may have its
own range (e.g. keep random negatives at 1 while nearest neighbours ramp up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AlphaSchedule:
    start: float = 1.0
    end: float = 1.0
    c0: float = 0.0
    per_band: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def progress(self, competence: float) -> float:
        """Fraction of the way from c0 to 1, in [0, 1]."""
        if self.c0 >= 1.0:
            return 1.0
        return min(1.0, max(0.0, (competence - self.c0) / (1.0 - self.c0)))

    def value(self, competence: float, band: str | None = None) -> float:
        """alpha at `competence`; linear in c, so monotone and within [min(start, end), max(start, end)]."""
        start, end = self.per_band.get(band, (self.start, self.end)) if band is not None else (self.start, self.end)
        s = self.progress(competence)
        value = start + (end - start) * s
        lo, hi = min(start, end), max(start, end)
        return min(hi, max(lo, value))  # rounding must not leave the bounds

    def for_bands(self, competence: float, bands: Iterable[str]) -> dict[str, float]:
        return {b: self.value(competence, b) for b in bands}

    def constant(self, band: str | None = None) -> float:
        """The value a static schedule uses: the end of the range (the weight the curriculum arrives at)."""
        return self.per_band.get(band, (self.start, self.end))[1] if band is not None else self.end

