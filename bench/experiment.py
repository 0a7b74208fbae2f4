"""Issue 6's experiment: does curriculum hard-negative mining beat in-batch negatives, each band alone and a
static mix? Runs every arm (configs/experiment/arms/*.yaml) in both settings (configs/experiment/settings/)
for several seeds, at a size from configs/experiment/sizes.yaml, and writes the "Experiment (issue 6)"
section of a results file (tables, dev-per-round plot, measured band difficulty, conclusion).

    .venv/bin/python bench/experiment.py run --size smoke --out /tmp/exp-smoke --results /tmp/exp-smoke/results.md
    .venv/bin/python bench/experiment.py run --size cpu            # runs/experiment/cpu, docs/results.md
    .venv/bin/python bench/experiment.py run --size gpu --deadline-min 9
    .venv/bin/python bench/experiment.py report --out runs/experiment/cpu --size cpu
    .venv/bin/python bench/experiment.py estimate --from /tmp/exp-smoke --size cpu

The round loop is the flows' plain step functions (`flows.steps`: schedule_round, train_round,
evaluate_model, finish_round) on a flows run config per arm, called directly: no Prefect, so it runs where
Prefect is not installed (the GPU host). What the harness adds:
- Shared work, where it is identical by construction: the base model is evaluated once per setting;
  round 0 (mined with the base model) is mined once per setting and seed and hard-linked into every arm;
  bands that do not depend on the encoder (random, nli_contradiction) are mined once per setting, seed and
  round with the base model and linked into the arms that use only them (in-batch, static random, static
  nli_contradiction); only their recorded similarities would differ with the trained encoder.
- The in-batch arm runs the flows with `negatives: in_batch`: the hard negatives are dropped from each
  batch (same anchors as static_random).
- Resume: each finished arm x seed writes `results/<setting>/<arm>/seed<s>.json` and is skipped on a
  rerun; an unfinished one resumes inside its flows run dir (finished rounds, trainer checkpoints).
- Timings per arm and phase (mine / train / eval / other) and of the shared work, and `estimate`, which
  predicts another size's wall time from a finished run's measured unit costs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "experiment"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import experiment_report as report

SETTINGS = ("general", "domain")
MODEL_INDEPENDENT_BANDS = ("random", "nli_contradiction")  # their rows never depend on the encoder
SUBSAMPLE_SEED = 20240601  # data subsamples are fixed per size, whatever the run seed
DEFAULT_RESULTS = REPO / "docs" / "results.md"

log = logging.getLogger("experiment")


# ------------------------------------------------------------------------------------------ configs
def _read_yaml(path: Path) -> dict[str, Any]:
    from simcse.errors import InputError

    if not path.is_file():
        raise InputError("no such file", path=path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", path=path)
    return data


def load_size(name: str) -> dict[str, Any]:
    from simcse.errors import InputError

    sizes = _read_yaml(CONFIG_DIR / "sizes.yaml")
    if name not in sizes:
        raise InputError(f"unknown size {name!r}; choose one of {', '.join(sizes)}", path=CONFIG_DIR / "sizes.yaml")
    size = dict(sizes[name], name=name)
    for key in ("seeds", "rounds", "steps_per_round", "batch_size"):
        if key not in size:
            raise InputError(f"size {name}: key {key!r} is missing", path=CONFIG_DIR / "sizes.yaml")
    return size


def arm_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "arms").glob("*.yaml"))


def load_arm(name: str) -> dict[str, Any]:
    from simcse.errors import InputError

    path = CONFIG_DIR / "arms" / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown arm {name!r}; arms: {', '.join(arm_names())}", path=path)
    arm = _read_yaml(path)
    for key in ("curriculum", "settings", "negatives"):
        if key not in arm:
            raise InputError(f"key {key!r} is missing", path=path)
    if arm["negatives"] not in ("hard", "none"):
        raise InputError(f"negatives: expected 'hard' or 'none', got {arm['negatives']!r}", path=path)
    arm["name"] = name
    return arm


def arm_kind(arm: dict[str, Any]) -> str:
    if arm["negatives"] == "none":
        return "in_batch"
    return "static" if arm["curriculum"].get("mode") == "static" else "curriculum"


def arm_bands(arm: dict[str, Any], setting_bands: list[str]) -> list[str]:
    """The bands an arm trains on (and so must mine in rounds after the first)."""
    cur = arm["curriculum"]
    if cur.get("mode") == "static":
        wanted = {b for b, w in cur["static"]["weights"].items() if w > 0}
        return [b for b in setting_bands if b in wanted]
    return list(setting_bands)


def expand_data_dir(value: str) -> str:
    from simcse.io import data_dir

    return str(data_dir()) + value[len("{data_dir}"):] if value.startswith("{data_dir}") else value


def _get(mapping: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        mapping = mapping.get(part) if isinstance(mapping, dict) else None
    return mapping


def _set(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        mapping = mapping.setdefault(part, {})
    mapping[parts[-1]] = value


def _path_of(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry["path"]


def _with_path(entry: Any, path: str) -> Any:
    return path if isinstance(entry, str) else {**entry, "path": path}


# --------------------------------------------------------------------------------------------- data
def subsample_lines(src: Path, dst: Path, rows: int, seed: int = SUBSAMPLE_SEED) -> Path:
    """`rows` records of a one-record-per-line file (header kept for .csv/.tsv), in file order, seeded.

    Written once (atomically); an existing copy is the same bytes, so it is kept.
    """
    from simcse.io import atomic_write_text

    if dst.is_file():
        return dst
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[:1] if src.suffix in (".csv", ".tsv") else []
    body = lines[len(header):]
    if rows < len(body):
        keep = sorted(random.Random(seed).sample(range(len(body)), rows))
        body = [body[i] for i in keep]
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst, "".join(header + body))
    return dst


def prepare_setting_data(name: str, raw: dict[str, Any], size: dict[str, Any], out: Path) -> dict[str, Any]:
    """The setting's mapping with `{data_dir}` expanded and the size's subsamples written and swapped in."""
    data = copy.deepcopy(raw)
    exp = data["experiment"]
    folder = out / "data" / name
    cuts = (size.get("subsample") or {}).get(name) or {}
    for key in exp.get("subsample", []):
        entry = _get(data, key)
        if entry is None:
            continue
        path = Path(expand_data_dir(_path_of(entry)))
        rows = cuts.get(key)
        if rows is not None:
            path = subsample_lines(path, folder / f"{key.replace('.', '_')}{path.suffix}", int(rows))
        _set(data, key, _with_path(entry, str(path)))
    eval_rows = size.get("eval_subsample")

    def eval_path(value: str, tag: str) -> str:
        path = Path(expand_data_dir(value))
        if eval_rows is None:
            return str(path)
        # The stem names the metric (sts/<stem>), so the copy keeps it.
        return str(subsample_lines(path, folder / "eval" / tag / path.name, int(eval_rows)))

    for kind in ("sts", "pairs"):
        entries = (data.get("eval") or {}).get(kind) or []
        data["eval"][kind] = [_with_path(e, eval_path(_path_of(e), kind)) for e in entries]
    rep = exp.get("report") or {}
    if rep.get("path"):
        rep["path"] = eval_path(rep["path"], "report")
    exp["full_eval"] = eval_rows is None
    return data


def build_config(setting: dict[str, Any], arm: dict[str, Any], size: dict[str, Any], seed: int, run_dir: Path,
                 setting_path: Path) -> Any:
    """A flows RunConfig for one arm x seed: the setting, the arm's curriculum, the size's schedule."""
    from flows.config import config_from_mapping

    data = copy.deepcopy({k: v for k, v in setting.items() if k != "experiment"})
    data.update(output_dir=str(run_dir), seed=int(seed), rounds=int(size["rounds"]),
                steps_per_round=int(size["steps_per_round"]), batch_size=int(size["batch_size"]))
    mining = data.setdefault("mining", {})
    mining["params"] = {**(mining.get("params") or {}), **(size.get("mining_params") or {})}
    curriculum = copy.deepcopy(arm["curriculum"])
    if curriculum.get("total") == "auto":  # competence reaches 1 at the end of the run, whatever the size
        per_step = curriculum.get("unit", "round") == "step"
        curriculum["total"] = (int(size["rounds"]) * int(size["steps_per_round"]) if per_step
                               else max(1, int(size["rounds"]) - 1))
    data["curriculum"] = curriculum
    data["negatives"] = "in_batch" if arm.get("negatives") == "none" else "hard"
    return config_from_mapping(data, base_dir=setting_path.parent, source=setting_path)


# ------------------------------------------------------------------------------------- shared work
@dataclass
class SettingContext:
    """What every arm of one setting shares: inputs, mining corpus, base model, its evaluation, round 0."""

    name: str
    raw: dict[str, Any]
    path: Path
    size: dict[str, Any]
    out: Path
    timings: dict[str, Any] = field(default_factory=dict)
    _corpus: Any = None
    _base_encoder: Any = None
    _base_config: Any = None
    _inputs: dict[str, Any] | None = None

    @property
    def exp(self) -> dict[str, Any]:
        return self.raw["experiment"]

    @property
    def dir(self) -> Path:
        return self.out / "shared" / self.name

    @property
    def bands(self) -> list[str]:
        return list(self.raw["mining"]["bands"])

    def base_config(self) -> Any:
        if self._base_config is None:
            # Any static arm gives the same model, inputs and mining settings; the curriculum is not used.
            self._base_config = build_config(self.raw, {"curriculum": {"mode": "static", "static": {
                "weights": {"random": 1.0}}}}, self.size, 0, self.dir, self.path)
        return self._base_config

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.base_config().mining.params)

    def inputs(self) -> dict[str, Any]:
        from flows import steps
        from flows.rundir import RunDir

        if self._inputs is None:
            self._inputs = steps.prepare_inputs(self.base_config(), RunDir(self.dir), log)
        return self._inputs

    def corpus(self) -> Any:
        """The mining corpus, loaded once (every arm and round of a seed mines the same pool)."""
        if self._corpus is None:
            from flows import steps

            start = time.perf_counter()
            self._corpus = steps.load_mining_corpus(self.inputs(), self.params)
            self.timings["load_corpus_s"] = time.perf_counter() - start
            self.timings["pool"] = len(self._corpus)
            self.timings["anchor_rows"] = self._corpus.n_anchor_rows
        return self._corpus

    def base_model(self) -> str:
        from flows import steps

        return steps.base_model_path(self.base_config())

    def base_encoder(self) -> Any:
        from flows import steps

        if self._base_encoder is None:
            start = time.perf_counter()
            self._base_encoder = steps.load_encoder(self.base_model(), self.base_config())
            self.timings["load_model_s"] = time.perf_counter() - start
        return self._base_encoder

    # ------------------------------------------------------------------------------ base evaluation
    def base_evaluation(self) -> dict[str, Any]:
        """The base model on the dev files (and the report file): once per setting, cached in a file."""
        from flows import steps
        from simcse.io import atomic_write_json

        path = self.dir / "base_eval.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        start, cpu = time.perf_counter(), time.process_time()
        config, inputs = self.base_config(), self.inputs()
        dev = steps.evaluate_model(self.base_model(), inputs, config, log)
        result: dict[str, Any] = {"dev": dev, "report": report_value(dev, None, self, config)}
        rep = self.exp.get("report") or {}
        if rep.get("kind") == "sts":
            result["report_eval"] = evaluate_report(self.base_model(), inputs, config, rep["path"])
            result["report"] = report_value(dev, result["report_eval"], self, config)
        result["seconds"] = time.perf_counter() - start
        result["cpu_seconds"] = time.process_time() - cpu
        result["eval_sentences"] = eval_sentence_counts(self)
        result["check"] = zero_shot_check(self, result)
        atomic_write_json(path, result)
        log.info("%s base model: %s; %s (%.1f s)", self.name, steps.describe_evaluation(dev), result["check"],
                 result["seconds"])
        return result

    # ----------------------------------------------------------------------------------- mining
    def shared_round(self, seed: int, round_: int) -> Path:
        """Triplets root holding round `round_` mined with the base model: every band at round 0, the
        encoder-independent bands after. Mined on first use; `mine` reuses a finished round."""
        from mining.pipeline import mine

        root = self.dir / f"seed{seed}" / "triplets"
        if (root / f"round={round_}" / "manifest.json").is_file():
            return root
        bands = self.bands if round_ == 0 else [b for b in self.bands if b in MODEL_INDEPENDENT_BANDS]
        start, cpu = time.perf_counter(), time.process_time()
        result = mine(self.corpus(), self.base_encoder(), root, round=round_, bands=bands, params=self.params,
                      seed=seed, cache_dir=self.dir / "cache", show_progress=False)
        seconds = time.perf_counter() - start
        self.timings.setdefault("shared_mining", []).append(
            {"seed": seed, "round": round_, "bands": bands, "seconds": seconds,
             "cpu_seconds": time.process_time() - cpu, "timings": result.manifest.get("timings"), "embeddings_cached": (result.manifest.get("embeddings") or {}).get("cached")})
        log.info("%s seed %d round %d mined with the base model (%s): %.1f s", self.name, seed, round_,
                 ", ".join(f"{b} {s['rows']}" for b, s in result.bands.items()), seconds)
        return root


def eval_sentence_counts(ctx: SettingContext) -> dict[str, int]:
    """Unique sentences of the dev files and of the report file (what one evaluation encodes)."""
    from simcse.io import read_labeled_pairs, read_sts

    inputs = ctx.inputs()
    dev: set[str] = set()
    for f in inputs["sts"]:
        d = read_sts(f)
        dev.update(d.sentence1 + d.sentence2)
    for f in inputs["eval_pairs"]:
        d = read_labeled_pairs(f)
        dev.update(d.sentence1 + d.sentence2)
    rep = ctx.exp.get("report") or {}
    test = set()
    if rep.get("kind") == "sts":
        d = read_sts(rep["path"])
        test.update(d.sentence1 + d.sentence2)
    return {"dev": len(dev), "report": len(test)}


def evaluate_report(model_path: str, inputs: dict[str, Any], config: Any, sts_path: str) -> dict[str, Any]:
    """`steps.evaluate_model` on the report STS file alone (the dev metric is not among its files)."""
    from flows import steps

    no_dev = config.model_copy(update={"eval": config.eval.model_copy(update={"dev_metric": None})})
    return steps.evaluate_model(model_path, {**inputs, "sts": [sts_path], "eval_pairs": []}, no_dev, log)


def report_value(dev_eval: dict[str, Any], report_eval: dict[str, Any] | None, ctx: SettingContext,
                 config: Any) -> dict[str, Any]:
    """The reported metric: the report file's score (General: STS-B test) or the dev metric (Domain)."""
    rep = ctx.exp.get("report") or {}
    if rep.get("kind") == "sts":
        if report_eval is None:
            return {"name": None, "value": None}
        stem, value = next(iter(report_eval["evaluation"]["sts"].items()))
        return {"name": f"sts/{stem}", "value": value}
    return dict(dev_eval["dev_metric"])


