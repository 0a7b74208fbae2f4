"""The judge experiment's results (issue 23, pre-registered in docs/experiment.md): each arm against the start
model and against `in_batch`, the teacher's ceiling, the winner by the select half, and the hand-over margin from
seed-to-seed noise, written as one section of docs/results.md between its own markers.

Reads JSON files (the result of each arm x seed) and the run folders' round manifests (the share of anchors with a
mined positive); no torch. The statistics are the curriculum experiment's (`experiment_report.paired`, `holm`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.experiment_report import (
    band_shares,
    endpoint,
    holm,
    load_results,
    mean_sd,
    paired,
    pairing_check,
    run_meta,
    write_section,
)
from dataio.triplet_layout import band_order
from simcse.evaluation import metric_value

START_MARKER = "<!-- judge-experiment:start -->"
END_MARKER = "<!-- judge-experiment:end -->"
ARM_ORDER = ("in_batch", "mined_student", "mined_teacher", "teacher_nn", "distill")  # phase 1
PHASE2 = ("graded_curriculum", "graded_shuffled")  # phase 2: the curriculum over the teacher's grades, its control
VARIANT_BASE = "mined_teacher"  # phases 3 and 6: variants of phase 1's winner, each read against it
PHASE3 = ("mined_teacher_more", "mined_teacher_lr2")
PHASE6 = ("mined_ensemble", "mined_teacher_strict")  # phase 6: a stricter judge (teacher+student; a higher cosine)
VARIANT_PHASES = {3: PHASE3, 6: PHASE6}
# The sizes docs/experiment.md registered: phase 1, and phases 2, 3 and 6 run into phase 1's folder.
REGISTERED_SIZES = ("judge", "judge2", "judge3", "judge6")
# <out>/<folder>: a phase's rerun of one phase-1 record on that phase's snapshot (the reproduction control)
REPRODUCTION_FOLDERS = {3: "reproduction", 6: "reproduction6"}
# What a phase's goal row must say beside it (docs/experiment.md, phase 6's registration).
READINGS = {6: "This is the sixth reading of the same report half (phases 1–6 each read it): the select half chose, "
               "and held-out pairs outside this repository are the check of any setting that follows."}
REPRODUCTION_TOLERANCE = 0.05  # AP points: the rerun's report-half score must be this close to the record's
REFERENCE = "in_batch"
GOAL = 1.0          # issue 23: the winning arm beats the start by >= 1.0 AP, its CI excluding 0
GUARD_DROP = 0.5    # ... and its STS-B test is not lower than the start's by more than 0.5
TIE = 0.1           # select-half means within 0.1 of the best tie: the simpler arm (ARM_ORDER) wins
REPORT = "pairs/dev_pairs"
GUARD = "sts/test"


def _order(arm: str) -> int:
    order = ARM_ORDER + PHASE2 + PHASE3 + PHASE6
    return order.index(arm) if arm in order else len(order)


def mined_share(run_root: Path) -> dict[int, float]:
    """Round -> share of anchors with a mined positive, from a run folder's round manifests."""
    out = {}
    for manifest in sorted(run_root.glob("triplets/round=*/.manifest.json")):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        mined = data.get("mined_positives")
        if mined:
            out[int(data["round"])] = float(mined["share"])
    return out


def reference_scores(scores: Mapping[str, Any] | None, report: str) -> dict[str, Any] | None:
    """A model every arm is read against (the start, the teacher), from a result's record of it: its `report` metric
    and the STS-B guard on the report set, and its dev score; None when the record has none."""
    if not scores:
        return None
    return {"report": metric_value(scores["report"], report), "guard": metric_value(scores["report"], GUARD),
            "dev": scores["dev"]}


def margin_from_noise(select_finals: Sequence[float]) -> float | None:
    """The hand-over margin: 2 x the standard deviation over seeds of one arm's final select-half score,
    rounded up to 0.05 (docs/experiment.md, "Corrections")."""
    _, sd = mean_sd(select_finals)
    if sd is None:
        return None
    return math.ceil(2 * sd / 0.05 - 1e-9) * 0.05


