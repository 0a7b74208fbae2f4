"""The run report: `report.md` and its PNG plots, rebuilt from the run directory's files.

Everything here reads only completed files (metrics.json, manifests, state.json), so the report can be
rebuilt at any time, by the flow after each round or by hand (`build_report(run_dir)`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from dataio.atomic import atomic_write_text
from dataio.triplet_layout import band_order
from dataio.triplets import resolve_file
from flows.rounds.report_plots import metric_columns, read_round_manifest, write_plots
from flows.run.new_data import SEEN_JSON
from flows.run.rundir import REGISTERED_FILE, START_FILE, RunDir

# A candidate that is the anchor itself is excluded from every band by construction (each sentence is its own
# nearest neighbour), so it is reported apart from the skips that say something about the data.
SELF_MATCH = "anchor"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_report(run: RunDir, plots: dict[str, Path] | None = None) -> str:
    """The markdown report of everything completed in the run directory."""
    plots = plots or {}
    config = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) if run.config_path.is_file() else {}
    base = run.read_base_metrics()
    done = run.completed_rounds()
    rounds = [run.read_metrics(r) for r in done]
    total = config.get("rounds", "?")
    lines = ["# Curriculum run report", "",
             f"Run folder: `{run.root}`  ",
             (f"Rounds completed: {len(done)} of {total}; seed {config.get('seed', '?')}; "
              f"{config.get('steps_per_round', '?')} training steps per round at batch "
              f"{config.get('batch_size', '?')}.  "),
             _wall_time_line(run, base, rounds), ""]
    lines += _selection_lines(run)
    lines += _registry_lines(run)
    lines += _data_read(run, done)

    lines += _evaluation_lines(base, rounds, plots)
    lines += _curriculum_lines(rounds, plots)
    lines += _judge_lines(run, base, rounds, done)
    lines += _mined_band_lines(run, done, plots)
    lines += _model_lines(run, done)
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def _evaluation_lines(base: dict[str, Any] | None, rounds: list[dict[str, Any]], plots: dict[str, Path]) -> list[str]:
    """The table of scores per round (the starting model first), with what each column means."""
    lines: list[str] = []
    rows = ([base] if base else []) + rounds
    lines += ["## Evaluation per round", ""]
    if rows:
        cols = metric_columns(rows)
        head = ["round"] + [f"{'STS' if k == 'sts' else 'AP'} {s}" for k, s in cols] + \
               ["alignment", "uniformity", "train acc", "competence"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, row in enumerate(rows):
            ev = row.get("evaluation") or {}
            cells = ["base" if (base and i == 0) else str(row["round"])]
            cells += [_fmt((ev.get(k) or {}).get(s)) for k, s in cols]
            cells += [_fmt(ev.get("alignment"), 4), _fmt(ev.get("uniformity"), 4),
                      _fmt((row.get("train") or {}).get("mean_train_accuracy"), 3),
                      _fmt((row.get("curriculum") or {}).get("competence"), 3)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", ("STS: Spearman x100 of cosine similarity; AP: average precision x100 on labeled pairs; "
                       "alignment and uniformity as in Wang & Isola (2020), lower is better."), ""]
        dev = next((row.get("dev_metric") for row in rows if row.get("dev_metric")), None)
        if dev:
            lines += [f"Dev metric (curriculum decisions): `{dev.get('name')}`.", ""]
    else:
        lines += ["No evaluation yet.", ""]
    if "metrics" in plots:
        lines += ["![metrics per round](plots/metrics.png)", ""]
    return lines


def _curriculum_lines(rounds: list[dict[str, Any]], plots: dict[str, Path]) -> list[str]:
    """Each round's stage, competence, mixture, α and the scheduler's decision."""
    lines: list[str] = []
    lines += ["## Curriculum", ""]
    if rounds:
        lines += ["| round | stage | competence | mixture | alpha | decision |", "|---|---|---|---|---|---|"]
        for row in rounds:
            cur = row.get("curriculum") or {}
            mix = ", ".join(f"{b} {p:.2f}" for b, p in (cur.get("mixture") or {}).items())
            alpha = ", ".join(f"{b} {a:.2f}" for b, a in (cur.get("alpha") or {}).items())
            lines.append(f"| {row['round']} | {cur.get('stage', '–')} | {_fmt(cur.get('competence'), 3)} | {mix} | "
                         f"{alpha} | {cur.get('decision', '–')} |")
        lines.append("")
    if "schedule" in plots:
        lines += ["![mixture and alpha](plots/schedule.png)", ""]
    return lines


def _mined_band_lines(run: RunDir, done: list[int], plots: dict[str, Path]) -> list[str]:
    """Each completed round's bands: rows, difficulty, skipped candidates, and its triplet files."""
    lines: list[str] = []
    lines += ["## Mined bands", ""]
    for r in done:
        manifest = read_round_manifest(run, r)
        if manifest is None:
            continue
        lines += [f"### Round {r}", "", "| band | rows | difficulty (mean anchor-negative sim) | skipped |",
                  "|---|---|---|---|"]
        self_matches = []
        for band in band_order(manifest.bands):
            stats = manifest.bands[band]
            skips = dict(stats.skipped)
            if skips.get(SELF_MATCH):
                self_matches.append(f"{band} {skips[SELF_MATCH]}")
            skipped = ", ".join(f"{k}: {v}" for k, v in skips.items() if k != SELF_MATCH) or "–"
            sampled = (stats.model_extra or {}).get("similarity_rows")
            difficulty = _fmt(stats.mean_anchor_negative_sim, 4) + (
                f" (sample of {sampled:,} rows)" if sampled is not None and sampled < stats.rows else "")
            lines.append(f"| {band} | {stats.rows} | {difficulty} | {skipped} |")
        if (manifest.embeddings or {}).get("sample"):
            lines += ["", ("No band of this round needed the pool's vectors, so only a seeded sample of each band's "
                           "rows was encoded and scored (`mining.params.similarity_sample`): the difficulties come "
                           "from that sample, and the other rows' similarity columns are empty.")]
        if self_matches:
            lines += ["", ("Skipped candidates are counted per reason (see docs/mining.md). Not counted there: "
                           "candidates that were the anchor itself, excluded by construction since every sentence "
                           f"is its own nearest neighbour ({', '.join(self_matches)}).")]
        links = []
        for f in manifest.files:
            rel = resolve_file(run.triplets, r, f.path).relative_to(run.root).as_posix()
            links.append(f"[{rel}]({rel}) ({f.rows} rows)")
        lines += ["", "Triplet files: " + ", ".join(links), ""]
        if f"similarity_round{r}" in plots:
            lines += [f"![similarity by band, round {r}](plots/similarity_round{r}.png)", ""]
    return lines


