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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. The package loads a name's module on first use (PEP 562), so importing one
# submodule (a config check reads `curriculum.config`) does not import the sampler's pyarrow or the mixture's
# numpy, and `import curriculum` never loads matplotlib (`plot_schedule`).
_HOMES = {
    "AlphaSchedule": "curriculum.alpha",
    "AdaptiveConfig": "curriculum.config", "AlphaConfig": "curriculum.config", "AlphaRange": "curriculum.config",
    "CurriculumConfig": "curriculum.config", "MixtureConfig": "curriculum.config", "StaticConfig": "curriculum.config",
    "format_validation_error": "curriculum.config", "parse_config": "curriculum.config",
    "ConfigError": "curriculum.errors", "CurriculumError": "curriculum.errors", "StateError": "curriculum.errors",
    "curriculum_mixture": "curriculum.mixture", "expected_difficulty": "curriculum.mixture",
    "order_bands": "curriculum.mixture", "static_mixture": "curriculum.mixture",
    "PACING_KINDS": "curriculum.pacing", "Pacing": "curriculum.pacing",
    "TripletSampler": "curriculum.sampler",
    "CurriculumScheduler": "curriculum.scheduler", "Decision": "curriculum.scheduler",
    "CurriculumState": "curriculum.state", "HistoryEntry": "curriculum.state", "Plan": "curriculum.state",
    "CurriculumFeed": "curriculum.trainer_feed", "DrawnBatch": "curriculum.trainer_feed",
    "plot_schedule": "curriculum.plot",
}

if TYPE_CHECKING:  # the names as type checkers and editors see them
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
    from curriculum.mixture import curriculum_mixture, expected_difficulty, order_bands, static_mixture
    from curriculum.pacing import PACING_KINDS, Pacing
    from curriculum.plot import plot_schedule
    from curriculum.sampler import TripletSampler
    from curriculum.scheduler import CurriculumScheduler, Decision
    from curriculum.state import CurriculumState, HistoryEntry, Plan
    from curriculum.trainer_feed import CurriculumFeed, DrawnBatch


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'curriculum' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


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
