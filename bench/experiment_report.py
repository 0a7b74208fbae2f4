"""The experiment's results: paired contrasts with confidence intervals, tables and figures, written as one
section of docs/results.md between markers (the rest of the file is left alone).

The analysis is the pre-registered one (docs/experiment.md): per start and setting, the primary endpoint is
the report-set score of the *final* model (no selection); for each contrast the per-seed differences of
paired arms give a mean, a t-based 95 % confidence interval and a two-sided p value; the two primary
contrasts (order: curriculum - static_matched; recipe: curriculum - the setting's recipe) are Holm-corrected
within each start and setting; a difference whose CI lies inside +-0.5 reads as equivalent. Everything here
reads JSON files only (no torch), so the section can be rebuilt at any time and is unit-tested.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import experiment_design as design
from bench import machine
from dataio.triplet_layout import band_order
from simcse.evaluation import metric_value

START_MARKER = "<!-- experiment:start -->"
END_MARKER = "<!-- experiment:end -->"
ARM_ORDER = ("in_batch", "static_nli", "static_nn", "static_matched", "curriculum", "anti_curriculum")
GOAL = 0.5          # issue 10: curriculum >= static_matched + 0.5 and >= the recipe + 0.5 in at least one start
EQUIVALENCE = 0.5   # a CI inside +-0.5 reads as "no difference that matters"
CONFIDENCE = 0.95
PRECISION = 0.3     # the precision target: 95 % CI half-width of the General primary contrasts (docs/experiment.md)


# ------------------------------------------------------------------------------------------- reading
def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every finished result (`<results>/<start>/<setting>/<arm>/seed<s>.json`), in a stable order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(results_dir).glob("*/*/*/seed*.json"))]


def endpoint(result: Mapping[str, Any], name: str, which: str = "final") -> float | None:
    """The report metric `name` of the final model (primary) or the dev-selected one (secondary)."""
    return metric_value(result[which]["report"], name)


# --------------------------------------------------------------------------------------- statistics
def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def paired(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Seed-paired differences a - b: mean, sd, n, a t-based CI and a two-sided one-sample t-test p value."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds if a[s] is not None and b[s] is not None]
    n = len(diffs)
    out: dict[str, Any] = {"n": n, "seeds": seeds, "diffs": diffs, "mean": None, "sd": None, "low": None,
                           "high": None, "half_width": None, "p": None}
    if n == 0:
        return out
    mean = statistics.fmean(diffs)
    out["mean"] = mean
    if n < 2:
        return out
    sd = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    out.update(sd=sd, low=mean - half, high=mean + half, half_width=half)
    if sd > 0:
        out["p"] = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:
        out["p"] = 0.0 if mean != 0 else 1.0
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p values (None stays None), in the input order."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def reading(contrast: Mapping[str, Any], goal: float = GOAL, margin: float = EQUIVALENCE) -> str:
    """What a contrast says, in words (docs/experiment.md, "Analysis"): the goal is met when the mean
    difference is at least `goal` and the difference is significant (Holm-adjusted p < 0.05 for a primary
    contrast); equivalent when the 95 % CI lies inside +-`margin`; else better, worse or not separated."""
    if contrast["low"] is None:
        return "too few seeds"
    low, high, mean = contrast["low"], contrast["high"], contrast["mean"]
    p = contrast.get("p_holm", contrast.get("p"))
    if mean >= goal and p is not None and p < 0.05:
        return f"better by ≥ {goal} (goal met)"
    if low > 0:
        return f"better, by less than {goal}" if high < goal else "better; the goal neither met nor excluded"
    if high < 0:
        return f"worse, by less than {margin}" if low > -margin else "worse"
    if -margin < low and high < margin:
        return f"equivalent within ±{margin}"
    return "not separated"


# ------------------------------------------------------------------------------------------- analysis
def contrasts_for(setting: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, kind, arm a, arm b) of a setting: the two primary contrasts, the control, the secondary ones."""
    recipe = setting["recipe"]
    out = [("order: curriculum − static_matched", "primary", "curriculum", "static_matched"),
           (f"recipe: curriculum − {recipe}", "primary", "curriculum", recipe)]
    if recipe != "in_batch":
        out.append((f"control: {recipe} − in_batch", "control", recipe, "in_batch"))
    else:
        out.append(("control: static_nn − in_batch", "control", "static_nn", "in_batch"))
    out += [("curriculum − anti_curriculum", "secondary", "curriculum", "anti_curriculum"),
            ("curriculum − static_nn", "secondary", "curriculum", "static_nn")]
    return out


