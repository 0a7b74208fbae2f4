"""Band mixture: the probability of drawing each band's triplets at competence c.

The bands are ordered by their *measured* difficulty (mining's mean anchor-negative similarity per band),
never by a fixed list, so a band that turns out easier than expected is scheduled as such.

The rule (one formula, so its properties can be checked):
- The n bands, easiest first, own equal slices [i/n, (i+1)/n) of the unit interval. At competence c the
  learner may draw from [0, c]: band i is *locked* until c > i/n, then its share grows with the part of
  its slice that [0, c] covers (Platanios et al.'s competence sampling, applied to bands).
- A tilt exp(tilt * c * rank) (rank 0 easiest .. 1 hardest) weights harder bands up as c grows, so at
  c = 1 the hardest band has the largest share rather than an equal one (tilt = 0 gives equal shares).
- A floor of `floor` probability stays on the random band (training stability): p = floor * onehot +
  (1 - floor) * q. If the random band is missing, its floor goes to the other bands.
Both factors have a likelihood ratio non-decreasing in the band rank as c grows, so the mixture at a
larger c dominates the one at a smaller c stochastically: the expected difficulty never decreases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def usable_difficulties(difficulties: Mapping[str, float], bands: list[str] | None = None) -> dict[str, float]:
    """Bands that can be scheduled: finite difficulty (a band with no rows has none), in `bands` if given."""
    return {
        b: float(d)
        for b, d in difficulties.items()
        if d is not None and math.isfinite(float(d)) and (bands is None or b in bands)
    }


def order_bands(difficulties: Mapping[str, float]) -> list[str]:
    """Band names, easiest (lowest mean anchor-negative similarity) first; ties broken by name."""
    return sorted(usable_difficulties(difficulties), key=lambda b: (float(difficulties[b]), b))


def curriculum_mixture(
    difficulties: Mapping[str, float],
    competence: float,
    *,
    floor: float = 0.1,
    floor_band: str = "random",
    tilt: float = 1.0,
) -> dict[str, float]:
    """Probability of each usable band at `competence`, keyed easiest first (see the module docstring)."""
    if not 0.0 <= competence <= 1.0 or math.isnan(competence):
        raise ValueError(f"competence must be in [0, 1], got {competence}")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    if tilt < 0:
        raise ValueError(f"tilt must be >= 0, got {tilt}")
    bands = order_bands(difficulties)
    if not bands:
        raise ValueError("no band has rows with a measured difficulty; nothing to schedule")
    n = len(bands)
    index = np.arange(n, dtype=np.float64)
    if competence <= 0.0:
        covered = (index == 0).astype(np.float64)  # the limit c -> 0: only the easiest band
    else:
        covered = np.clip(competence - index / n, 0.0, 1.0 / n)
    rank = index / (n - 1) if n > 1 else np.zeros(1)
    weights = covered * np.exp(tilt * competence * rank)
    probs = weights / weights.sum()
    if floor > 0.0 and floor_band in bands:
        probs = (1.0 - floor) * probs
        probs[bands.index(floor_band)] += floor
    probs = probs / probs.sum()
    return {b: float(p) for b, p in zip(bands, probs)}


def static_mixture(weights: Mapping[str, float], difficulties: Mapping[str, float]) -> dict[str, float]:
    """A fixed mix restricted to the bands that have rows, renormalised (a missing band's weight is spread
    over the others in proportion); keyed easiest first like `curriculum_mixture`."""
    available = order_bands(difficulties)
    kept = {b: float(weights[b]) for b in available if b in weights and weights[b] > 0}
    total = sum(kept.values())
    if total <= 0:
        wanted = ", ".join(sorted(b for b, w in weights.items() if w > 0)) or "(none)"
        have = ", ".join(available) or "(none)"
        raise ValueError(f"static mixture bands {wanted} have no rows in this round (bands with rows: {have})")
    return {b: kept[b] / total for b in available if b in kept}


def expected_difficulty(mixture: Mapping[str, float], difficulties: Mapping[str, float]) -> float:
    """Mean anchor-negative similarity of a draw from `mixture`."""
    return float(sum(p * float(difficulties[b]) for b, p in mixture.items()))
