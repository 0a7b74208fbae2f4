"""Phase 5 of the judge experiment (issue 23, pre-registered in docs/experiment.md): phase 1's winner trained on the
whole Twitter corpus (`mined_teacher_all`, the data configs/domain_unlabeled.yaml trains on) against the same arm on
phase 1's 12,000-tweet pool (`mined_teacher`, read from phase 1's kept records), paired by seed; which of the two a
team is handed is chosen by the select half; the chosen one's row against the start is the issue's goal row.

Reads JSON result files only (no torch), with phase 1's statistics and readings (`bench.judge_report`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import REPO
from bench.experiment_report import load_results, mean_sd, paired, run_meta, write_section
from bench.judge_report import (
    REPORT,
    TIE,
    arm_scores,
    ci_text,
    difference_reading,
    fmt,
    goal_reading,
    reference_scores,
    versus_start,
)

START_MARKER = "<!-- judge-corpus:start -->"
END_MARKER = "<!-- judge-corpus:end -->"
POOL_ARM = "mined_teacher"          # phase 1's winner, on the 12,000-tweet pool (phase 1's records)
CORPUS_ARM = "mined_teacher_all"    # the same arm on the whole corpus (this phase's run)
REGISTERED_SIZE = "judge5"
BASE_TOLERANCE = 0.01  # AP/Spearman points: the start's scores in this folder must equal phase 1's record of them


def _arm(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    shares = [c["mined_positives_share"] for r in runs for c in r.get("curve") or []
              if c.get("mined_positives_share") is not None]
    return {**arm_scores(runs), "mined_share": mean_sd(shares)[0]}


def base_check(record: Mapping[str, Any] | None, rerun: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The control: the start model scored in this phase's folder against phase 1's record of it (same start, same
    evaluation files): select half, report half and STS-B test each within BASE_TOLERANCE."""
    if record is None or rerun is None:
        return None
    pairs = {"select half": (record["dev"], rerun["dev"]), "report half": (record["report"], rerun["report"]),
             "STS-B test": (record["guard"], rerun["guard"])}
    diffs = {k: (None if None in v else v[1] - v[0]) for k, v in pairs.items()}
    passed = all(d is not None and abs(d) <= BASE_TOLERANCE for d in diffs.values())
    return {"passed": passed, "diffs": diffs, "record": record, "rerun": rerun}


