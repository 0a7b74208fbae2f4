"""Looking at mined triplets: rows per round and band, similarity histograms, suspected false negatives, samples.

Reads only complete rounds (those with a manifest) and only the files their manifests list. Text columns
are read for the few rows shown, so a round of millions of rows inspects in seconds. `inspect_triplets` is
the one summary that the text report, `--json` and the HTML page (`mining.inspect_html`) render.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataio.atomic import atomic_path
from dataio.errors import InputError
from dataio.triplet_layout import MANIFEST_NAME, band_order
from dataio.triplets import complete_rounds, conform, read_manifest, resolve_file, round_problem

SHOW_COLUMNS = ["band", "anchor_id", "anchor", "positive_id", "positive", "negative_id", "negative",
                "anchor_positive_sim", "anchor_negative_sim", "negative_rank", "positive_source", "teacher_score",
                "teacher_positive_score"]
FILE_COLUMNS = SHOW_COLUMNS[1:]  # the band lives in the path (dataio.triplets), not in the files
BINS = np.linspace(-0.2, 1.0, 49)


def inspect_triplets(root: str | os.PathLike, *, plots_dir: str | os.PathLike | None = None,
                     false_negatives: int = 10, samples: int = 2, seed: int = 0) -> dict[str, Any]:
    """A JSON-able summary of every complete round under `root`; PNG histograms into `plots_dir` if given.

    Per band: rows, skipped counts, similarity quantiles and histogram counts (over `histogram_bins`), how many
    rows have an anchor-negative similarity at or above their anchor-positive one, `samples` random rows and,
    for bands whose negatives are not labeled, the `false_negatives` highest-similarity rows (`highest`); per
    round, the `false_negatives` highest of those over all such bands (`suspected_false_negatives`).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder; pass the triplets folder given to `mine --out`", path=root)
    rounds = complete_rounds(root)
    if not rounds:
        raise InputError(f"no complete round here (no round=<r>/{MANIFEST_NAME}); mine first or check the path",
                         path=root)
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"root": str(root), "histogram_bins": [round(float(b), 4) for b in BINS], "rounds": []}
    for r in rounds:
        manifest = read_manifest(root, r)
        problem = round_problem(root, manifest, check_sha=True)  # what a team reads must be what was mined
        if problem is not None:
            raise InputError(f"{problem}; mine round {r} again (or restore the file)")
        by_band: dict[str, list[Path]] = {}
        for f in manifest.files:
            by_band.setdefault(f.band, []).append(resolve_file(root, r, f.path))
        bands_out: dict[str, Any] = {}
        hists: dict[str, np.ndarray] = {}
        candidates: list[pa.Table] = []
        for band in band_order(manifest.bands):
            stats = manifest.bands[band]
            files = by_band.get(band, [])
            sim_cols = [pq.read_table(p, columns=["anchor_negative_sim", "anchor_positive_sim"]) for p in files]
            sims = np.concatenate([t.column(0).to_numpy() for t in sim_cols]) if files else np.empty(0, np.float32)
            pos_sims = np.concatenate([t.column(1).to_numpy() for t in sim_cols]) if files else np.empty(0, np.float32)
            entry: dict[str, Any] = {"rows": stats.rows, "mean_anchor_negative_sim": stats.mean_anchor_negative_sim,
                                     "skipped": dict(stats.skipped)}
            entry["negative_above_positive"] = int((sims >= pos_sims).sum())
            entry["histogram_counts"] = np.histogram(np.clip(sims, BINS[0], BINS[-1]), bins=BINS)[0].tolist()
            if len(sims):
                entry["quantiles"] = {q: float(np.quantile(sims, float(q))) for q in ("0.1", "0.5", "0.9")}
                hists[band] = sims
            if stats.note:
                entry["note"] = stats.note
            teacher_mean = (stats.model_extra or {}).get("mean_teacher_score")
            if teacher_mean is not None:  # the band's difficulty as the teacher grades it
                entry["mean_teacher_score"] = teacher_mean
            entry["samples"] = _samples(band, files, samples, rng)
            if band != "nli_contradiction":  # labeled negatives cannot be false negatives
                top = [_top_rows(band, p, false_negatives) for p in files]
                entry["highest"] = _merge_top(top, false_negatives)
                candidates.extend(top)
            bands_out[band] = entry
        suspects = _merge_top(candidates, false_negatives)
        plot = None
        if plots_dir is not None and hists:
            plot = str(_plot(hists, Path(plots_dir) / f"similarity_round{r}.png", r))
        mined = (manifest.model_extra or {}).get("mined_positives")
        mined_rows = _mined_positive_rows(by_band, max(samples, false_negatives), rng) if mined else []
        report["rounds"].append({"round": r, "bands": bands_out, "suspected_false_negatives": suspects,
                                 "mined_positives": mined, "mined_positive_samples": mined_rows,
                                 "model_fingerprint": manifest.model_fingerprint,
                                 "corpus_fingerprint": manifest.corpus_fingerprint,
                                 "index": manifest.index, "created": manifest.created,
                                 "histogram": plot})
    return report


