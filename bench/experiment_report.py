"""Issue 6's results: aggregate the per-arm, per-seed result files of `bench/experiment.py` into tables
(mean ± std over seeds), a plot of the dev metric per round, the measured difficulty per band, and a
plain conclusion; write them as one section of a markdown file between markers, leaving the rest alone.

No training here and no torch: it reads JSON files only, so the results can be rebuilt at any time
(`bench/experiment.py report --out DIR`), and it is unit-tested on hand-made results.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

START_MARKER = "<!-- experiment:start -->"
END_MARKER = "<!-- experiment:end -->"
BAND_ORDER = ("random", "in_domain", "nli_contradiction", "nearest_neighbour")  # the design's easy -> hard
KIND_ORDER = ("in_batch", "static", "curriculum")
TARGET_OVER_STATIC = 0.5   # issue 6: curriculum beats the best static arm by >= 0.5 points ...
TARGET_OVER_ZERO_SHOT = 2.0  # ... and improves Twitter dev AP over zero-shot by >= 2 points


# ------------------------------------------------------------------------------------------- reading
def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every finished arm x seed result (`<results>/<setting>/<arm>/seed<s>.json`), in a stable order."""
    out = []
    for path in sorted(Path(results_dir).glob("*/*/seed*.json")):
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


# --------------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than two values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def aggregate(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """setting -> arm -> {kind, description, n, seeds, report/dev mean and std, curve mean and std per round}.

    The curve is the dev metric after each round (index 0 = after round 0); seeds with fewer rounds (an
    unfinished run never gets here) would be averaged over the rounds they have.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for res in results:
        groups[(res["setting"], res["arm"])].append(res)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (setting, arm), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        report_mean, report_std = mean_std([r["report"]["value"] for r in runs])
        dev_mean, dev_std = mean_std([r["dev_selected"] for r in runs])
        rounds = max(len(r["curve"]) for r in runs)
        curve_mean, curve_std = [], []
        for i in range(rounds):
            m, s = mean_std([r["curve"][i]["dev"] for r in runs if i < len(r["curve"])])
            curve_mean.append(m)
            curve_std.append(s)
        out[setting][arm] = {
            "kind": runs[0]["kind"], "description": runs[0].get("description", arm), "n": len(runs),
            "seeds": [r["seed"] for r in runs], "report_name": runs[0]["report"]["name"],
            "report_mean": report_mean, "report_std": report_std, "dev_mean": dev_mean, "dev_std": dev_std,
            "selected_rounds": [r["selected_round"] for r in runs], "curve_mean": curve_mean,
            "curve_std": curve_std, "steps": sorted({r["total_steps"] for r in runs}),
        }
    return dict(out)


def arm_order(arms: Iterable[str], info: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """In-batch first, then static bands easy to hard, the static mix, then curriculum arms by name."""
    def key(arm: str) -> tuple:
        kind = info[arm]["kind"]
        band = next((i for i, b in enumerate(BAND_ORDER) if arm.endswith(b)), len(BAND_ORDER))
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), band, arm)
    return sorted(arms, key=key)


def best_arm(arms: Mapping[str, Mapping[str, Any]], kinds: Sequence[str]) -> str | None:
    """The arm of the given kinds with the highest mean dev metric (chosen on dev, never on the report set)."""
    pool = [(a["dev_mean"], name) for name, a in arms.items() if a["kind"] in kinds and a["dev_mean"] is not None]
    return max(pool)[1] if pool else None


