"""Curriculum over hard-negative bands for SimCSE: pacing, band mixture, alpha, adaptive scheduler,
a batch sampler over mined Parquet rounds, and resumable JSON state. No torch, no Prefect. The mined
rounds are read through the triplet contract (`dataio.triplets`).

Per round:  manifest = dataio.triplets.read_manifest(triplets, r)
            plan = scheduler.start_round(r, manifest.difficulties())
            sampler = TripletSampler(triplets, r, batch_size=64, seed=cfg.seed, state=scheduler.sampler_state)
            batch = sampler.draw(plan); ...train...; plan = scheduler.after_batch(sampler.state_dict())
            scheduler.end_round(dev_metric, train_accuracy)
See docs/curriculum.md. Inside sentence-transformers' trainer: `CurriculumFeed` (docs/sentence_transformers.md).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curriculum.alpha import AlphaSchedule
from curriculum.config import (
    AdaptiveConfig,
    AlphaConfig,
    AlphaRange,
    CurriculumConfig,
    MixtureConfig,
    StaticConfig,
    format_validation_error,
    parse_config,
)
from curriculum.errors import ConfigError, CurriculumError, StateError
from curriculum.mixture import (
    curriculum_mixture,
    expected_difficulty,
    order_bands,
    static_mixture,
)
from curriculum.pacing import PACING_KINDS, Pacing
from curriculum.sampler import TripletSampler
from curriculum.scheduler import CurriculumScheduler, Decision
from curriculum.state import CurriculumState, HistoryEntry, Plan
from curriculum.trainer_feed import CurriculumFeed, DrawnBatch


def plot_schedule(history: CurriculumState | Sequence[HistoryEntry | dict[str, Any]], path: str | Path, *,
                  title: str = "Curriculum schedule") -> Path:
    """Mixture and alpha over training as a PNG (see `curriculum.plot`); imported lazily so that
    `import curriculum` never loads matplotlib."""
    from curriculum.plot import plot_schedule as _plot

    return _plot(history, path, title=title)


__all__ = [
    "PACING_KINDS",
    "AdaptiveConfig",
    "AlphaConfig",
    "AlphaRange",
    "AlphaSchedule",
    "ConfigError",
    "CurriculumConfig",
    "CurriculumError",
    "CurriculumFeed",
    "CurriculumScheduler",
    "CurriculumState",
    "Decision",
    "DrawnBatch",
    "HistoryEntry",
    "MixtureConfig",
    "Pacing",
    "Plan",
    "StateError",
    "StaticConfig",
    "TripletSampler",
    "curriculum_mixture",
    "expected_difficulty",
    "format_validation_error",
    "order_bands",
    "parse_config",
    "plot_schedule",
    "static_mixture",
]
