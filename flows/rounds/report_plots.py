"""The run report's plots: scores per round, the schedule, and each round's similarity by band, drawn with
matplotlib (Agg) from the run folder's completed files; `flows.rounds.report` writes the markdown around them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curriculum import CurriculumState
from curriculum import plot_schedule as curriculum_plot
from dataio.atomic import atomic_path
from dataio.triplet_layout import band_order
from dataio.triplets import RoundManifest, is_complete, read_manifest, resolve_file
from flows.run.rundir import RunDir

# Smallest y range of the metrics plot: auto-scaling would draw a +0.2 AP change as a cliff.
MIN_SCORE_SPAN = 5.0  # points of a x100 score
MIN_GEOMETRY_SPAN = 0.1  # alignment, uniformity


def metric_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, stem) of every STS and pair file seen in any evaluation, in first-seen order."""
    cols: list[tuple[str, str]] = []
    for row in rows:
        ev = row.get("evaluation") or {}
        for kind in ("sts", "pairs"):
            for stem in ev.get(kind) or {}:
                if (kind, stem) not in cols:
                    cols.append((kind, stem))
    return cols


def read_round_manifest(run: RunDir, r: int) -> RoundManifest | None:
    """Round r's manifest, or None when the round was not mined (completely) yet."""
    return read_manifest(run.triplets, r) if is_complete(run.triplets, r) else None


def _save_figure(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def y_limits(values: list[Any], min_span: float) -> tuple[float, float] | None:
    """Y limits around the finite `values`, at least `min_span` wide (centred on them), else 5% padded."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    if high - low >= min_span:
        pad = 0.05 * (high - low)
        return low - pad, high + pad
    middle = (low + high) / 2
    return middle - min_span / 2, middle + min_span / 2


def plot_metrics(base: dict[str, Any] | None, rounds: list[dict[str, Any]], path: Path) -> Path | None:
    """STS / pair AP (top) and alignment / uniformity (bottom) against round; base model at x = 'base'."""
    from matplotlib.figure import Figure  # matplotlib: only when a plot is drawn

    rows = ([base] if base else []) + rounds
    if not rows:
        return None
    labels = ["base" if (base and i == 0) else str(row["round"]) for i, row in enumerate(rows)]
    xs = list(range(len(rows)))
    fig = Figure(figsize=(8, 7.5), layout="constrained")
    top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=[2, 1, 1])
    scores: list[Any] = []
    for kind, stem in metric_columns(rows):
        ys = [((row.get("evaluation") or {}).get(kind) or {}).get(stem, float("nan")) for row in rows]
        scores += ys
        top.plot(xs, ys, marker="o", label=f"{'STS' if kind == 'sts' else 'AP'} {stem}")
    if (limits := y_limits(scores, MIN_SCORE_SPAN)) is not None:
        top.set_ylim(*limits)
    top.set_ylabel(f"score x100\n(axis spans >= {MIN_SCORE_SPAN:g} points)", fontsize="small")
    top.set_title("Evaluation per round")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize="small")
    # Separate axes: the two live on different scales and would look flat on one.
    for ax, name in ((middle, "alignment"), (bottom, "uniformity")):
        ys = [(row.get("evaluation") or {}).get(name) for row in rows]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", color="tab:green")
        if (limits := y_limits(ys, MIN_GEOMETRY_SPAN)) is not None:
            ax.set_ylim(*limits)
        ax.set_ylabel(f"{name}\n(lower is better;\nspan >= {MIN_GEOMETRY_SPAN:g})", fontsize="small")
    bottom.set_xlabel("round")
    bottom.set_xticks(xs, labels)
    return _save_figure(fig, path)


def read_similarities(run: RunDir, r: int) -> tuple[dict[str, Any], Any] | None:
    """One mined round's anchor-negative similarities per band, and the anchor-positive similarity of each
    distinct labeled (anchor, positive) pair, as float arrays (None when the round has no manifest)."""

    manifest = read_round_manifest(run, r)
    if manifest is None:
        return None
    negatives: dict[str, list[Any]] = {}
    pairs = []
    for entry in manifest.files:
        table = pq.read_table(resolve_file(run.triplets, r, entry.path),
                              columns=["anchor_id", "positive_id", "anchor_negative_sim", "anchor_positive_sim"])
        negatives.setdefault(entry.band, []).append(table.column("anchor_negative_sim").to_numpy(zero_copy_only=False))
        # Unsupervised rows (positive = the anchor itself, sim 1) would swamp the positives' histogram.
        labeled = pc.not_equal(table.column("anchor_id"), table.column("positive_id"))
        pairs.append(table.select(["anchor_id", "positive_id", "anchor_positive_sim"]).filter(labeled))
    # Each labeled pair once: every band repeats the same (anchor, positive) rows with other negatives.
    distinct = pa.concat_tables(pairs).group_by(["anchor_id", "positive_id"], use_threads=False).aggregate(
        [("anchor_positive_sim", "first")]) if pairs else None

    def finite(values: Any) -> Any:
        values = np.asarray(values, dtype=float)
        return values[np.isfinite(values)]

    by_band = {band: finite(np.concatenate(parts)) for band, parts in negatives.items()}
    positives = distinct.column("anchor_positive_sim_first").to_numpy(zero_copy_only=False) if distinct else []
    return by_band, finite(positives)


def plot_similarity_histograms(run: RunDir, r: int, path: Path) -> Path | None:
    """Anchor-negative similarity per band (and anchor-positive over the distinct labeled pairs) for one
    mined round."""
    from matplotlib.figure import Figure  # matplotlib: only when a plot is drawn

    read = read_similarities(run, r)
    if read is None or not read[0]:
        return None
    negatives, pos = read
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(-0.2, 1.0, 49)
    for band in band_order(negatives):
        values = negatives[band]
        if values.size:
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, density=True,
                    label=f"{band} (n={values.size}, mean {values.mean():.2f})")
    if pos.size:
        ax.hist(pos, bins=bins, histtype="stepfilled", alpha=0.2, color="grey", density=True,
                label=f"anchor-positive, labeled pairs (n={pos.size})")
    ax.set_xlabel("cosine similarity to the anchor")
    ax.set_ylabel("density")
    ax.set_title(f"Round {r}: similarity of mined negatives by band")
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


def plot_schedule(run: RunDir, path: Path) -> Path | None:
    if not run.state_path.is_file():
        return None
    state = CurriculumState.load(run.state_path)
    if not any(e.mixture for e in state.history):
        return None
    curriculum_plot(state, path, title="Band mixture and alpha")
    return path


def write_plots(run: RunDir) -> dict[str, Path]:
    """All plots of the run so far; returns name -> path of those written."""
    run.plots.mkdir(parents=True, exist_ok=True)
    rounds = [run.read_metrics(r) for r in run.completed_rounds()]
    out: dict[str, Path] = {}
    written = plot_metrics(run.read_base_metrics(), rounds, run.plots / "metrics.png")
    if written:
        out["metrics"] = written
    written = plot_schedule(run, run.plots / "schedule.png")
    if written:
        out["schedule"] = written
    for row in rounds:
        r = row["round"]
        written = plot_similarity_histograms(run, r, run.plots / f"similarity_round{r}.png")
        if written:
            out[f"similarity_round{r}"] = written
    return out
