"""The demo's settings: the full curriculum flow on the built-in docstring corpus, sized for 2 CPU cores.

`configs/demo.yaml` holds the same settings as a file (a test keeps the two equal); this copy lives in
the package so `simcse-curriculum demo` works from an installed package without the repository.
Budget (2 cores): 2,000 sentences, 3 rounds of 20 steps at batch 32 and max length 32, one encoder (the
offline all-MiniLM-L6-v2). Training steps are the dominant cost; the sizes keep the whole demo well under the
10 minutes promised on a 2-core machine (measured times: docs/benchmarks.md, "The demo").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.run.config import RunConfig, config_from_mapping

DEMO_SETTINGS: dict[str, Any] = {
    "seed": 0,
    "rounds": 3,
    "steps_per_round": 20,
    "batch_size": 32,
    "model": {"name_or_path": "all-MiniLM-L6-v2", "max_length": 32},
    "data": {"builtin": "python_docstrings", "builtin_max_sentences": 2000},
    "eval": {"sts": [{"path": "{data_dir}/stsb/dev.tsv", "optional": True}]},
    "mining": {"bands": ["random", "in_domain", "nearest_neighbour"]},
    "curriculum": {"mode": "paced", "pacing": "root", "unit": "round", "total": 2, "c0": 0.2,
                   "alpha": {"start": 0.5, "end": 1.0}},
    "training": {},
}


def demo_config(output_dir: str | Path = "runs/demo", **overrides: Any) -> RunConfig:
    """The demo config writing into `output_dir` (relative to the current folder)."""
    settings: dict[str, Any] = {**DEMO_SETTINGS, **overrides, "output_dir": str(output_dir)}
    return config_from_mapping(settings, base_dir=Path.cwd())