def zero_shot_check(ctx: SettingContext, base: dict[str, Any]) -> str:
    """Compare the base model's scores with the issue's zero-shot figures (only on the full files)."""
    expected = ctx.exp.get("zero_shot") or {}
    if not ctx.exp.get("full_eval"):
        return "not checked (evaluation files are subsampled at this size)"
    measured = {base["dev"]["dev_metric"]["name"]: base["dev"]["dev_metric"]["value"]}
    if base["report"].get("name"):
        measured[base["report"]["name"]] = base["report"]["value"]
    parts, ok = [], True
    for name, want in expected.items():
        got = measured.get(name)
        good = got is not None and abs(round(got, 2) - want) < 0.005
        ok &= good
        parts.append(f"{name} {got:.2f} (issue: {want:.2f})" if got is not None else f"{name} not measured")
    return ("reproduced: " if ok else "MISMATCH: ") + ", ".join(parts)


# ----------------------------------------------------------------------------------------- one arm
def link_round(src_root: Path, dst_root: Path, round_: int) -> None:
    """Put a finished round into another triplets root: hard links (a copy across file systems), renamed
    into place in one step, so the arm sees either no round or a complete one."""
    dst = dst_root / f"round={round_}"
    if (dst / "manifest.json").is_file():
        return
    if dst.exists():
        shutil.rmtree(dst)
    tmp = dst_root / f".round={round_}.linking"
    shutil.rmtree(tmp, ignore_errors=True)
    dst_root.mkdir(parents=True, exist_ok=True)

    def link(src: str, target: str) -> None:
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)

    shutil.copytree(src_root / f"round={round_}", tmp, copy_function=link)
    os.replace(tmp, dst)


