"""Mixture and alpha over training, as one PNG for the run report (matplotlib, imported only here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curriculum.state import CurriculumState, HistoryEntry
from dataio.atomic import atomic_path


def plot_schedule(history: CurriculumState | Sequence[HistoryEntry | dict[str, Any]], path: str | Path,
                  *, title: str = "Curriculum schedule") -> Path:
    """Stacked band mixture (top) and alpha per band (bottom) against training step; written atomically."""
    fig = schedule_figure(history, title=title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def schedule_figure(history: CurriculumState | Sequence[HistoryEntry | dict[str, Any]], *,
                    title: str = "Curriculum schedule") -> Any:
    """The figure `plot_schedule` writes (a matplotlib Figure)."""
    # A bare Figure (no pyplot): no global backend state, safe inside worker threads.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    entries = history.history if isinstance(history, CurriculumState) else list(history)
    entries = [e if isinstance(e, HistoryEntry) else HistoryEntry.model_validate(e) for e in entries]
    entries = [e for e in entries if e.mixture]
    if not entries:
        raise ValueError("no schedule to plot: the history has no entry with a mixture (start a round first)")
    bands: list[str] = []
    for e in entries:  # first-seen order, which is easiest first
        bands.extend(b for b in e.mixture if b not in bands)
    steps = [e.step for e in entries]
    # Several entries may share a step (end of one round, start of the next): offset them slightly so
    # the step plot shows the jump instead of hiding it.
    xs = [x + 1e-3 * i if i and x <= steps[i - 1] else x for i, x in enumerate(steps)]

    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    shares = [[e.mixture.get(b, 0.0) for e in entries] for b in bands]
    top.stackplot(xs, shares, labels=bands, step="post", alpha=0.85)
    top.set_ylim(0, 1)
    top.set_ylabel("band probability")
    top.set_title(title)
    top.legend(loc="upper left", fontsize="small", ncol=2)
    for i, b in enumerate(bands):
        values = [e.alpha.get(b, float("nan")) for e in entries]
        # Thinner each band, so bands sharing one alpha curve stay visible under each other.
        bottom.step(xs, values, where="post", label=b, linewidth=max(0.8, 3.0 - 0.7 * i))
    bottom.set_ylabel("alpha")
    bottom.set_xlabel("training step")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 0.5 ticks on short runs
    ax2 = bottom.twinx()
    ax2.step(xs, [e.competence for e in entries], where="post", color="black", linestyle="--", label="competence")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("competence")
    bottom.legend(loc="upper left", fontsize="small", ncol=2)
    return fig