def _model_lines(run: RunDir, done: list[int]) -> list[str]:
    """Where each round's model is, how it loads, and its card."""
    lines: list[str] = []
    lines += ["## Models", ""]
    for r in done:
        card = run.model_dir(r) / "README.md"
        lines.append(f"- round {r}: [`rounds/{r}/model/`](rounds/{r}/model/) — loads with "
                     f"`SentenceTransformer(\"{run.model_dir(r)}\")`"
                     + (f"; model card [`rounds/{r}/model/README.md`](rounds/{r}/model/README.md)"
                        if card.is_file() else ""))
    return lines


def _judge_lines(run: RunDir, base: dict[str, Any] | None, rounds: list[dict[str, Any]], done: list[int]
                 ) -> list[str]:
    """The judge (mining.judge): the teacher's ceiling beside the start and the best round on the dev metric,
    what the teacher cost, and the share of anchors with a mined positive per round. Nothing without either."""
    teacher = _read_json(run.teacher_metrics_path)
    manifests = {r: read_round_manifest(run, r) for r in done}
    mined = {r: (m.model_extra or {}).get("mined_positives") for r, m in manifests.items() if m is not None}
    mined = {r: v for r, v in mined.items() if v}
    if teacher is None and not mined:
        return []
    lines = ["## The judge", ""]
    if teacher is not None:
        name = (teacher.get("dev_metric") or {}).get("name")
        values = [(row.get("dev_metric") or {}).get("value") for row in rounds]
        best = max((v for v in values if v is not None), default=None)
        start = ((base or {}).get("dev_metric") or {}).get("value")
        ceiling = (teacher.get("dev_metric") or {}).get("value")
        lines.append("Teacher (the run's `teacher`)")
        lines[-1] += (f" on the dev metric `{name}`: **{_fmt(ceiling)}** (the ceiling); the start model "
                      f"{_fmt(start)}, the best round {_fmt(best)}.")
        if None not in (ceiling, start, best) and ceiling > start:
            lines[-1] += f" The student closed {100 * (best - start) / (ceiling - start):.0f} % of the gap."
        cost = [(r, (m.timings or {}).get("teacher_encode"), (m.model_extra or {}).get("teacher") or {})
                for r, m in manifests.items() if m is not None]
        encoded = [(r, seconds, info) for r, seconds, info in cost if seconds is not None and not info.get("cached")]
        if encoded:
            r, seconds, info = encoded[0]
            peak = info.get("process_peak_rss_mb")
            memory = (f" The mining process peaked at {peak / 1024:.1f} GiB resident by the end of that round (the "
                      "teacher, its vectors and the student together; the teacher alone is not measured)."
                      if peak else " Its peak memory is not measured separately.")
            lines.append(f"Its embeddings of the pool took {_duration(seconds)} to compute (round {r}); later rounds "
                         f"read them from the cache.{memory}")
        lines.append("")
    if mined:
        lines += ["| round | judge | anchors with a mined positive | mean judge cosine | not mined (why) |",
                  "|---|---|---|---|---|"]
        for r, v in sorted(mined.items()):
            why = ", ".join(f"{k} {n}" for k, n in (v.get("rejected") or {}).items()) or "–"
            lines.append(f"| {r} | {v.get('judge')} | {v.get('mined', 0):,} of {v.get('candidates', 0):,} "
                         f"({100 * v.get('share', 0):.1f} %) | {_fmt(v.get('mean_score'), 3)} | {why} |")
        lines += ["", "Samples: `simcse-curriculum inspect triplets/` (and `--html` to reject a pair).", ""]
    return lines