def mine_own_round(ctx: SettingContext, model_path: str, config: Any, run: Any, round_: int,
                   bands: list[str]) -> dict[str, float]:
    """Re-mine the arm's bands with its current encoder (`mine` reuses a finished round); its timings."""
    from flows import steps
    from mining.pipeline import mine

    if run.manifest_path(round_).is_file():
        return {}
    start = time.perf_counter()
    encoder = steps.load_encoder(model_path, config)
    loaded = time.perf_counter() - start
    result = mine(ctx.corpus(), encoder, run.triplets, round=round_, bands=bands, params=config.mining.params,
                  seed=config.seed, cache_dir=run.cache, show_progress=False)
    return {"load": loaded, **(result.manifest.get("timings") or {})}


class PhaseClock:
    """Wall and process CPU seconds per phase (CPU time: the work done, less sensitive to a busy machine)."""

    @dataclass
    class Span:
        wall: float = 0.0
        cpu: float = 0.0

    def __init__(self) -> None:
        self.wall: Counter = Counter()
        self.cpu: Counter = Counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[PhaseClock.Span]:
        span = PhaseClock.Span()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield span
        finally:
            span.wall, span.cpu = time.perf_counter() - wall, time.process_time() - cpu
            self.wall[name] += span.wall
            self.cpu[name] += span.cpu

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.wall.items()}
        out.update({f"{k}_cpu": round(v, 3) for k, v in self.cpu.items()})
        return out