def arm_scores(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One arm's runs by seed: the final model's report-half score (`final`), its STS-B test (`guard`) and its
    select-half score (`dev`), each with its mean and SD, and the mean seconds of training."""
    runs = sorted(runs, key=lambda r: r["seed"])
    final = {r["seed"]: endpoint(r, REPORT) for r in runs}
    guard = {r["seed"]: endpoint(r, GUARD) for r in runs}
    dev = {r["seed"]: r["final"]["dev"] for r in runs}
    return {"n": len(runs), "seeds": [r["seed"] for r in runs], "final": final, "guard": guard, "dev": dev,
            "final_summary": mean_sd(list(final.values())), "guard_summary": mean_sd(list(guard.values())),
            "dev_summary": mean_sd(list(dev.values())),
            "train_seconds": mean_sd([r["timings"].get("train") for r in runs if r.get("timings")])[0]}


def versus_start(arm: Mapping[str, Any], start: Mapping[str, Any]) -> dict[str, Any]:
    """An arm (`arm_scores`) against the start model, paired by seed: the report-half difference, and the STS-B
    guard's change (`guard_change`)."""
    return {**paired(arm["final"], {s: start["report"] for s in arm["final"]}),
            "guard_change": paired(arm["guard"], {s: start["guard"] for s in arm["guard"]})}


def analyse(results: Iterable[Mapping[str, Any]], runs_dir: Path | None = None) -> dict[str, Any]:
    """Arms (per-seed values, summaries), contrasts against the start and against in_batch, teacher, winner."""
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for res in results:
        by_arm[res["arm"]].append(res)
    if not by_arm:
        return {"arms": {}, "contrasts": [], "start": None, "teacher": None, "winner": None, "margin": None}
    first = next(iter(by_arm.values()))[0]
    start, teacher = reference_scores(first["base"], REPORT), reference_scores(first.get("teacher_scores"), REPORT)
    arms: dict[str, dict[str, Any]] = {}
    for arm in sorted(by_arm, key=_order):
        runs = sorted(by_arm[arm], key=lambda r: r["seed"])
        selected = {r["seed"]: endpoint(r, REPORT, "selected") for r in runs}
        shares: dict[int, list[float]] = defaultdict(list)
        for r in runs:  # the result's own record; else its run folder, where that was kept
            recorded = {c["round"]: c["mined_positives_share"] for c in r.get("curve") or []
                        if c.get("mined_positives_share") is not None}
            if not recorded and runs_dir is not None:
                recorded = mined_share(runs_dir / r["start"] / r["setting"] / arm / f"seed{r['seed']}")
            for rnd, share in recorded.items():
                shares[rnd].append(share)
        arms[arm] = {**arm_scores(runs), "selected": selected, "selected_summary": mean_sd(list(selected.values())),
                     "selected_rounds": [r["selected"]["round"] for r in runs],
                     "description": runs[0].get("description"),
                     "mined_share": {k: mean_sd(v)[0] for k, v in sorted(shares.items())}}
    contrasts = []
    for arm, a in arms.items():
        row = {"label": f"{arm} − start model", "kind": "goal", "a": arm, "b": "start", **versus_start(a, start)}
        row["reading"] = goal_reading(row)
        known = None not in (start["report"], row["mean"]) and teacher and teacher["report"] is not None
        if known:
            gap = teacher["report"] - start["report"]
            row["gap_closed"] = row["mean"] / gap if gap > 0 else None
        contrasts.append(row)
    versus_reference = []
    for arm, a in arms.items():
        if arm == REFERENCE or REFERENCE not in arms or arm not in ARM_ORDER:  # phase 1's family of four
            continue
        c = paired(a["final"], arms[REFERENCE]["final"])
        c.update(label=f"{arm} − {REFERENCE}", kind="vs reference", a=arm, b=REFERENCE)
        versus_reference.append(c)
    for c, adj in zip(versus_reference, holm([c["p"] for c in versus_reference])):
        c["p_holm"] = adj
        c["reading"] = difference_reading(c)
    contrasts += versus_reference
    winner = pick_winner({a: v for a, v in arms.items() if a in ARM_ORDER})  # phase 1's rule, its arms
    contrasts += phase2_contrasts(arms, winner)
    reference_dev = list(arms[REFERENCE]["dev"].values()) if REFERENCE in arms else []
    result = {"arms": arms, "contrasts": contrasts, "start": start, "teacher": teacher, "winner": winner,
              "margin": margin_from_noise(reference_dev), "pairing": pairing_check(by_arm, "anchor_order_sha256"),
              "exposure": exposure_check(by_arm)}
    for phase, variants in VARIANT_PHASES.items():
        contrasts += variant_contrasts(arms, phase)
        result[f"phase{phase}_winner"] = variant_winner(arms, phase)
        result[f"phase{phase}_pairing"] = {
            v: pairing_check({VARIANT_BASE: by_arm[VARIANT_BASE], v: by_arm[v]}, "anchor_order_sha256")
            for v in variants if v in by_arm and VARIANT_BASE in by_arm}
    return result


def variant_winner(arms: Mapping[str, Mapping[str, Any]], phase: int) -> str | None:
    """A variant phase's choice (3 or 6), by the select half only: a variant replaces phase 1's winner when its
    mean final select-half AP beats that arm's by more than TIE (the best such variant); None before any variant
    of the phase has run."""
    variants = VARIANT_PHASES[phase]
    if VARIANT_BASE not in arms or not any(v in arms for v in variants):
        return None
    base = arms[VARIANT_BASE]["dev_summary"][0]
    means = {v: arms[v]["dev_summary"][0] for v in variants if v in arms and arms[v]["dev_summary"][0] is not None}
    better = {v: m for v, m in means.items() if base is not None and m > base + TIE}
    return max(better, key=better.__getitem__) if better else VARIANT_BASE


def variant_contrasts(arms: Mapping[str, Mapping[str, Any]], phase: int) -> list[dict[str, Any]]:
    """Each variant of a phase (3 or 6) against phase 1's winner, paired by seed, Holm over the phase's variants
    that ran."""
    out = []
    for variant in VARIANT_PHASES[phase]:
        if variant in arms and VARIANT_BASE in arms:
            c = paired(arms[variant]["final"], arms[VARIANT_BASE]["final"])
            c.update(label=f"{variant} − {VARIANT_BASE}", kind=f"phase {phase}", a=variant, b=VARIANT_BASE)
            out.append(c)
    for c, adj in zip(out, holm([c["p"] for c in out])):
        c["p_holm"] = adj
        c["reading"] = difference_reading(c)
    return out


def reproduction_check(record: Mapping[str, Any], rerun: Mapping[str, Any]) -> dict[str, Any]:
    """A finished record run again on later code: the same anchor order every round, and the report-half score
    within REPRODUCTION_TOLERANCE. Passed only when both hold."""
    def digests(r: Mapping[str, Any]) -> list[str | None]:
        return [c.get("anchor_order_sha256") for c in r.get("curve") or []]

    before, after = endpoint(record, REPORT), endpoint(rerun, REPORT)
    same_order = bool(digests(record)) and digests(record) == digests(rerun)
    close = None not in (before, after) and abs(after - before) <= REPRODUCTION_TOLERANCE
    return {"arm": record["arm"], "seed": record["seed"], "before": before, "after": after,
            "difference": None if None in (before, after) else after - before, "same_order": same_order,
            "passed": bool(same_order and close)}


def reproductions(out: Path) -> list[dict[str, Any]]:
    """Every rerun under each phase's `<out>/<reproduction folder>/results` checked against the record of the same
    arm and seed, with the phase it controls."""
    records = {(r["arm"], r["seed"]): r for r in load_results(out / "results")}
    return [{**reproduction_check(records[(r["arm"], r["seed"])], r), "phase": phase}
            for phase, folder in REPRODUCTION_FOLDERS.items()
            for r in load_results(out / folder / "results") if (r["arm"], r["seed"]) in records]


def phase2_contrasts(arms: Mapping[str, Mapping[str, Any]], best_static: str | None) -> list[dict[str, Any]]:
    """Phase 2's registered contrasts, paired by seed: the curriculum against its shuffled order (the order
    question) and against phase 1's winner (the best static arm); none until the curriculum arm has run."""
    curriculum, shuffled = PHASE2
    if curriculum not in arms:
        return []
    out = []
    for other, kind in ((shuffled, "order"), (best_static, "vs best static")):
        if other is None or other not in arms:
            continue
        c = paired(arms[curriculum]["final"], arms[other]["final"])
        c.update(label=f"{curriculum} − {other}", kind=kind, a=curriculum, b=other)
        c["reading"] = difference_reading(c)
        out.append(c)
    return out


def exposure_check(by_arm: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, float]] | None:
    """Rows each band gave over the run (all seeds) in the two phase-2 arms: the order control must see the
    curriculum's grades in the same amounts (the same stages, in another order)."""
    if not all(arm in by_arm for arm in PHASE2):
        return None
    # One bin as long as any run: each band's share of all trained rows (experiment_report.band_shares).
    return {arm: {band: shares[0] for band, shares in band_shares(
        {i: res.get("curve") or [] for i, res in enumerate(by_arm[arm])}, bin_steps=1 << 62).items()}
        for arm in PHASE2}