def _selection_lines(run: RunDir) -> list[str]:
    """The run's answer first: which model to use (selection.json, written after every round)."""
    path = run.root / "selection.json"
    if not path.is_file():
        return []
    selection = json.loads(path.read_text(encoding="utf-8"))
    return ["## Model to use", "", f"**{selection['note']}**", "",
            f"Selected by `{selection['dev_metric']}` among the starting model and every completed round "
            f"(`selection.json`); report your final figures on a set that did not select.", ""]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _registry_lines(run: RunDir) -> list[str]:
    """A registry run (flows.rounds.continuing): the version it started from, what was new, what it registered."""
    start = _read_json(run.root / START_FILE)
    if start is None:
        return []
    lines = ["## Registry", "",
             f"Started from version {start.get('parent_version')} of `{start.get('name')}` (registry "
             f"`{start.get('registry')}`), evaluated as the baseline (`{START_FILE}`).", ""]
    data = _read_json(run.root / SEEN_JSON)
    if data is not None:
        new_files = data.get("new_files") or []
        changed = data.get("changed_files") or []
        lines += [f"Data: {len(data.get('files') or [])} input files, {data.get('rows')} rows; "
                  f"**{data.get('new_rows')} rows new** to version {data.get('parent_version')}"
                  + (f"; new files: {', '.join(f'`{Path(p).name}`' for p in new_files)}" if new_files else "")
                  + (f"; changed files: {', '.join(f'`{Path(p).name}`' for p in changed)}" if changed else "")
                  + f" (`{SEEN_JSON}`).", ""]
    registered = _read_json(run.root / REGISTERED_FILE)
    if registered is not None:
        # `registered.json` of runs from before booleans held the tag's string
        promoted = registered.get("promoted") in (True, "true")
        state = "**promoted**: now the current model" if promoted else "**not promoted**"
        lines += [f"Registered as version {registered.get('version')} (from version {registered.get('parent')}): "
                  f"{state}. {registered.get('reason')}.", ""]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _wall_time_line(run: RunDir, base: dict[str, Any] | None, rounds: list[dict[str, Any]]) -> str:
    """The run's wall time so far: each round's from timings.json; a round the flow has not timed yet (the
    one this report closes: its time is recorded after the report) by its mining, training and evaluation."""
    path = run.root / "timings.json"
    timed = {t["round"]: t for t in json.loads(path.read_text(encoding="utf-8"))} if path.is_file() else {}
    total = float((base or {}).get("seconds") or 0.0)
    untimed = []
    for row in rounds:
        r = row["round"]
        if r in timed:
            total += float(timed[r].get("wall_seconds") or 0.0)
        else:
            total += sum(float(v) for v in (row.get("seconds") or {}).values() if isinstance(v, (int, float)))
            untimed.append(str(r))
    line = f"Wall time: {_duration(total)} (base model evaluation and {len(rounds)} round(s)"
    if untimed:
        line += (f"; {'rounds' if len(untimed) > 1 else 'round'} {', '.join(untimed)} counted by mining, training "
                 f"and evaluation time only, not yet timed by the flow")
    return line + ")."


def _data_read(run: RunDir, done: list[int]) -> list[str]:
    """What the run read: per source file, rows read, kept and dropped; the pool; the anchor rows by kind."""
    manifest = next((m for r in reversed(done) if (m := read_round_manifest(run, r)) is not None), None)
    corpus = (manifest.corpus if manifest is not None else None) or {}
    if not corpus:
        return []
    header = "| file | kind | rows read | kept | dropped: empty | duplicates | no negative | labeled 0 |"
    lines = ["## Data read", "", header, "|---|---|---|---|---|---|---|---|"]
    for src in corpus.get("sources") or []:
        path = Path(src.get("path", ""))
        shown = path.relative_to(run.root).as_posix() if path.is_relative_to(run.root) else str(path)
        lines.append(f"| `{shown}` | {src.get('kind', '')} | {src.get('rows', 0)} | {src.get('kept', 0)} | "
                     f"{src.get('empty', 0)} | {src.get('duplicates', 0)} | {src.get('missing_negative', 0)} | "
                     f"{src.get('label_0', 0)} |")
    kinds = corpus.get("anchor_rows") or {}
    lines += ["", (f"Sentence pool: {corpus.get('pool', 0)} distinct sentences. Anchor rows used for mining: "
                   f"{kinds.get('pair', 0)} labeled pairs, {kinds.get('nli', 0)} NLI triplets, "
                   f"{kinds.get('unsupervised', 0)} unsupervised sentences (the sentence is its own positive)."), ""]
    return lines


def build_report(run_dir: str | Path) -> Path:
    """Rewrite the plots and `report.md` of a run directory; returns the report's path."""
    run = RunDir(Path(run_dir))
    plots = write_plots(run)
    atomic_write_text(run.report_path, render_report(run, plots))
    return run.report_path