def result_path(out: Path, setting: str, arm: str, seed: int) -> Path:
    return out / "results" / setting / arm / f"seed{seed}.json"


def run_arm(ctx: SettingContext, arm: dict[str, Any], seed: int, keep_models: bool = False) -> dict[str, Any]:
    """Every round of one arm x seed, then select on dev, score the report set, write the result file."""
    from flows import steps
    from flows.rundir import RunDir
    from simcse.io import atomic_write_json

    path = result_path(ctx.out, ctx.name, arm["name"], seed)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    wall = time.perf_counter()
    run = RunDir(ctx.out / "runs" / ctx.name / arm["name"] / f"seed{seed}")
    config = build_config(ctx.raw, arm, ctx.size, seed, run.root, ctx.path)
    run.claim(config)
    steps.clean_partial_writes(run)
    inputs = ctx.inputs()
    base = ctx.base_evaluation()
    steps.write_base_metrics(run, base["dev"])
    bands = arm_bands(arm, ctx.bands)
    if not bands:
        raise ValueError(f"arm {arm['name']} trains on no band that setting {ctx.name} mines ({ctx.bands})")
    shared_later = arm["negatives"] == "none" or set(bands) <= set(MODEL_INDEPENDENT_BANDS)
    clock = PhaseClock()
    mining_detail: list[dict[str, Any]] = []
    train_detail: list[dict[str, Any]] = []
    for r in range(config.rounds):
        if run.round_complete(r):
            continue
        model_in = ctx.base_model() if r == 0 else str(run.model_dir(r - 1))
        # Shared mining is timed as shared work (run_meta.json), not as this arm's.
        shared_root = ctx.shared_round(seed, r) if (r == 0 or shared_later) and not run.manifest_path(r).is_file() else None
        with clock.phase("mine") as mine_time:
            if r == 0 or shared_later:
                if shared_root is not None:
                    link_round(shared_root, run.triplets, r)
                mining_detail.append({"round": r, "shared": True})
            else:
                mining_detail.append({"round": r, "shared": False,
                                      **mine_own_round(ctx, model_in, config, run, r, bands)})
            mined = steps.read_mined(run, r)
        mined["seconds"] = mine_time.wall
        with clock.phase("other"):
            plan = steps.schedule_round(config, run, r, log)
        with clock.phase("train"):
            trained = steps.train_round(model_in, plan, config, run, r, log)
        train_detail.append({"round": r, "seconds": trained.get("seconds"), "steps": trained.get("steps"),
                             "triplets_per_s": trained.get("triplets_per_s")})
        with clock.phase("eval"):
            evaluated = steps.evaluate_model(str(run.model_dir(r)), inputs, config, log)
        with clock.phase("other"):
            steps.finish_round(config, run, r, mined, trained, evaluated, log)
        log.info("%s %s seed %d round %d: %s", ctx.name, arm["name"], seed, r, steps.describe_evaluation(evaluated))

    curve = []
    for r in range(config.rounds):
        m = run.read_metrics(r)
        cur = m.get("curriculum") or {}
        curve.append({"round": r, "dev": (m.get("dev_metric") or {}).get("value"),
                      "train_accuracy": (m.get("train") or {}).get("mean_train_accuracy"),
                      "steps": (m.get("train") or {}).get("steps"),
                      "competence": cur.get("competence"), "mixture": cur.get("mixture"), "alpha": cur.get("alpha"),
                      "decision": cur.get("decision"),
                      "bands": {b: {"rows": s.get("rows"), "difficulty": s.get("mean_anchor_negative_sim")}
                                for b, s in ((m.get("mining") or {}).get("bands") or {}).items()}})
    best = max(range(len(curve)), key=lambda i: (curve[i]["dev"] if curve[i]["dev"] is not None else -1e9, -i))
    if not run.model_complete(best):
        raise RuntimeError(f"{run.model_dir(best)}: the selected round's model is missing; delete {run.root} "
                           f"to rerun this arm")
    report_eval = None
    rep = ctx.exp.get("report") or {}
    if rep.get("kind") == "sts":
        with clock.phase("eval"):
            report_eval = evaluate_report(str(run.model_dir(best)), inputs, config, rep["path"])
    dev_eval = run.read_metrics(best)
    result = {
        "setting": ctx.name, "arm": arm["name"], "kind": arm_kind(arm), "description": arm.get("description"),
        "seed": seed, "size": ctx.size["name"], "rounds": config.rounds, "steps_per_round": config.steps_per_round,
        "batch_size": config.batch_size, "total_steps": sum(c["steps"] or 0 for c in curve),
        "config_fingerprint": config.fingerprint(), "curve": curve, "selected_round": best,
        "dev_selected": curve[best]["dev"], "dev_name": (dev_eval.get("dev_metric") or {}).get("name"),
        "report": report_value(dev_eval, report_eval, ctx, config),
        "timings": {**clock.as_dict(), "wall": round(time.perf_counter() - wall, 3),
                    "mining": mining_detail, "training": train_detail},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, result)
    if not keep_models:  # the result file holds the figures; the models are 90 MB a round
        for r in range(config.rounds):
            shutil.rmtree(run.model_dir(r), ignore_errors=True)
        shutil.rmtree(run.cache, ignore_errors=True)
    log.info("%s %s seed %d done: selected round %d, %s %.2f (%.0f s: mine %.0f, train %.0f, eval %.0f)",
             ctx.name, arm["name"], seed, best, result["report"]["name"], result["report"]["value"],
             result["timings"]["wall"], clock.wall["mine"], clock.wall["train"], clock.wall["eval"])
    return result