def _read_rows(band: str, path: Path, rows: pa.Array) -> pa.Table:
    """Rows `rows` of one file with the shown columns, the band (from the manifest) first; the judge's columns
    are null in files mined before them (`dataio.triplets.conform`)."""
    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in FILE_COLUMNS if c in present]).take(rows)
    table = conform(table, FILE_COLUMNS)
    return table.add_column(0, "band", pa.array([band] * table.num_rows, pa.string()))


def _mined_positive_rows(by_band: dict[str, list[Path]], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Up to `n` random rows whose positive a judge mined, one per anchor, from the first band that has any."""
    for band in band_order(by_band):
        for path in by_band[band]:
            table = pq.read_table(path, columns=["anchor_id", "positive_source"])
            mined = pc.equal(table.column("positive_source"), "mined")
            rows = np.nonzero(np.asarray(pc.fill_null(mined, False)))[0]
            if not len(rows):
                continue
            _, first = np.unique(table.column("anchor_id").to_numpy(zero_copy_only=False)[rows], return_index=True)
            rows = rows[np.sort(first)]
            pick = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
            return _rows(_read_rows(band, path, pa.array(rows[pick])))
    return []


def _top_rows(band: str, path: Path, n: int) -> pa.Table:
    """The n highest-similarity rows of one file (only those rows' texts are materialised)."""
    sims = pq.read_table(path, columns=["anchor_negative_sim"]).column(0)
    if n <= 0 or len(sims) == 0:
        return pa.table({c: [] for c in SHOW_COLUMNS})
    idx = pc.select_k_unstable(pa.table({"s": sims}), n, [("s", "descending")])
    return _read_rows(band, path, idx)


def _merge_top(tables: list[pa.Table], n: int) -> list[dict[str, Any]]:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return []
    table = pa.concat_tables(tables, promote_options="permissive")
    order = np.argsort(-table.column("anchor_negative_sim").to_numpy(zero_copy_only=False), kind="stable")[:n]
    return _rows(table.take(pa.array(order)))


def _samples(band: str, files: list[Path], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    if not files or n <= 0:
        return []
    rows = [pq.ParquetFile(p).metadata.num_rows for p in files]
    total = sum(rows)
    if not total:
        return []
    chosen = rng.choice(total, size=min(n, total), replace=False)
    picks = np.sort(chosen)
    out = []
    offsets = np.cumsum([0] + rows)
    for i, p in enumerate(files):
        local = picks[(picks >= offsets[i]) & (picks < offsets[i + 1])] - offsets[i]
        if len(local):
            out.extend(_rows(_read_rows(band, p, pa.array(local))))
    # Back in the order drawn, so any prefix of the list is itself a uniform sample (the text report shows a few).
    return [out[i] for i in np.searchsorted(picks, chosen)]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    out = []
    for row in table.to_pylist():
        out.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    return out


@contextlib.contextmanager
def matplotlib_config_in_temp() -> Iterator[None]:
    """For the block, matplotlib's config and font cache (MPLCONFIGDIR) in a temporary folder, removed after:
    `inspect --plots` writes only the plots, nothing lasting under $HOME (~/.cache/matplotlib, ~/.config/
    matplotlib) or beside them. The font list is rebuilt each time, in well under a second. A user's own
    MPLCONFIGDIR wins, and nothing changes once matplotlib is imported (it reads the setting on import)."""
    if os.environ.get("MPLCONFIGDIR") or "matplotlib" in sys.modules:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="simcse-matplotlib-") as folder:
        os.environ["MPLCONFIGDIR"] = folder
        try:
            yield
        finally:
            os.environ.pop("MPLCONFIGDIR", None)


def _plot(hists: dict[str, np.ndarray], path: Path, round_: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(7, 4))
    for band, sims in hists.items():
        ax.hist(np.clip(sims, BINS[0], BINS[-1]), bins=BINS, density=True, histtype="step", linewidth=1.6,
                label=f"{band} (n={len(sims)}, mean {float(np.mean(sims)):.3f})")
    ax.set_xlabel("cosine similarity (anchor, negative)")
    ax.set_ylabel("density")
    ax.set_title(f"Negatives by band, round {round_}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def format_report(report: dict[str, Any], max_samples: int | None = None) -> str:
    """Plain-text rendering of `inspect_triplets`' summary (at most `max_samples` samples per band)."""
    lines = [f"triplets: {report['root']}"]
    for rnd in report["rounds"]:
        idx = rnd.get("index") or {}
        recall = idx.get("recall_at_k")
        recall_text = "" if recall is None else f", recall@k {recall:.3f}"
        lines.append(f"\nround {rnd['round']}  (model {str(rnd['model_fingerprint'])[:12]}, corpus "
                     f"{str(rnd['corpus_fingerprint'])[:12]}, index {idx.get('backend', 'n/a')}{recall_text})")
        lines.append(f"  {'band':<18} {'rows':>9} {'mean sim':>9} {'p10':>7} {'p50':>7} {'p90':>7}  skipped")
        for band, b in rnd["bands"].items():
            q = b.get("quantiles") or {}
            mean = b["mean_anchor_negative_sim"]
            skipped = ", ".join(f"{k} {v}" for k, v in b["skipped"].items()) or "-"
            lines.append(f"  {band:<18} {b['rows']:>9} {_f(mean):>9} {_f(q.get('0.1')):>7} {_f(q.get('0.5')):>7} "
                         f"{_f(q.get('0.9')):>7}  {skipped}")
            if b.get("note"):
                lines.append(f"  {'':<18} note: {b['note']}")
        mined = rnd.get("mined_positives")
        if mined:
            lines.append(f"  mined positives ({mined.get('judge')} judge): {mined.get('mined', 0):,} of "
                         f"{mined.get('candidates', 0):,} unsupervised anchors ({100 * mined.get('share', 0):.1f}%); "
                         f"not mined: {', '.join(f'{k} {v}' for k, v in (mined.get('rejected') or {}).items()) or '-'}")
            for row in rnd.get("mined_positive_samples") or []:
                lines.append(f"    {_teacher(row, 'teacher_positive_score')}{row['anchor_positive_sim']:.3f} "
                             f"{_cut(row['anchor'])!r} ~ {_cut(row['positive'])!r}")
        if rnd["suspected_false_negatives"]:
            lines.append("  suspected false negatives (highest anchor-negative similarity):")
            for row in rnd["suspected_false_negatives"]:
                lines.append(f"    {_teacher(row, 'teacher_score')}{row['anchor_negative_sim']:.3f} [{row['band']}] "
                             f"{_cut(row['anchor'])!r} vs {_cut(row['negative'])!r}")
        lines.append("  samples:")
        for band, b in rnd["bands"].items():
            for row in b["samples"][:max_samples]:
                lines.append(f"    [{band}] anchor {_cut(row['anchor'])!r} | positive {_cut(row['positive'])!r} | "
                             f"negative {_cut(row['negative'])!r} ({row['anchor_negative_sim']:.3f})")
        if rnd.get("histogram"):
            lines.append(f"  histogram: {rnd['histogram']}")
    return "\n".join(lines)


def _teacher(row: dict[str, Any], column: str) -> str:
    """`teacher 0.912, student ` before a similarity when the round had a teacher, else nothing."""
    value = row.get(column)
    return "" if value is None else f"teacher {value:.3f}, student "


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _cut(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def to_json(report: dict[str, Any], max_samples: int | None = None) -> str:
    """JSON of `inspect_triplets`' summary (at most `max_samples` samples per band)."""
    if max_samples is not None:
        report = {**report, "rounds": [{**rnd, "bands": {band: {**b, "samples": b["samples"][:max_samples]}
                                                        for band, b in rnd["bands"].items()}}
                                       for rnd in report["rounds"]]}
    return json.dumps(report, indent=2, ensure_ascii=False)