def chosen_arm(arms: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The select half's choice: the whole corpus replaces the pool when its mean final select-half AP beats the
    pool's by more than TIE (phase 1's and phase 3's rule); None until both have records."""
    if POOL_ARM not in arms or CORPUS_ARM not in arms:
        return None
    pool, corpus = arms[POOL_ARM]["dev_summary"][0], arms[CORPUS_ARM]["dev_summary"][0]
    if pool is None or corpus is None:
        return None
    return CORPUS_ARM if corpus > pool + TIE else POOL_ARM


def analyse(results: Iterable[Mapping[str, Any]], phase1: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Both arms (this phase's records, phase 1's records of POOL_ARM), each against the start, the paired contrast,
    the select half's choice and the base control."""
    corpus_runs = [r for r in results if r["arm"] == CORPUS_ARM]
    pool_runs = [r for r in phase1 if r["arm"] == POOL_ARM]
    out: dict[str, Any] = {"arms": {}, "rows": [], "contrast": None, "chosen": None, "control": None,
                           "start": None, "teacher": None}
    if not corpus_runs:
        return out
    start = reference_scores(corpus_runs[0]["base"], REPORT)
    out["start"], out["teacher"] = start, reference_scores(corpus_runs[0].get("teacher_scores"), REPORT)
    out["control"] = base_check(reference_scores(pool_runs[0]["base"], REPORT) if pool_runs else None, start)
    arms = {name: _arm(runs) for name, runs in ((POOL_ARM, pool_runs), (CORPUS_ARM, corpus_runs)) if runs}
    out["arms"], out["chosen"] = arms, chosen_arm(arms)
    for name, a in arms.items():
        row = {"arm": name, **versus_start(a, start)}
        row["reading"] = goal_reading(row) if name == out["chosen"] else "shown; not the select half's choice"
        out["rows"].append(row)
    if len(arms) == 2:
        c = paired(arms[CORPUS_ARM]["final"], arms[POOL_ARM]["final"])
        c["reading"] = difference_reading(c)
        out["contrast"] = c
    return out


def render(analysis: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    size = meta.get("size") or {}
    lines = [START_MARKER, "## The judge experiment, phase 5: the whole Twitter corpus (the shipped config's data)", ""]
    if size.get("name") != REGISTERED_SIZE:
        lines += [f"**Size `{size.get('name')}`, not the registered size ({REGISTERED_SIZE}): the numbers below "
                  "prove the harness only.**", ""]
    lines += [f"- `{CORPUS_ARM}`: phase 1's winner (`{POOL_ARM}`: the teacher's mutual nearest neighbours at cosine "
              "≥ 0.8 as positives, in-batch negatives) on all 36,720 tweets instead of the 12,000-tweet pool; "
              f"{size.get('rounds', '?')} rounds × {size.get('steps_per_round', '?')} steps at batch "
              f"{size.get('batch_size', '?')}, tuned start, seeds {size.get('seeds', '?')}. `{POOL_ARM}`'s rows are "
              f"phase 1's records ({size.get('phase1_results', '?')}), paired by seed.",
              f"- Machine: {meta.get('machine', '–')}; {meta.get('wall', '–')}; finished "
              f"{meta.get('finished') or 'not yet (runs continue)'}.",
              f"- Commands: {', then '.join(f'`{c}`' for c in (meta.get('commands') or [meta.get('command', '–')]))}; "
              f"rebuild: `python -m bench.experiment report --size {size.get('name', '?')} --out <run folder>`.", ""]
    if analysis["start"] is None:
        return "\n".join(lines + ["No results yet.", END_MARKER]) + "\n"
    control = analysis["control"]
    if control is None:
        lines += ["**Control: not run** (no phase-1 record of the start to compare with).", ""]
    else:
        diffs = ", ".join(f"{k} {fmt(v, 3, sign=True)}" for k, v in control["diffs"].items())
        verdict = "passed" if control["passed"] else "FAILED: the two folders do not score the start alike"
        lines += [f"**Control first — {verdict}**: the start model scored in this folder against phase 1's record "
                  f"of it ({diffs}; tolerance ±{BASE_TOLERANCE}).", ""]
    start, teacher = analysis["start"], analysis["teacher"]
    lines += ["| model | seeds | mined-positive share | select half (final) | **report half (final)** | "
              "Δ vs start [95 % CI] | STS-B test Δ | train s | reading |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| start model | – | – | {fmt(start['dev'])} | {fmt(start['report'])} | – | – | – | – |"]
    if teacher:
        lines.append(f"| teacher (ceiling) | – | – | {fmt(teacher['dev'])} | {fmt(teacher['report'])} | "
                     f"{fmt(None if teacher['report'] is None else teacher['report'] - start['report'], sign=True)} | "
                     "– | – | – |")
    for row in analysis["rows"]:
        a = analysis["arms"][row["arm"]]
        share = "–" if a["mined_share"] is None else f"{100 * a['mined_share']:.1f} %"
        lines.append(f"| `{row['arm']}` | {a['n']} | {share} | {fmt(a['dev_summary'][0])} | "
                     f"{fmt(a['final_summary'][0])} | {fmt(row['mean'], sign=True)} {ci_text(row)} | "
                     f"{fmt(row['guard_change']['mean'], sign=True)} | {fmt(a['train_seconds'], 0)} | "
                     f"{row['reading']} |")
    c = analysis["contrast"]
    if c is not None:
        lines += ["", "| contrast (report half, final model) | seeds | mean Δ | 95 % CI | p | reading |",
                  "|---|---|---|---|---|---|",
                  f"| {CORPUS_ARM} − {POOL_ARM} | {c['n']} | {fmt(c['mean'], sign=True)} | {ci_text(c)} | "
                  f"{fmt(c['p'], 3)} | {c['reading']} |"]
    if analysis["chosen"]:
        lines += ["", f"**The select half's choice: `{analysis['chosen']}`** (the whole corpus is chosen only when its "
                  f"mean final select-half AP beats the pool's by more than {TIE}); its row against the start is the "
                  "goal row, the other row is shown without a goal reading."]
    return "\n".join(lines + [END_MARKER]) + "\n"


def write(out: Path, size: Mapping[str, Any], results_md: Path) -> Path:
    """Phase 5's section of `results_md` from the records under `out` and phase 1's under `phase1_results`
    (relative paths: to the repository)."""
    phase1_dir = Path(str(size.get("phase1_results", "")))
    phase1_dir = phase1_dir if phase1_dir.is_absolute() else REPO / phase1_dir
    results = load_results(out / "results")
    analysis = analyse(results, load_results(phase1_dir) if phase1_dir.is_dir() else [])
    write_section(results_md, render(analysis, run_meta(out, size, results)), START_MARKER, END_MARKER)
    return results_md
