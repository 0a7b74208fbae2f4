"""What a curriculum will train on, worked out before any data exists.

The scheduler is run over a run's planned rounds and steps exactly as the flow runs it (a batch drawn
with the current plan, then `after_batch`; `end_round` at each round's end), with each band given an
assumed difficulty in its usual order (random < in_domain < nli_contradiction < nearest_neighbour, what
mining measures on most data). An adaptive curriculum is assumed to advance every round: the best case.
So a setting that never trains on a band it mines every round (a `total` beyond the run, a band left out
of the mixture or of static weights) is found at validation, with the reason, not after the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from curriculum.config import CurriculumConfig
from curriculum.scheduler import CurriculumScheduler
from dataio.triplet_layout import BANDS

# Expected triplets of a band over the whole run below this: "never trained on" in practice.
NEGLIGIBLE_TRIPLETS = 1.0


def usual_difficulties(bands: Sequence[str]) -> dict[str, float]:
    """Assumed mean anchor-negative similarities: the bands in their usual order, easiest first."""
    return {b: 0.1 * (1 + BANDS.index(b)) for b in bands}


@dataclass(frozen=True)
class RoundPreview:
    round: int
    competence_start: float
    competence_end: float  # competence of the round's last batch
    share: dict[str, float]  # mean probability of drawing each band over the round's batches


@dataclass(frozen=True)
class SchedulePreview:
    """The planned schedule of one run: per round, competence and each band's mean share of the draws."""

    config: CurriculumConfig
    bands: list[str]
    steps_per_round: int
    rounds: list[RoundPreview] = field(default_factory=list)

    @property
    def final_competence(self) -> float:
        return self.rounds[-1].competence_end if self.rounds else 0.0

    def expected_triplets(self, band: str, batch_size: int, negatives_per_anchor: int = 1) -> float:
        """Triplets with a negative from `band` the run is expected to train on (the sum of its shares)."""
        return sum(r.share.get(band, 0.0) for r in self.rounds) * self.steps_per_round * batch_size * \
            negatives_per_anchor

    def unused_bands(self, batch_size: int, negatives_per_anchor: int = 1) -> list[UnusedBand]:
        """Bands that are mined but (almost) never drawn, each with why, in words that name the setting."""
        out: list[UnusedBand] = []
        cfg = self.config
        scheduled = [b for b in self.bands if cfg.mixture.bands is None or b in cfg.mixture.bands]
        for band in self.bands:
            expected = self.expected_triplets(band, batch_size, negatives_per_anchor)
            if expected >= NEGLIGIBLE_TRIPLETS:
                continue
            if band not in scheduled:
                cause, why = "mixture", f"curriculum.mixture.bands ({', '.join(cfg.mixture.bands or [])}) leaves it out"
            elif cfg.mode == "static":
                cause, why = "static", "curriculum.static.weights gives it no weight"
            else:
                rank = sorted(scheduled, key=BANDS.index).index(band)
                cause = "pacing"
                rounds = f"{len(self.rounds)} round{'s' if len(self.rounds) != 1 else ''}"
                why = (f"competence reaches {'only ' if expected == 0 else ''}{self.final_competence:.2f} by the "
                       f"run's last step (curriculum.total {cfg.total} {cfg.unit}s, counted from 0; the run has "
                       f"{rounds} of {self.steps_per_round} steps), and as band {rank + 1} of {len(scheduled)} it is "
                       f"drawn only above {rank / len(scheduled):.2f}")
                if cfg.mode == "adaptive":
                    why += " even if every round advances"
            if expected > 0:
                why += f": ~{expected:.1f} triplets expected over the run"
            out.append(UnusedBand(band=band, cause=cause, why=why, expected_triplets=expected))
        return out


@dataclass(frozen=True)
class UnusedBand:
    """A band the schedule (almost) never draws: `cause` is mixture (left out of mixture.bands), static (no
    static weight) or pacing (competence never gets far enough)."""

    band: str
    cause: str
    why: str
    expected_triplets: float


def preview_schedule(config: CurriculumConfig, bands: Sequence[str], rounds: int,
                     steps_per_round: int) -> SchedulePreview:
    """Run the scheduler over `rounds` x `steps_per_round` with `bands` at their usual difficulties (nothing is
    written). `config` must be resolved for the run (`CurriculumConfig.resolved`). ValueError when the
    settings cannot schedule these bands at all (e.g. static weights only on bands that are not mined)."""
    difficulties = usual_difficulties(bands)
    scheduler = CurriculumScheduler(config)
    preview = SchedulePreview(config=config, bands=list(bands), steps_per_round=steps_per_round)
    for r in range(rounds):
        plan = scheduler.start_round(r, difficulties)
        start = plan.competence
        totals = dict.fromkeys(bands, 0.0)
        last = plan
        for _ in range(steps_per_round):
            last = plan
            for band, p in plan.mixture.items():
                totals[band] += p
            plan = scheduler.after_batch()
        preview.rounds.append(RoundPreview(round=r, competence_start=start, competence_end=last.competence,
                                           share={b: t / steps_per_round for b, t in totals.items()}))
        scheduler.end_round(dev_metric=float(r + 1), train_accuracy=1.0)  # adaptive: advance (the best case)
    return preview