def goal_reading(row: Mapping[str, Any]) -> str:
    """An arm against the start model: the goal is met when the mean gain is >= GOAL, its CI excludes 0 and
    STS-B test fell by no more than GUARD_DROP on average."""
    if row["low"] is None:
        return "too few seeds"
    guard = row["guard_change"]["mean"]
    guard_ok = guard is None or guard >= -GUARD_DROP
    if row["mean"] >= GOAL and row["low"] > 0 and guard_ok:
        return f"goal met (≥ +{GOAL}, CI above 0, STS-B test within −{GUARD_DROP})"
    if row["low"] > 0:
        why = "below +1.0" if row["mean"] < GOAL else f"STS-B test fell {guard:.2f}"
        return f"better than the start, goal not met ({why})"
    if row["high"] < 0:
        return "worse than the start"
    return "not separated from the start"


def difference_reading(c: Mapping[str, Any]) -> str:
    if c["low"] is None:
        return "too few seeds"
    p = c.get("p_holm")
    if c["low"] > 0:
        return "better" + (" (Holm p < 0.05)" if p is not None and p < 0.05 else "")
    if c["high"] < 0:
        return "worse" + (" (Holm p < 0.05)" if p is not None and p < 0.05 else "")
    return "not separated"


def pick_winner(arms: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The arm with the best mean final select-half score; within TIE of the best, the simpler (earlier) arm."""
    means = {a: v["dev_summary"][0] for a, v in arms.items() if v["dev_summary"][0] is not None}
    if not means:
        return None
    best = max(means.values())
    return min((a for a, m in means.items() if m >= best - TIE), key=_order)


def fmt(x: Any, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def ci_text(c: Mapping[str, Any]) -> str:
    return "–" if c.get("low") is None else f"[{c['low']:+.2f}, {c['high']:+.2f}]"


def render(analysis: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    size = meta.get("size") or {}
    lines = [START_MARKER, "## The judge experiment (issue 23, pre-registered in docs/experiment.md)", ""]
    if size.get("name") not in REGISTERED_SIZES:
        lines += [f"**Size `{size.get('name')}`, not a registered size ({', '.join(REGISTERED_SIZES)}): the numbers "
                  "below prove the harness only.**", ""]
    lines += [f"- Size `{size.get('name', '?')}`: {size.get('rounds', '?')} rounds × {size.get('steps_per_round', '?')}"
              f" steps at batch {size.get('batch_size', '?')}, Domain (12,000 unlabeled tweets), tuned start, seeds "
              f"planned {size.get('seeds', '?')}; Twitter pairs split by component (no text on both sides).",
              f"- Machine: {meta.get('machine', '–')}; {meta.get('wall', '–')}; finished "
              f"{meta.get('finished') or 'not yet (runs continue)'}.",
              f"- Commands: {', then '.join(f'`{c}`' for c in (meta.get('commands') or [meta.get('command', '–')]))}; "
              f"rebuild: `python -m bench.experiment report --size {size.get('name', '?')} --out <run folder>`."]
    if meta.get("incomplete"):
        lines += [f"- **Incomplete:** {meta['incomplete']}"]
    pair = analysis.get("pairing") or {}
    lines += [f"- Pairing: {pair.get('identical', 0)} of {pair.get('groups', 0)} (seed, round) groups trained every "
              "arm on the same anchors in the same order (the anchors alone: mined positives differ by design).",
              ""]
    for check in analysis.get("reproductions") or []:
        phase = check.get("phase", 3)
        verdict = "passed" if check["passed"] else f"**FAILED** (phase {phase}'s contrasts are across code versions)"
        lines += [f"- Reproduction control (phase {phase}, first): `{check['arm']}` seed {check['seed']} rerun on the "
                  f"phase-{phase} snapshot: report half {fmt(check['before'])} → {fmt(check['after'])} "
                  f"({fmt(check['difference'], sign=True)}; tolerance ±{REPRODUCTION_TOLERANCE}), anchor order "
                  f"{'the same' if check['same_order'] else 'different'} in every round: {verdict}."]
    if analysis.get("reproductions"):
        lines.append("")
    start, teacher = analysis["start"], analysis["teacher"]
    if start is None:
        return "\n".join(lines + ["No results yet.", END_MARKER]) + "\n"
    lines += ["| model | seeds | select half (final) | **report half: final (primary)** | Δ vs start [95 % CI] | "
              "STS-B test (guard) | dev-selected model | mined positives (round 0 / 1) |",
              "|---|---|---|---|---|---|---|---|",
              f"| start model | – | {fmt(start['dev'])} | {fmt(start['report'])} | – | {fmt(start['guard'])} | – | – |"]
    if teacher:
        lines.append(f"| teacher (ceiling) | – | {fmt(teacher['dev'])} | {fmt(teacher['report'])} | "
                     f"{fmt(None if teacher['report'] is None else teacher['report'] - start['report'], sign=True)} | "
                     f"{fmt(teacher['guard'])} | – | – |")
    goal_rows = {c["a"]: c for c in analysis["contrasts"] if c["kind"] == "goal"}
    for arm, a in analysis["arms"].items():
        c = goal_rows[arm]
        shares = " / ".join(f"{100 * v:.1f} %" for v in a["mined_share"].values()) or "–"
        lines.append(f"| `{arm}` | {a['n']} | {fmt(a['dev_summary'][0])} | {fmt(a['final_summary'][0])} | "
                     f"{fmt(c['mean'], sign=True)} {ci_text(c)} | {fmt(a['guard_summary'][0])} | "
                     f"{fmt(a['selected_summary'][0])} | {shares} |")
    lines += ["", "Each arm against the start model (the goal rows: ≥ +1.0 AP, CI above 0, STS-B test within −0.5):",
              "",
              "| arm | mean Δ | 95 % CI | STS-B test Δ | share of the gap to the teacher closed | reading |",
              "|---|---|---|---|---|---|"]
    for arm, c in goal_rows.items():
        gap = c.get("gap_closed")
        lines.append(f"| `{arm}` | {fmt(c['mean'], sign=True)} | {ci_text(c)} | "
                     f"{fmt(c['guard_change']['mean'], sign=True)} | {'–' if gap is None else f'{100 * gap:.0f} %'} | "
                     f"{c['reading']} |")
    others = [c for c in analysis["contrasts"] if c["kind"] == "vs reference"]
    if others:
        lines += ["", f"Each arm against `{REFERENCE}` (today's default), paired by seed, Holm over the {len(others)}:",
                  "",
                  "| contrast | seeds | mean Δ | 95 % CI | p | p (Holm) | reading |", "|---|---|---|---|---|---|---|"]
        for c in others:
            lines.append(f"| {c['label']} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci_text(c)} | {fmt(c['p'], 3)} | "
                         f"{fmt(c.get('p_holm'), 3)} | {c['reading']} |")
    exposure = analysis.get("exposure")
    if exposure:
        bands = band_order({b for shares in exposure.values() for b in shares})
        lines += ["", "Phase 2, the order control first: the share of trained rows from each band over the run "
                  "(all seeds); the shuffled order must match the curriculum's.", "",
                  "| arm | " + " | ".join(bands) + " |", "|---|" + "---|" * len(bands)]
        for arm, shares in exposure.items():
            lines.append(f"| `{arm}` | " + " | ".join(f"{100 * shares.get(b, 0.0):.1f} %" for b in bands) + " |")
    phase2 = [c for c in analysis["contrasts"] if c["kind"] in ("order", "vs best static")]
    if phase2:
        lines += ["", "Phase 2 contrasts, paired by seed (final model, report half):", "",
                  "| contrast | seeds | mean Δ | 95 % CI | p | reading |", "|---|---|---|---|---|---|"]
        for c in phase2:
            lines.append(f"| {c['label']} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci_text(c)} | {fmt(c['p'], 3)} | "
                         f"{c['reading']} |")
    for phase in VARIANT_PHASES:
        lines += _variant_phase_lines(analysis, phase)
    winner, margin = analysis["winner"], analysis["margin"]
    lines += ["", f"- Winner by the select half (the rule: best mean final select-half AP, ties within {TIE} to the "
              f"simpler arm): `{winner}`.",
              f"- Hand-over margin from noise: 2 × the seed-to-seed SD of `{REFERENCE}`'s final select-half AP = "
              f"{fmt(margin)} AP points.", END_MARKER]
    return "\n".join(lines) + "\n"


def _variant_phase_lines(analysis: Mapping[str, Any], phase: int) -> list[str]:
    """A variant phase's contrasts against phase 1's winner and its choice by the select half (none: no lines)."""
    rows = [c for c in analysis["contrasts"] if c["kind"] == f"phase {phase}"]
    if not rows:
        return []
    pairs = analysis.get(f"phase{phase}_pairing") or {}
    lines = ["", f"Phase {phase}: each variant against `{VARIANT_BASE}` (phase 1's winner), paired by seed, Holm "
             f"over the {len(rows)}; the anchor order shared with `{VARIANT_BASE}` in "
             + ", ".join(f"`{v}` {p['identical']} of {p['groups']}" for v, p in pairs.items())
             + " (seed, round) groups:", "",
             "| contrast | seeds | mean Δ | 95 % CI | p | p (Holm) | reading |", "|---|---|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {c['label']} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci_text(c)} | {fmt(c['p'], 3)} | "
                     f"{fmt(c.get('p_holm'), 3)} | {c['reading']} |")
    chosen = analysis.get(f"phase{phase}_winner")
    goal = next((c for c in analysis["contrasts"] if c["kind"] == "goal" and c["a"] == chosen), None)
    lines += ["", f"- Phase {phase}'s choice by the select half (a variant must beat `{VARIANT_BASE}`'s mean final "
              f"select-half AP by more than {TIE}): `{chosen}`"
              + ("" if goal is None else f"; its goal row: {fmt(goal['mean'], sign=True)} {ci_text(goal)}, "
                 f"STS-B test {fmt(goal['guard_change']['mean'], sign=True)}: {goal['reading']}") + "."
              + (f" {READINGS[phase]}" if phase in READINGS else "")]
    return lines


def write(out: Path, size: Mapping[str, Any], results_md: Path) -> Path:
    """Analyse the results under `out` and write the section into `results_md` (the rest left alone)."""
    results = load_results(out / "results")
    analysis = analyse(results, out / "runs")
    analysis["reproductions"] = reproductions(out)
    meta = run_meta(out, size, results)
    write_section(results_md, render(analysis, meta), START_MARKER, END_MARKER)
    (out / "judge_summary.json").write_text(json.dumps({"meta": meta, "analysis": analysis}, indent=1, default=str)
                                            + "\n", encoding="utf-8")
    return results_md


# ------------------------------------------------------------------------------- phase 4: General
GENERAL_START = "<!-- judge-general:start -->"
GENERAL_END = "<!-- judge-general:end -->"
GENERAL_ARMS = ("static_nli", "static_nli_distill")  # the recipe, and the recipe distilled from the teacher
HARM = 0.5  # STS-B points: the teacher "does not hurt" a labeled run when the paired CI lies above -HARM


def analyse_general(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Phase 4: each arm's STS-B test (final model) and dev, and static_nli_distill - static_nli paired by seed."""
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for res in results:
        if res["arm"] in GENERAL_ARMS:
            by_arm[res["arm"]].append(res)
    if not by_arm:
        return {"arms": {}, "contrast": None, "start": None, "teacher": None, "pairing": None}
    first = next(iter(by_arm.values()))[0]
    start, teacher = reference_scores(first["base"], GUARD), reference_scores(first.get("teacher_scores"), GUARD)
    arms = {}
    for arm in GENERAL_ARMS:
        runs = sorted(by_arm.get(arm, []), key=lambda r: r["seed"])
        if runs:
            final = {r["seed"]: endpoint(r, GUARD) for r in runs}
            arms[arm] = {"n": len(runs), "final": final, "final_summary": mean_sd(list(final.values())),
                         "dev_summary": mean_sd([r["final"]["dev"] for r in runs]),
                         "versus_start": paired(final, {s: start["report"] for s in final})}
    contrast = None
    if len(arms) == 2:
        contrast = paired(arms[GENERAL_ARMS[1]]["final"], arms[GENERAL_ARMS[0]]["final"])
        contrast["reading"] = general_reading(contrast)
    return {"arms": arms, "contrast": contrast, "start": start, "teacher": teacher,
            "pairing": pairing_check(by_arm, "anchors_sha256")}


def general_reading(c: Mapping[str, Any]) -> str:
    """The registered reading of static_nli_distill - static_nli: separated or not, and whether a loss of HARM
    points or more is ruled out (the CI above -HARM)."""
    if c["low"] is None:
        return "too few seeds"
    harm = (f"a loss of {HARM} or more ruled out (CI above −{HARM})" if c["low"] > -HARM else
            f"a loss of {HARM} or more not ruled out")
    return f"{difference_reading(c)}; {harm}"


def render_general(analysis: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    size = meta.get("size") or {}
    lines = [GENERAL_START, "## The judge experiment, phase 4: a teacher in a labeled run (General, STS-B)", ""]
    if size.get("name") != "judge4":
        lines += [f"**Size `{size.get('name')}`, not the registered size (judge4): the numbers below prove the "
                  "harness only.**", ""]
    pair = analysis.get("pairing") or {}
    lines += [f"- Size `{size.get('name', '?')}`: {size.get('rounds', '?')} rounds × {size.get('steps_per_round', '?')}"
              f" steps at batch {size.get('batch_size', '?')}, General (NLI supervised), tuned start, seeds planned "
              f"{size.get('seeds', '?')}; final model, STS-B test (primary), STS-B dev selects nothing here.",
              f"- Machine: {meta.get('machine', '–')}; {meta.get('wall', '–')}; finished "
              f"{meta.get('finished') or 'not yet (runs continue)'}.",
              f"- Commands: {', then '.join(f'`{c}`' for c in (meta.get('commands') or [meta.get('command', '–')]))}; "
              f"rebuild: `python -m bench.experiment report --size {size.get('name', '?')} --out <run folder>`.",
              f"- Pairing: {pair.get('identical', 0)} of {pair.get('groups', 0)} (seed, round) groups trained both "
              "arms on the same batches (anchors and positives).", ""]
    start, teacher = analysis["start"], analysis["teacher"]
    if start is None:
        return "\n".join(lines + ["No results yet.", GENERAL_END]) + "\n"
    lines += ["| model | seeds | STS-B dev (final) | **STS-B test (final, primary)** | Δ vs start [95 % CI] |",
              "|---|---|---|---|---|",
              f"| start model | – | {fmt(start['dev'])} | {fmt(start['report'])} | – |"]
    if teacher:
        lines.append(f"| teacher | – | {fmt(teacher['dev'])} | {fmt(teacher['report'])} | "
                     f"{fmt(None if teacher['report'] is None else teacher['report'] - start['report'], sign=True)} |")
    for arm, a in analysis["arms"].items():
        v = a["versus_start"]
        lines.append(f"| `{arm}` | {a['n']} | {fmt(a['dev_summary'][0])} | {fmt(a['final_summary'][0])} | "
                     f"{fmt(v['mean'], sign=True)} {ci_text(v)} |")
    c = analysis["contrast"]
    if c is not None:
        lines += ["", "| contrast | seeds | mean Δ | 95 % CI | p | reading |", "|---|---|---|---|---|---|",
                  f"| {GENERAL_ARMS[1]} − {GENERAL_ARMS[0]} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci_text(c)} | "
                  f"{fmt(c['p'], 3)} | {c['reading']} |"]
    return "\n".join(lines + [GENERAL_END]) + "\n"


def write_general(out: Path, size: Mapping[str, Any], results_md: Path) -> Path:
    """Phase 4's section of `results_md` from the results under `out`."""
    results = load_results(out / "results")
    write_section(results_md, render_general(analyse_general(results), run_meta(out, size, results)), GENERAL_START,
                  GENERAL_END)
    return results_md