def difficulty_table(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """setting -> band -> rows and mean anchor-negative similarity at round 0 (the base model, shared by
    every arm) and in the last round of the curriculum arms (mined with the trained encoder)."""
    first: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    last: dict[tuple[str, str], list[float]] = defaultdict(list)
    for res in results:
        curve = res["curve"]
        for band, stats in (curve[0].get("bands") or {}).items():
            first[(res["setting"], band)][res["seed"]] = stats  # identical for every arm of a seed
        if res["kind"] == "curriculum" and len(curve) > 1:
            for band, stats in (curve[-1].get("bands") or {}).items():
                if stats.get("difficulty") is not None:
                    last[(res["setting"], band)].append(stats["difficulty"])
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (setting, band), per_seed in first.items():
        rows, _ = mean_std([s.get("rows") for s in per_seed.values()])
        d0, d0_std = mean_std([s.get("difficulty") for s in per_seed.values()])
        dl, dl_std = mean_std(last.get((setting, band), []))
        out[setting][band] = {"rows": rows, "round0": d0, "round0_std": d0_std, "last": dl, "last_std": dl_std,
                              "last_n": len(last.get((setting, band), []))}
    return dict(out)


# ------------------------------------------------------------------------------------------ writing
def fmt(value: float | None, std: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def conclusion(setting: str, arms: Mapping[str, Mapping[str, Any]], zero_shot: float | None,
               report_name: str, need_zero_shot_gain: bool) -> tuple[list[str], dict[str, Any]]:
    """Plain sentences about this setting's figures, whichever way they fall, and the target checks."""
    cur = best_arm(arms, ["curriculum"])
    static = best_arm(arms, ["in_batch", "static"])
    lines: list[str] = []
    checks: dict[str, Any] = {"over_static": None, "over_zero_shot": None}
    if cur is None or static is None:
        lines.append(f"Not enough finished arms to compare the curriculum with the static arms in {setting}.")
        return lines, checks
    c, s = arms[cur], arms[static]
    diff = c["report_mean"] - s["report_mean"]
    checks["over_static"] = diff >= TARGET_OVER_STATIC
    lines.append(
        f"Best curriculum arm (by mean dev): `{cur}`, {report_name} {fmt(c['report_mean'], c['report_std'])}; "
        f"best non-curriculum arm (by mean dev): `{static}`, {fmt(s['report_mean'], s['report_std'])}. "
        f"Difference {_signed(diff)} points: the ≥ {TARGET_OVER_STATIC} target is "
        f"**{'met' if checks['over_static'] else 'not met'}**.")
    spread = max((a["report_std"] or 0.0) for a in (c, s))
    if abs(diff) < spread:
        lines.append(f"The difference is smaller than the seed-to-seed spread (std up to {spread:.2f}), so "
                     f"these seeds do not separate the two arms.")
    if zero_shot is not None:
        gain = c["report_mean"] - zero_shot
        best_any = max(arms, key=lambda a: arms[a]["report_mean"] if arms[a]["report_mean"] is not None else -1e9)
        lines.append(f"Against zero-shot ({zero_shot:.2f}): the curriculum arm {_signed(gain)}, the best arm "
                     f"overall (`{best_any}`) {_signed(arms[best_any]['report_mean'] - zero_shot)}.")
        if need_zero_shot_gain:
            checks["over_zero_shot"] = gain >= TARGET_OVER_ZERO_SHOT
            lines.append(f"The ≥ {TARGET_OVER_ZERO_SHOT} points over zero-shot target is "
                         f"**{'met' if checks['over_zero_shot'] else 'not met'}**.")
    ib = next((a for a in arms.values() if a["kind"] == "in_batch"), None)
    if ib is not None and ib["report_mean"] is not None:
        harder = [n for n, a in arms.items() if a["kind"] != "in_batch" and a["report_mean"] is not None
                  and a["report_mean"] > ib["report_mean"]]
        lines.append(f"{len(harder)} of {len(arms) - 1} arms with mined negatives beat in-batch negatives only "
                     f"({fmt(ib['report_mean'], ib['report_std'])}).")
    return lines, checks


def plot_dev_curves(summary: Mapping[str, Any], path: Path) -> Path | None:
    """Mean dev metric (± std band) per round for every arm, one panel per setting; x = base, then rounds."""
    from matplotlib.figure import Figure

    settings = [s for s in summary["settings"] if s["arms"]]
    if not settings:
        return None
    fig = Figure(figsize=(7 * len(settings), 5), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    styles = {"in_batch": ":", "static": "--", "curriculum": "-"}
    for ax, setting in zip(axes, settings):
        arms = setting["arms"]
        base = setting.get("zero_shot_dev")
        for arm in arm_order(arms, arms):
            info = arms[arm]
            ys = [base] + info["curve_mean"]
            xs = list(range(len(ys)))
            line, = ax.plot(xs, [float("nan") if y is None else y for y in ys], styles.get(info["kind"], "-"),
                            marker="o", markersize=3, label=arm)
            std = [None] + info["curve_std"]
            lo = [y - s if (y is not None and s is not None) else float("nan") for y, s in zip(ys, std)]
            hi = [y + s if (y is not None and s is not None) else float("nan") for y, s in zip(ys, std)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
        rounds = max(len(a["curve_mean"]) for a in arms.values())
        ax.set_xticks(range(rounds + 1), ["base"] + [str(r) for r in range(rounds)])
        ax.set_xlabel("after round")
        ax.set_ylabel(setting["dev_name"])
        ax.set_title(setting["label"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    from simcse.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def render_section(summary: Mapping[str, Any], plot_rel: str | None) -> str:
    """The markdown of the experiment section (markers included)."""
    run = summary["run"]
    lines = [START_MARKER, "## Experiment (issue 6)", ""]
    if run.get("smoke"):
        lines += [("> **SMOKE RUN** — a handful of steps on a tiny subsample to prove the harness end to end. "
                   "These numbers mean nothing about the question."), ""]
    if run.get("incomplete"):
        lines += [f"> **Incomplete**: {run['incomplete']}", ""]
    lines += [
        ("Does moving from easy to hard negatives (curriculum) beat a fixed mix? Every arm trains the same "
         "number of optimiser steps on the same data with the same seeds, starting from the offline "
         "all-MiniLM-L6-v2; each round re-mines with the current encoder, trains, and scores the dev set; the "
         "round with the best dev score is the arm's model."), "",
        (f"- Size `{run['size']}`: {run['rounds']} rounds × {run['steps_per_round']} steps, batch "
         f"{run['batch_size']} ({run['total_steps']} optimiser steps per arm), seeds {run['seeds']}."),
        f"- Data: {run['data']}.",
        f"- Machine: {run['machine']}; wall time {run['wall']}.",
        f"- Command: `{run['command']}`.", "",
    ]
    all_checks = []
    for setting in summary["settings"]:
        arms = setting["arms"]
        lines += [f"### {setting['label']}", ""]
        if not arms:
            lines += ["No finished arms.", ""]
            continue
        zs = setting.get("zero_shot_report")
        lines += [(f"| arm | kind | seeds | {setting['dev_name']} (selected round) | {setting['report_name']} "
                   f"| Δ vs zero-shot | selected rounds |"), "|---|---|---|---|---|---|---|",
                  f"| zero-shot (all-MiniLM-L6-v2) | – | – | {fmt(setting.get('zero_shot_dev'))} | {fmt(zs)} | – | – |"]
        for arm in arm_order(arms, arms):
            a = arms[arm]
            delta = None if zs is None or a["report_mean"] is None else a["report_mean"] - zs
            lines.append(f"| `{arm}` | {a['kind']} | {a['n']} | {fmt(a['dev_mean'], a['dev_std'])} | "
                         f"{fmt(a['report_mean'], a['report_std'])} | {_signed(delta)} | "
                         f"{', '.join(str(r) for r in a['selected_rounds'])} |")
        lines.append("")
        check = setting.get("zero_shot_check")
        if check:
            lines += [f"Zero-shot check: {check}", ""]
        diff = setting.get("difficulty") or {}
        if diff:
            lines += ["Measured difficulty per band (mean anchor-negative cosine similarity; mean over seeds):", "",
                      "| band | rows (round 0) | round 0, base encoder | last round, trained encoder (curriculum arms) |",
                      "|---|---|---|---|"]
            ordered = [b for b in BAND_ORDER if b in diff] + sorted(b for b in diff if b not in BAND_ORDER)
            for band in ordered:
                d = diff[band]
                lines.append(f"| {band} | {fmt(d['rows'], digits=0)} | {fmt(d['round0'], d['round0_std'], 3)} | "
                             f"{fmt(d['last'], d['last_std'], 3)} |")
            measured = sorted((b for b in ordered if diff[b]["round0"] is not None), key=lambda b: diff[b]["round0"])
            designed = [b for b in BAND_ORDER if b in measured]
            verdict = "as designed" if measured == designed else "differs from the design order " + " < ".join(designed)
            lines += ["", f"Measured order at round 0, easy to hard: {' < '.join(measured)} ({verdict}).", ""]
        text, checks = conclusion(setting["label"], arms, zs, setting["report_name"], setting.get("need_zero_shot_gain", False))
        all_checks.append(checks)
        lines += ["**Reading.** " + " ".join(text), ""]
    if plot_rel:
        lines += [f"![dev metric per round, mean ± std over seeds]({plot_rel})", ""]
    lines += ["### Conclusion", "", overall_conclusion(all_checks, run), "", END_MARKER]
    return "\n".join(lines) + "\n"


def overall_conclusion(checks: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> str:
    if run.get("smoke"):
        return "None: this was a smoke run. Run `--size cpu` or `--size gpu` for figures that answer the question."
    values = [v for c in checks for v in c.values() if v is not None]
    if not values:
        return "The finished arms are not enough to test the targets."
    if all(values):
        return "The curriculum met every target set in issue 6 in these runs."
    return ("The curriculum did not meet every target set in issue 6 in these runs (see each setting's reading "
            "above); the closing note says what the figures suggest to try next.")


def write_section(path: Path, section: str) -> None:
    """Put `section` between the markers of `path` (replacing what was there), or append it; create the file
    when missing. Everything outside the markers is kept byte for byte."""
    from simcse.io import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n"
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