def analyse(results: Iterable[Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One block per (start, setting) with results: arms (per-seed values and summaries) and contrasts."""
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for res in results:
        groups[(res["start"], res["setting"])][res["arm"]].append(res)
    blocks = []
    for (start, name), arms in sorted(groups.items(), key=lambda kv: (kv[0][0] != "tuned", kv[0][1] != "general")):
        setting = settings[name]
        report = setting["report_metric"]
        guard = setting.get("guard_metric")
        any_result = next(iter(arms.values()))[0]
        base = any_result["base"]
        per_arm = {}
        for arm in sorted(arms, key=lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER)):
            runs = sorted(arms[arm], key=lambda r: r["seed"])
            final = {r["seed"]: endpoint(r, report) for r in runs}
            selected = {r["seed"]: endpoint(r, report, "selected") for r in runs}
            devs = {r["seed"]: r["final"]["dev"] for r in runs}
            guards = {r["seed"]: endpoint(r, guard) for r in runs} if guard else {}
            per_arm[arm] = {
                "n": len(runs), "seeds": [r["seed"] for r in runs], "final": final, "selected": selected,
                "dev": devs, "guard": guards, "final_summary": mean_sd(list(final.values())),
                "selected_summary": mean_sd(list(selected.values())), "dev_summary": mean_sd(list(devs.values())),
                "guard_summary": mean_sd(list(guards.values())) if guard else (None, None),
                "selected_rounds": [r["selected"]["round"] for r in runs], "description": runs[0].get("description"),
                "curves": {r["seed"]: r["curve"] for r in runs}}
        contrasts = []
        for label, kind, a, b in contrasts_for(setting):
            if a in per_arm and b in per_arm:
                c = paired(per_arm[a]["final"], per_arm[b]["final"])
                c.update(label=label, kind=kind, a=a, b=b,
                         selected=paired(per_arm[a]["selected"], per_arm[b]["selected"]))
                contrasts.append(c)
        primary = [c for c in contrasts if c["kind"] == "primary"]
        for c, adj in zip(primary, holm([c["p"] for c in primary])):
            c["p_holm"] = adj
        for c in contrasts:
            c["reading"] = reading(c)
        blocks.append({"start": start, "setting": name, "label": setting["label"], "dev_name": setting["dev_name"],
                       "report_name": setting["report_name"], "report_metric": report, "guard_metric": guard,
                       "base_report": metric_value(base["report"], report),
                       "base_guard": metric_value(base["report"], guard),
                       "base_dev": base["dev"], "arms": per_arm, "contrasts": contrasts,
                       "pairing": pairing_check(arms), "difficulty": difficulty(arms)})
    return blocks


def pairing_check(arms: Mapping[str, Sequence[Mapping[str, Any]]], key: str = "anchors_sha256") -> dict[str, int]:
    """How many (seed, round) groups had the same anchor sequence in every arm (paired sampling): by `key`, the
    digest of the batches' anchors and positives, or `anchor_order_sha256`, of the anchors alone (arms whose
    positives differ by design, mined positives)."""
    digests: dict[tuple[int, int], set[str]] = defaultdict(set)
    for runs in arms.values():
        for r in runs:
            for c in r["curve"]:
                if c.get(key):
                    digests[(r["seed"], c["round"])].add(c[key])
    return {"groups": len(digests), "identical": sum(1 for d in digests.values() if len(d) == 1)}


def difficulty(arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean anchor-negative similarity per band: round 0 (the start model) and the curriculum's last round."""
    first: dict[str, list[float]] = defaultdict(list)
    rows: dict[str, list[float]] = defaultdict(list)
    last: dict[str, list[float]] = defaultdict(list)
    for arm, runs in arms.items():
        for r in runs:
            if arm == "curriculum":
                for band, s in (r["curve"][0].get("bands") or {}).items():
                    if s.get("difficulty") is not None:
                        first[band].append(s["difficulty"])
                        rows[band].append(s["rows"])
                if len(r["curve"]) > 1:
                    for band, s in (r["curve"][-1].get("bands") or {}).items():
                        if s.get("difficulty") is not None:
                            last[band].append(s["difficulty"])
    bands = band_order(first)
    return {b: {"rows": mean_sd(rows[b])[0], "round0": mean_sd(first[b]), "last": mean_sd(last[b])} for b in bands}


# ------------------------------------------------------------------------------------------ figures
def plot_forest(blocks: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Every contrast of every start and setting: mean paired difference with its 95 % CI."""
    from matplotlib.figure import Figure

    rows = [(f"{b['start']} / {b['setting']}: {c['label']}", c) for b in blocks for c in b["contrasts"]
            if c["low"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(9, 0.32 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    colours = {"primary": "tab:blue", "control": "tab:green", "secondary": "tab:grey"}
    for y, (_, c) in enumerate(reversed(rows)):
        ax.plot([c["low"], c["high"]], [y, y], color=colours[c["kind"]], linewidth=2)
        ax.plot([c["mean"]], [y], "o", color=colours[c["kind"]])
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    for x in (-EQUIVALENCE, EQUIVALENCE):
        ax.axvline(x, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlabel("paired difference on the report set (points), mean and 95 % CI over seeds")
    ax.set_title("Contrasts (blue: primary, green: positive control, grey: secondary); dotted: ±0.5")
    return _save(fig, path)


def plot_dev_by_step(blocks: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """The dev metric after every round (step 0: the start model), mean over seeds, one panel per block."""
    from matplotlib.figure import Figure

    if not blocks:
        return None
    fig = Figure(figsize=(5 * min(2, len(blocks)), 3.6 * math.ceil(len(blocks) / 2)), layout="constrained")
    axes = fig.subplots(math.ceil(len(blocks) / 2), min(2, len(blocks)), squeeze=False).reshape(-1)
    for ax, block in zip(axes, blocks):
        for arm, info in block["arms"].items():
            curves = list(info["curves"].values())
            steps = [0] + [c["step"] for c in curves[0]]
            means = [block["base_dev"]] + [mean_sd([cur[i]["dev"] for cur in curves])[0] for i in range(len(curves[0]))]
            ax.plot(steps, means, marker="o", label=arm)
        ax.set_title(f"{block['start']} / {block['setting']}", fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(block["dev_name"], fontsize=8)
        ax.legend(fontsize=6)
    for ax in axes[len(blocks):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_band_shares(blocks: Sequence[Mapping[str, Any]], path: Path, bin_steps: int = 10) -> Path | None:
    """Share of each band among the trained negatives over the run (mean over seeds) for the scheduled arms."""
    from matplotlib.figure import Figure

    arms = ("curriculum", "static_matched", "anti_curriculum")
    panels = [(b, a) for b in blocks for a in arms if a in b["arms"]]
    if not panels:
        return None
    fig = Figure(figsize=(12, 2.4 * math.ceil(len(panels) / 3)), layout="constrained")
    axes = fig.subplots(math.ceil(len(panels) / 3), 3, squeeze=False).reshape(-1)
    for ax, (block, arm) in zip(axes, panels):
        shares = band_shares(block["arms"][arm]["curves"], bin_steps)
        if shares:
            xs = [i * bin_steps for i in range(len(next(iter(shares.values()))))]
            ax.stackplot(xs, list(shares.values()), labels=list(shares), step="post")
            ax.set_ylim(0, 1)
        ax.set_title(f"{block['start']} / {block['setting']}: {arm}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="upper left")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)


def band_shares(curves: Mapping[int, Sequence[Mapping[str, Any]]], bin_steps: int) -> dict[str, list[float]]:
    """band -> share per bin of `bin_steps` steps, over all seeds' trained negatives."""
    totals: dict[str, list[float]] = defaultdict(list)
    counts: list[float] = []
    for curve in curves.values():
        step = 0
        for c in curve:
            per = c.get("bands_per_step") or {}
            names = per.get("bands") or []
            for row in per.get("counts") or []:
                b = step // bin_steps
                while len(counts) <= b:
                    counts.append(0.0)
                    for name in totals:
                        totals[name].append(0.0)
                for name, n in zip(names, row):
                    if name not in totals:
                        totals[name] = [0.0] * len(counts)
                    totals[name][b] += n
                counts[b] += sum(row)
                step += 1
    order = band_order(totals)
    return {b: [t / c if c else 0.0 for t, c in zip(totals[b], counts)] for b in order}


def _save(fig: Any, path: Path) -> Path:
    from dataio.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


# ------------------------------------------------------------------------------------------ writing
def fmt(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_ms(summary: tuple[float | None, float | None]) -> str:
    mean, sd = summary
    return "–" if mean is None else (f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f}")


def fmt_p(p: float | None) -> str:
    return "–" if p is None else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def render_block(block: Mapping[str, Any]) -> list[str]:
    guard = block["guard_metric"]
    lines = [f"### {block['label']} — start: {block['start']}", ""]
    head = ["arm", "seeds", f"{block['dev_name']} (final)", f"{block['report_name']}: final model (primary)",
            "Δ vs start", "dev-selected model (secondary)", "selected rounds"]
    if guard:
        head.insert(5, f"guard {guard}: final")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    start_row = ["start model", "–", fmt(block["base_dev"]), fmt(block["base_report"]), "–", fmt(block["base_report"]),
                 "–"]
    if guard:
        start_row.insert(5, fmt(block["base_guard"]))
    lines.append("| " + " | ".join(start_row) + " |")
    for arm, info in block["arms"].items():
        mean = info["final_summary"][0]
        delta = None if mean is None or block["base_report"] is None else mean - block["base_report"]
        row = [f"`{arm}`", str(info["n"]), fmt_ms(info["dev_summary"]), fmt_ms(info["final_summary"]),
               fmt(delta, sign=True), fmt_ms(info["selected_summary"]),
               ", ".join(str(r) for r in info["selected_rounds"])]
        if guard:
            row.insert(5, fmt_ms(info["guard_summary"]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Paired contrasts on the primary endpoint (the final model on the report set; differences per "
              "seed, t-based 95 % CI; Holm over the two primary contrasts):", "",
              "| contrast | kind | seeds | mean Δ | 95 % CI | p | p (Holm) | reading | dev-selected Δ [95 % CI] |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in block["contrasts"]:
        sel = c["selected"]
        ci = f"[{fmt(c['low'], sign=True)}, {fmt(c['high'], sign=True)}]" if c["low"] is not None else "–"
        sel_ci = (f"{fmt(sel['mean'], sign=True)} [{fmt(sel['low'], sign=True)}, {fmt(sel['high'], sign=True)}]"
                  if sel["low"] is not None else fmt(sel["mean"], sign=True))
        lines.append(f"| {c['label']} | {c['kind']} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci} | "
                     f"{fmt_p(c['p'])} | {fmt_p(c.get('p_holm'))} | {c['reading']} | {sel_ci} |")
    pairing = block["pairing"]
    lines += ["", f"Pairing: in {pairing['identical']} of {pairing['groups']} (seed, round) groups every arm "
              f"trained on the same anchors and positives in the same order (digest of the batches).", ""]
    diff = block["difficulty"]
    if diff:
        lines += ["Measured difficulty (mean anchor-negative cosine; curriculum arm, mean over seeds):", "",
                  "| band | rows | round 0 (start model) | last round (trained encoder) |", "|---|---|---|---|"]
        for band, d in diff.items():
            lines.append(f"| {band} | {fmt(d['rows'], 0)} | {fmt_ms(d['round0'])} | {fmt_ms(d['last'])} |")
        order = sorted(diff, key=lambda b: diff[b]["round0"][0])
        lines += ["", f"Measured order at round 0, easy to hard: {' < '.join(order)}.", ""]
    return lines


def answer(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Three plain sentences, generated from the contrasts (order, recipe, which negatives to use)."""
    def find(block: Mapping[str, Any], prefix: str) -> Mapping[str, Any] | None:
        return next((c for c in block["contrasts"] if c["label"].startswith(prefix)), None)

    def describe(prefix: str) -> str:
        parts = []
        for b in blocks:
            c = find(b, prefix)
            if c is not None and c["low"] is not None:
                parts.append(f"{b['start']}/{b['setting']} {fmt(c['mean'], sign=True)} "
                             f"[{fmt(c['low'], sign=True)}, {fmt(c['high'], sign=True)}] ({c['reading']})")
        return "; ".join(parts) or "not measured"

    order_met = any((find(b, "order") or {}).get("reading", "").endswith("(goal met)") for b in blocks)
    recipe_met = any((find(b, "recipe") or {}).get("reading", "").endswith("(goal met)") for b in blocks)
    best = []
    for b in blocks:
        devs = {arm: info["dev_summary"][0] for arm, info in b["arms"].items() if info["dev_summary"][0] is not None}
        if devs:
            arm = max(devs, key=devs.get)
            best.append(f"{b['start']}/{b['setting']}: `{arm}` ({b['report_name']} "
                        f"{fmt(b['arms'][arm]['final_summary'][0])} vs start model {fmt(b['base_report'])})")
    order_text, recipe_text = describe("order"), describe("recipe")
    return [
        f"1. **Does the order matter?** Curriculum minus the same stages shuffled in time: {order_text}. "
        + ("" if order_text == "not measured" else "The goal (≥ +0.5) is met in at least one start." if order_met
           else "Ordering the same negatives from easy to hard did not beat visiting them in random order by the "
                "goal of 0.5 points anywhere."),
        f"2. **Does the curriculum beat the recipe?** Curriculum minus the setting's recipe: {recipe_text}. "
        + ("" if recipe_text == "not measured" else "The goal (≥ +0.5) is met in at least one start." if recipe_met
           else "It did not beat the recipe a team would pick by default by 0.5 points anywhere."),
        "3. **Which negatives to use?** The arm with the best mean dev score (selected on dev, reported on the "
        "report set): " + "; ".join(best) + ".",
    ]


def _seed_span(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def seeds_lines(blocks: Sequence[Mapping[str, Any]], planned: Sequence[int]) -> list[str]:
    """The seeds each block was run with, the sequential extension where one was made, and whether the General
    primary contrasts reached the precision target (all pre-registered in docs/experiment.md)."""
    if not blocks:
        return []
    runs = []
    extended = []
    for block in blocks:
        seeds = sorted({s for arm in block["arms"].values() for s in arm["seeds"]})
        runs.append(f"{block['start']} {block['label']} n = {len(seeds)} ({_seed_span(seeds)})")
        extra = [s for s in seeds if s not in set(planned)]
        if extra and planned:
            extended.append((f"{block['start']} {block['label']}", extra))
    lines = [f"- Seeds run: {'; '.join(runs)}."]
    if extended:
        lines.append(f"- Sequential extension: seeds {_seed_span(sorted({s for _, e in extended for s in e}))} were "
                     f"added after the planned {_seed_span(list(planned))} finished, for "
                     f"{', '.join(name for name, _ in extended)}, because the precision target was not met at "
                     f"n = {len(planned)} (the pre-registered rule); the CIs below are over all seeds run, with no "
                     "correction for the look at n = " + f"{len(planned)}.")
    checks = []
    for block in blocks:
        if block["setting"] != "general":
            continue
        for c in block["contrasts"]:
            if c["kind"] == "primary" and c["half_width"] is not None:
                met = "met" if c["half_width"] <= PRECISION else "not met"
                checks.append(f"{block['start']} {c['label'].split(':')[0]} ±{c['half_width']:.2f} ({met})")
    if checks:
        lines.append(f"- Precision target (95 % CI half-width ≤ {PRECISION} on the General primary contrasts): "
                     + "; ".join(checks) + ".")
    return lines


def render_section(blocks: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], figures: Mapping[str, str | None]
                   ) -> str:
    size = meta.get("size") or {}
    lines = [START_MARKER, "## Curriculum experiment (issue 10, pre-registered in docs/experiment.md)", ""]
    if size.get("name") == "smoke":
        lines += ["**SMOKE RUN: a few steps on tiny subsamples; it proves the harness, its numbers mean nothing.**", ""]
    lines += [f"- Size `{size.get('name', '?')}`: {size.get('rounds', '?')} rounds × "
              f"{size.get('steps_per_round', '?')} "
              f"steps at batch {size.get('batch_size', '?')} per arm and seed; seeds planned {size.get('seeds', '?')}.",
              f"- Machine: {meta.get('machine', '–')}; {meta.get('wall', '–')}; "
              f"finished {meta.get('finished') or 'not yet (runs continue)'}.",
              f"- Command{'s' if len(meta.get('commands') or []) > 1 else ''}: "
              f"{', then '.join(f'`{c}`' for c in (meta.get('commands') or [meta.get('command', '–')]))}; "
              "rebuild this section: "
              f"`python -m bench.experiment report --size {size.get('name', '?')}`."]
    lines += seeds_lines(blocks, size.get("seeds") or []) + [""]
    if meta.get("incomplete"):
        lines += [f"**Incomplete:** {meta['incomplete']}", ""]
    lines += ["### The answer", ""] + answer(blocks) + [""]
    if figures.get("forest"):
        lines += [f"![paired contrasts]({figures['forest']})", ""]
    for block in blocks:
        lines += render_block(block)
    if figures.get("dev"):
        lines += [f"![dev metric by step per arm]({figures['dev']})", ""]
    if figures.get("bands"):
        lines += [f"![band shares over the run]({figures['bands']})", ""]
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, start: str = START_MARKER, end: str = END_MARKER) -> None:
    """Replace the text between the markers (or append the section) and leave the rest of the file alone."""
    from dataio.atomic import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def run_meta(out: Path, size: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the section says about the run: `run_meta.json` (commands, machine, wall time), the size, and which
    planned runs have no result yet. The machine comes back as one line (`bench.machine.text`)."""
    meta_path = out / "run_meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    meta["size"] = dict(size)
    if meta.get("machine"):
        meta["machine"] = machine.text(meta["machine"])
    if meta.get("wall_seconds") is not None:
        meta["wall"] = f"{meta['wall_seconds'] / 3600:.1f} h wall over {meta.get('invocations', 1)} invocation(s)"
    planned = design.planned_runs(dict(size))
    done = {(r["start"], r["setting"], r["arm"], r["seed"]) for r in results}
    missing = [p for p in planned if p not in done]
    if missing:
        meta["incomplete"] = (f"{len(missing)} of {len(planned)} planned runs have no result "
                              f"(e.g. {', '.join('/'.join(map(str, m)) for m in missing[:3])}).")
    return meta


def write(out: Path, size: Mapping[str, Any], results_md: Path) -> Path:
    """Analyse the results under `out`, draw the figures next to `results_md` and write its section."""
    import os

    results = load_results(out / "results")
    settings = {name: design.load_setting(name)["experiment"] for name in design.SETTINGS}
    blocks = analyse(results, settings)
    meta = run_meta(out, size, results)
    suffix = "" if size.get("name") == "main" else f"_{size.get('name')}"
    folder = results_md.parent / "figures"
    figures = {}
    for key, fn in (("forest", plot_forest), ("dev", plot_dev_by_step), ("bands", plot_band_shares)):
        written = fn(blocks, folder / f"experiment_{key}{suffix}.png")
        figures[key] = os.path.relpath(written, results_md.parent) if written else None
    write_section(results_md, render_section(blocks, meta, figures))
    (out / "summary.json").write_text(json.dumps({"meta": meta, "blocks": blocks}, indent=1, default=str) + "\n",
                                      encoding="utf-8")
    return results_md