# --------------------------------------------------------------------------------------- the plan
def planned_runs(size: dict[str, Any], settings: list[str], arms: list[str] | None,
                 seeds: list[int] | None) -> list[tuple[str, str, int]]:
    """(setting, arm, seed) in the order run: seeds outermost, so a deadline leaves whole seeds."""
    chosen = arms or (arm_names() if size.get("arms", "all") == "all" else list(size["arms"]))
    loaded = {a: load_arm(a) for a in chosen}
    return [(s, a, seed) for seed in (seeds if seeds is not None else size["seeds"]) for s in settings
            for a in chosen if s in loaded[a]["settings"]]


def setting_context(name: str, size: dict[str, Any], out: Path) -> SettingContext:
    path = CONFIG_DIR / "settings" / f"{name}.yaml"
    raw = prepare_setting_data(name, _read_yaml(path), size, out)
    return SettingContext(name=name, raw=raw, path=path, size=size, out=out)


def machine() -> str:
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    except Exception:  # noqa: BLE001 - only a description
        device = f"CPU, {os.cpu_count()} cores"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{platform.node() or 'host'} ({device}; load average {load})"


def run_experiment(args: argparse.Namespace) -> int:
    size = load_size(args.size)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out or REPO / "runs" / "experiment" / size["name"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = args.settings.split(",") if args.settings else list(SETTINGS)
    arms = args.arms.split(",") if args.arms else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    plan = planned_runs(size, settings, arms, seeds)
    preflight(size, plan, settings)
    started = time.perf_counter()
    deadline = started + args.deadline_min * 60 if args.deadline_min else None
    contexts = {s: setting_context(s, size, out) for s in settings}
    arm_cache = {a: load_arm(a) for a in {a for _, a, _ in plan}}
    log.info("size %s: %d arm x seed runs into %s", size["name"], len(plan), out)
    skipped: list[str] = []
    arm_seconds: list[float] = []
    for setting, arm, seed in plan:
        if result_path(out, setting, arm, seed).is_file():
            continue
        if deadline is not None:
            expected = max(arm_seconds) if arm_seconds else 0.0
            if time.perf_counter() + expected > deadline:
                skipped.append(f"{setting}/{arm}/seed{seed}")
                continue
        t = time.perf_counter()
        run_arm(contexts[setting], arm_cache[arm], seed, keep_models=args.keep_models)
        arm_seconds.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    shared = {s: {**c.timings, "base_eval_s": c.base_evaluation().get("seconds")} for s, c in contexts.items()}
    write_run_meta(out, size, args, wall, shared, skipped)
    write_results(out, Path(args.results) if args.results else DEFAULT_RESULTS, size)
    if skipped:
        log.warning("deadline reached: %d runs not started (%s); rerun the same command to finish them",
                    len(skipped), ", ".join(skipped[:6]))
    log.info("finished in %.0f s; results in %s", wall, args.results or DEFAULT_RESULTS)
    return 0


def preflight(size: dict[str, Any], plan: list[tuple[str, str, int]], settings: list[str]) -> None:
    """Fail before any work on what would fail later: unknown settings."""
    from simcse.errors import InputError

    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise InputError(f"unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}")


def write_run_meta(out: Path, size: dict[str, Any], args: argparse.Namespace, wall: float,
                   shared: dict[str, Any], skipped: list[str]) -> None:
    from simcse.io import atomic_write_json

    meta_path = out / "run_meta.json"
    previous = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    atomic_write_json(meta_path, {
        "size": size, "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(), "wall_seconds": wall + previous.get("wall_seconds", 0.0),
        "invocations": previous.get("invocations", 0) + 1, "shared": merge_shared(previous.get("shared") or {}, shared),
        "skipped": skipped,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def merge_shared(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Shared-work timings over resumed invocations: new measurements win, mining records accumulate."""
    merged = copy.deepcopy(previous)
    for setting, timings in current.items():
        entry = merged.setdefault(setting, {})
        for key, value in timings.items():
            if key == "shared_mining":
                entry[key] = entry.get(key, []) + value
            elif value is not None:
                entry[key] = value
    return merged


# ------------------------------------------------------------------------------------------ results
def build_summary(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    results = report.load_results(out / "results")
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8")) if (out / "run_meta.json").is_file() else {}
    agg = report.aggregate(results)
    difficulty = report.difficulty_table(results)
    settings = []
    data_notes = []
    for name in SETTINGS:
        base_path = out / "shared" / name / "base_eval.json"
        if not base_path.is_file() and name not in agg:
            continue
        raw = _read_yaml(CONFIG_DIR / "settings" / f"{name}.yaml")
        exp = raw["experiment"]
        base = json.loads(base_path.read_text(encoding="utf-8")) if base_path.is_file() else {}
        cuts = (size.get("subsample") or {}).get(name) or {}
        shared = (meta.get("shared") or {}).get(name) or {}
        data_notes.append(f"{name}: " + (", ".join(f"{k} {v} rows" for k, v in cuts.items()) or "full inputs") +
                          (f", pool {shared['pool']} sentences, {shared['anchor_rows']} anchor rows"
                           if shared.get("pool") else "") +
                          (f", evaluation files cut to {size['eval_subsample']} pairs"
                           if size.get("eval_subsample") is not None else ", full evaluation files"))
        settings.append({
            "name": name, "label": exp["label"], "dev_name": exp["dev_name"], "report_name": exp["report_name"],
            "arms": agg.get(name, {}), "difficulty": difficulty.get(name, {}),
            "zero_shot_dev": ((base.get("dev") or {}).get("dev_metric") or {}).get("value"),
            "zero_shot_report": (base.get("report") or {}).get("value"), "zero_shot_check": base.get("check"),
            "need_zero_shot_gain": bool(exp.get("need_zero_shot_gain"))})
    planned = planned_runs(size, [s["name"] for s in settings] or list(SETTINGS), None, None)
    done = {(r["setting"], r["arm"], r["seed"]) for r in results}
    missing = [p for p in planned if p not in done]
    run = {"size": size["name"], "smoke": size["name"] == "smoke", "rounds": size["rounds"],
           "steps_per_round": size["steps_per_round"], "batch_size": size["batch_size"],
           "total_steps": size["rounds"] * size["steps_per_round"], "seeds": size["seeds"],
           "data": "; ".join(data_notes) or "–", "machine": meta.get("machine", "–"),
           "wall": f"{meta['wall_seconds'] / 60:.1f} min over {meta.get('invocations', 1)} invocation(s)"
           if meta.get("wall_seconds") is not None else "–",
           "command": meta.get("command", "–"),
           "incomplete": (f"{len(missing)} of {len(planned)} arm x seed runs of this size have no result yet "
                          f"(e.g. {', '.join('/'.join(map(str, m)) for m in missing[:4])})") if missing else None}
    return {"run": run, "settings": settings}


def write_results(out: Path, results_md: Path, size: dict[str, Any]) -> Path:
    summary = build_summary(out, size)
    figure = results_md.parent / "figures" / f"experiment_dev_per_round{'_smoke' if size['name'] == 'smoke' else ''}.png"
    plotted = report.plot_dev_curves(summary, figure)
    rel = os.path.relpath(plotted, results_md.parent) if plotted else None
    report.write_section(results_md, report.render_section(summary, rel))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    return results_md


# ----------------------------------------------------------------------------------------- estimate
def unit_costs(out: Path) -> dict[str, float]:
    """Unit costs measured in a finished run (wall seconds on that machine at that load), and per phase the
    ratio of process CPU seconds to wall seconds (to translate to a quiet machine)."""
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    results = report.load_results(out / "results")
    enc_s = enc_n = text_s = text_n = 0.0
    load, train_fixed, mine_other, mine_pool = [], [], [], []
    wall: Counter = Counter()
    cpu: Counter = Counter()
    for name, shared in meta["shared"].items():
        if shared.get("load_model_s"):
            load.append(shared["load_model_s"])
        for m in shared.get("shared_mining", []):
            t = m.get("timings") or {}
            if not m.get("embeddings_cached") and t.get("encode"):
                enc_s += t["encode"]
                enc_n += shared["pool"]
            mine_other.append(sum(t.get(k, 0.0) for k in ("index", "bands", "write")))
            mine_pool.append(shared["pool"])
            wall["shared"] += m["seconds"]
            cpu["shared"] += m.get("cpu_seconds", m["seconds"])
    for res in results:
        texts_per_row = 2 if res["kind"] == "in_batch" else 3
        for tr in res["timings"]["training"]:
            if tr.get("triplets_per_s") and tr.get("steps"):
                loop = tr["steps"] * res["batch_size"] / tr["triplets_per_s"]
                text_s += loop
                text_n += tr["steps"] * res["batch_size"] * texts_per_row
                train_fixed.append(max(0.0, tr["seconds"] - loop))
        for m in res["timings"]["mining"]:
            if not m.get("shared") and m.get("encode"):
                pool = meta["shared"][res["setting"]]["pool"]
                enc_s += m["encode"]
                enc_n += pool
                load.append(m.get("load", 0.0))
                mine_other.append(sum(m.get(k, 0.0) for k in ("index", "bands", "write")))
                mine_pool.append(pool)
        for phase in ("mine", "train", "eval"):
            wall[phase] += res["timings"].get(phase, 0.0)
            cpu[phase] += res["timings"].get(f"{phase}_cpu", res["timings"].get(phase, 0.0))
    load_s = statistics.fmean(load) if load else 0.0
    for name in meta["shared"]:  # evaluations: (seconds - model loads) / sentences, from the base evaluations
        base_path = out / "shared" / name / "base_eval.json"
        if base_path.is_file():
            base = json.loads(base_path.read_text(encoding="utf-8"))
            counts = base["eval_sentences"]
            calls = 2 if counts["report"] else 1
            enc_s += max(0.0, base["seconds"] - calls * load_s)
            enc_n += counts["dev"] + counts["report"]
            wall["shared"] += base["seconds"]
            cpu["shared"] += base.get("cpu_seconds", base["seconds"])
    costs = {"encode_s_per_sentence": enc_s / max(enc_n, 1), "train_s_per_text": text_s / max(text_n, 1),
             "load_model_s": load_s, "train_fixed_s": statistics.fmean(train_fixed) if train_fixed else 0.0,
             "mine_other_s_per_pool_sentence": sum(mine_other) / max(sum(mine_pool), 1)}
    costs.update({f"cpu_per_wall_{p}": cpu[p] / wall[p] for p in ("shared", "mine", "train", "eval") if wall[p]})
    return costs


def estimate_seconds(size: dict[str, Any], costs: dict[str, float], stats: dict[str, dict[str, int]]
                     ) -> dict[str, dict[str, float]]:
    """Predicted wall seconds per setting and phase (shared, mine, train, eval) at the measured unit costs."""
    enc, load = costs["encode_s_per_sentence"], costs["load_model_s"]
    out: dict[str, dict[str, float]] = {}
    plan = planned_runs(size, list(stats), None, None)
    seeds = len(size["seeds"])
    rounds, steps, batch = size["rounds"], size["steps_per_round"], size["batch_size"]
    for setting, st in stats.items():
        bands = _read_yaml(CONFIG_DIR / "settings" / f"{setting}.yaml")["mining"]["bands"]
        pool, dev, rep = st["pool"], st["dev"], st["report"]
        mine_other = costs["mine_other_s_per_pool_sentence"] * pool
        phases = Counter()
        phases["shared"] += (2 if rep else 1) * load + (dev + rep) * enc  # base evaluation
        phases["shared"] += load + pool * enc + seeds * rounds * mine_other  # embeddings cached across seeds
        for s, arm_name, _ in plan:
            if s != setting:
                continue
            arm = load_arm(arm_name)
            texts = 2 if arm["negatives"] == "none" else 3
            own = arm["negatives"] != "none" and not set(arm_bands(arm, bands)) <= set(MODEL_INDEPENDENT_BANDS)
            phases["train"] += rounds * (costs["train_fixed_s"] + steps * batch * texts * costs["train_s_per_text"])
            phases["eval"] += rounds * (load + dev * enc) + (load + rep * enc if rep else 0.0)
            phases["mine"] += (rounds - 1) * own * (load + pool * enc + mine_other)
        out[setting] = dict(phases)
    return out


def setting_stats(size: dict[str, Any], out: Path) -> dict[str, dict[str, int]]:
    """Pool size, anchor rows and eval sentences of each setting at a size (writes its subsamples)."""
    stats = {}
    for name in SETTINGS:
        ctx = setting_context(name, size, out)
        counts = eval_sentence_counts(ctx)
        stats[name] = {"pool": len(ctx.corpus()), "anchor_rows": ctx.corpus().n_anchor_rows, **counts}
    return stats


def estimate(args: argparse.Namespace) -> int:
    measured = Path(getattr(args, "from")).resolve()
    costs = unit_costs(measured)
    meta = json.loads((measured / "run_meta.json").read_text(encoding="utf-8"))
    print(f"unit costs measured in {measured} on {meta['machine']}:")
    for k, v in costs.items():
        print(f"  {k:34s} {v:.6f}")
    scratch = Path(args.scratch or measured / "estimate")
    for name in [args.size] if args.size else ["smoke", "cpu", "gpu"]:
        size = load_size(name)
        stats = setting_stats(size, scratch / name)
        est = estimate_seconds(size, costs, stats)
        wall = sum(sum(p.values()) for p in est.values())
        cpu = sum(v * costs.get(f"cpu_per_wall_{k}", 1.0) for p in est.values() for k, v in p.items())
        runs = len(planned_runs(size, list(SETTINGS), None, None))
        print(f"size {name}: {runs} arm x seed runs")
        for s, st in stats.items():
            print(f"  {s}: pool {st['pool']} sentences, {st['anchor_rows']} anchor rows, {st['dev']} dev and "
                  f"{st['report']} report sentences -> " + ", ".join(f"{k} {v / 60:.1f}" for k, v in est[s].items())
                  + f" min (total {sum(est[s].values()) / 60:.1f} min)")
        print(f"  at the measured machine's speed: {wall / 60:.1f} min; process CPU time {cpu / 60:.1f} min, so "
              f"on a quiet 2-core machine about {cpu / 120:.0f}-{cpu / 60:.0f} min (CPU time / 2 .. / 1)")
    if meta.get("size", {}).get("name"):
        print(f"measured: the {meta['size']['name']} run took {meta['wall_seconds'] / 60:.1f} min wall on "
              f"{meta['machine']}")
    return 0


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run (or resume) the experiment and write the results section")
    run_p.add_argument("--size", required=True, help="smoke, cpu or gpu (configs/experiment/sizes.yaml)")
    run_p.add_argument("--out", help="working folder (default runs/experiment/<size>)")
    run_p.add_argument("--results", help=f"markdown file to write the section into (default {DEFAULT_RESULTS})")
    run_p.add_argument("--settings", help="comma-separated subset of general,domain")
    run_p.add_argument("--arms", help="comma-separated subset of the arms (default: the size's)")
    run_p.add_argument("--seeds", help="comma-separated seeds (default: the size's)")
    run_p.add_argument("--deadline-min", type=float, help="start no arm x seed run that would end after this")
    run_p.add_argument("--keep-models", action="store_true", help="keep every round's model folder")
    run_p.add_argument("--threads", type=int, help="torch CPU threads (1 on a busy machine: CPU time then "
                                                   "measures the work, not other processes' contention)")
    rep_p = sub.add_parser("report", help="rebuild the results section from finished result files")
    rep_p.add_argument("--size", required=True)
    rep_p.add_argument("--out")
    rep_p.add_argument("--results")
    est_p = sub.add_parser("estimate", help="predict a size's wall time from a finished run's unit costs")
    est_p.add_argument("--from", required=True, help="the --out folder of a finished run (e.g. the smoke run)")
    est_p.add_argument("--size", help="default: every size")
    est_p.add_argument("--scratch", help="where the sizes' subsamples are written (default <from>/estimate)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("flows", "mining", "simcse", "curriculum", "faiss"):
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    from simcse.errors import InputError

    try:
        if args.command == "run":
            return run_experiment(args)
        if args.command == "report":
            size = load_size(args.size)
            out = Path(args.out or REPO / "runs" / "experiment" / size["name"]).resolve()
            path = write_results(out, Path(args.results) if args.results else DEFAULT_RESULTS, size)
            print(path)
            return 0
        return estimate(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
