"""One arm x seed of the experiment: the flows' round loop (`flows.rounds.loop.run_rounds`) with plain steps, then
the final and the dev-selected model scored on the report set, written as one result file.

What the harness adds to the flows, all of it identical by construction across arms:
- Shared work per start and setting, done once under a file lock (two workers may ask at once): the base
  model's evaluation, and the rounds mined with the base model (round 0 with every band, later rounds with
  the bands whose rows do not depend on the encoder), hard-linked into each arm's run folder.
- Every other round is mined by the arm with its current encoder, like a flows run.
No Prefect: the GPU host has none, and the plain steps are what the flow's tasks wrap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.experiment_design import (
    MODEL_INDEPENDENT_BANDS,
    build_config,
    load_arm,
    load_size,
    prepare_setting,
    start_model,
    teacher_path,
)
from bench.judge_report import mined_share
from dataio.triplet_layout import GRADED_BANDS, manifest_path, round_dir

log = logging.getLogger("experiment")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed), held until the block ends; other workers wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class PhaseClock:
    """Wall and process CPU seconds per phase (CPU time: the work done, less sensitive to a busy machine)."""

    def __init__(self) -> None:
        self.wall: Counter = Counter()
        self.cpu: Counter = Counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.wall.items()}
        out.update({f"{k}_cpu": round(v, 3) for k, v in self.cpu.items()})
        return out


@dataclass
class SettingContext:
    """What every arm of one start x setting shares: inputs, mining corpus, base model and its evaluation."""

    start: str
    name: str
    size: dict[str, Any]
    out: Path
    raw: dict[str, Any] = field(init=False)
    model: str = field(init=False)
    _corpus: Any = None
    _inputs: dict[str, Any] | None = None
    _base_config: Any = None

    def __post_init__(self) -> None:
        self.raw = prepare_setting(self.name, self.size, self.out)
        self.model = start_model(self.start, self.out)

    @property
    def exp(self) -> dict[str, Any]:
        return self.raw["experiment"]

    @property
    def dir(self) -> Path:
        return self.out / "shared" / self.start / self.name

    @property
    def bands(self) -> list[str]:
        return list(self.raw["mining"]["bands"])

    def config(self, arm: dict[str, Any], seed: int, run_dir: Path) -> Any:
        return build_config(self.raw, arm, self.size, self.start, seed, run_dir, self.model)

    def base_config(self) -> Any:
        if self._base_config is None:
            arm = {"curriculum": {"mode": "static", "static": {"weights": {"random": 1.0}}}, "negatives": "hard",
                   "bands": "all"}
            self._base_config = self.config(arm, 0, self.dir)
        return self._base_config

    def inputs(self) -> Any:  # flows.run.step_records.RunInputs
        from flows.run.inputs import prepare_inputs
        from flows.run.rundir import RunDir

        if self._inputs is None:
            self._inputs = prepare_inputs(self.base_config(), RunDir(self.dir))
        return self._inputs

    def corpus(self) -> Any:
        """The mining corpus, loaded once per process (every arm and round mines the same pool)."""
        if self._corpus is None:
            from flows.run.inputs import load_mining_corpus

            self._corpus = load_mining_corpus(self.inputs(), dict(self.base_config().mining.params))
        return self._corpus

    def evaluate_report(self, model: str, config: Any) -> dict[str, Any]:
        """The report set's scores of `model` (the dev files are not among them)."""
        from flows.run.inputs import evaluate_model

        report = self.exp["report"]
        no_dev = config.model_copy(update={"eval": config.eval.model_copy(update={"dev_metric": None})})
        inputs = self.inputs().model_copy(update={"sts": list(report.get("sts") or []),
                                                  "eval_pairs": list(report.get("pairs") or [])})
        return evaluate_model(model, inputs, no_dev).evaluation

    def base_evaluation(self, report: bool = True) -> dict[str, Any]:
        """The start model on the dev files and the report set: once per start and setting (file, lock).
        `report=False` (a pilot): the dev files only, kept apart, so a pilot never computes a report score."""
        from dataio.atomic import atomic_write_json
        from flows.run.inputs import describe_evaluation, evaluate_model

        path = self.dir / ("base_eval.json" if report else "base_eval_dev_only.json")
        with file_lock(self.dir / ".lock"):
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
            start = time.perf_counter()
            config = self.base_config()
            dev = evaluate_model(self.model, self.inputs(), config)
            result = {"dev": dev.as_file(), "report": self.evaluate_report(self.model, config) if report else None,
                      "seconds": time.perf_counter() - start}
            atomic_write_json(path, result)
            log.info("%s/%s base model: %s", self.start, self.name, describe_evaluation(dev))
        return result

    def teacher_evaluation(self) -> dict[str, Any] | None:
        """The size's teacher scored like the start model, on the dev files and the report set: the ceiling the
        judge's arms are read against (once per start and setting; None when the size names no teacher)."""
        from dataio.atomic import atomic_write_json
        from flows.run.inputs import evaluate_model

        if not self.size.get("teacher"):
            return None
        path = self.dir / "teacher_eval.json"
        with file_lock(self.dir / ".lock"):
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
            start = time.perf_counter()
            model, config = str(teacher_path(self.size)), self.base_config()
            result = {"model": model, "dev": evaluate_model(model, self.inputs(), config).as_file(),
                      "report": self.evaluate_report(model, config), "seconds": time.perf_counter() - start}
            atomic_write_json(path, result)
        return result

    def shared_round(self, seed: int, round_: int, config: Any = None) -> Path:
        """The triplets root holding round `round_` mined with the start model: every band at round 0, the
        encoder-independent bands after. Mined on first use, under the lock; `mine` reuses a finished round.
        Arms with the judge's settings (mined positives, a teacher: `config`) share the rounds of their variant."""
        from flows.run.inputs import load_encoder, teacher_of
        from mining.pipeline import mine

        config = config or self.base_config()
        params = config.mining.params
        variant = judge_variant(config)
        # The graded bands are mined only on request: arms that train on them share rounds of their own, so the
        # rounds other arms share stay as they were mined (same bands, same parameters).
        graded = [b for b in config.mining.bands if b in GRADED_BANDS]
        name = f"seed{seed}" if variant is None else f"{variant}/seed{seed}"
        root = self.dir / (f"graded-{name}" if graded else name) / "triplets"
        with file_lock(self.dir / ".lock"):
            if not manifest_path(root, round_).is_file():
                bands = self.bands + graded if round_ == 0 else [b for b in self.bands if b in MODEL_INDEPENDENT_BANDS]
                encoder = load_encoder(self.model, self.base_config())
                teacher = teacher_of(config) if config.teacher is not None else None
                mine(self.corpus(), encoder, root, round=round_, bands=bands, params=params.as_dict(),
                     seed=seed, cache_dir=self.dir / "cache", show_progress=False, teacher=teacher)
        return root


def judge_variant(config: Any) -> str | None:
    """None for an arm without the judge's settings (the shared rounds of the first experiment), else a short
    name of its mined-positive settings and teacher."""
    import hashlib

    params = config.mining.params
    if not params.mined_positives and config.teacher is None:
        return None
    key = json.dumps([params.as_dict(), config.teacher.path if config.teacher else None], sort_keys=True)
    return "judge-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def encoder_dependent(config: Any) -> bool:
    """Whether an arm's later rounds depend on its own encoder: a band that does (nearest neighbours, in-domain
    clusters), or positives the student judges, alone or beside the teacher (mined with the current encoder, as
    the product does)."""
    if not set(config.mining.bands) <= set(MODEL_INDEPENDENT_BANDS):
        return True
    params = config.mining.params
    return bool(params.mined_positives and params.judge_of_positives(config.teacher is not None) != "teacher")


def link_teacher_cache(shared_cache: Path, run_cache: Path) -> None:
    """Hard-link the teacher's cached embeddings into an arm's run cache: the pool is encoded by the teacher once
    per start and setting, as a run encodes it once, not once per arm and round."""
    for folder in shared_cache.glob("emb-*"):
        meta = folder / "meta.json"
        if not meta.is_file() or not str(json.loads(meta.read_text(encoding="utf-8")).get(
                "model_fingerprint", "")).startswith("teacher:"):
            continue
        target = run_cache / folder.name
        if target.exists():
            continue
        run_cache.mkdir(parents=True, exist_ok=True)
        tmp = run_cache / f".{folder.name}.linking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in folder.iterdir():
            if f.is_file() and not f.name.endswith(".partial") and f.name != "progress.json":
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        os.replace(tmp, target)


def link_round(src_root: Path, dst_root: Path, round_: int) -> None:
    """Put a finished round into another triplets root: hard links (a copy across file systems), renamed
    into place in one step, so the arm sees either no round or a complete one."""
    dst = round_dir(dst_root, round_)
    if manifest_path(dst_root, round_).is_file():
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

    shutil.copytree(round_dir(src_root, round_), tmp, copy_function=link)
    os.replace(tmp, dst)


def result_path(out: Path, start: str, setting: str, arm: str, seed: int) -> Path:
    return out / "results" / start / setting / arm / f"seed{seed}.json"


def run_arm(out: Path, size_name: str, start: str, setting: str, arm_name: str, seed: int,
            keep_models: bool = False, pilot: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every round of one start x setting x arm x seed, then the report set on its final and selected models.

    `pilot` ({"tag": name, "mining_params": {...}}): a pilot before registration: the arm with these mining
    parameters over its own, its own run folder and result under `out/pilot/`, and the report set never
    computed (only the selection set is read). The flows' step lines (logger `flows`) are this harness's."""
    from flows.run.progress import forwarded

    with forwarded(("flows",), log):
        return _run_arm(out, size_name, start, setting, arm_name, seed, keep_models, pilot)


def _run_arm(out: Path, size_name: str, start: str, setting: str, arm_name: str, seed: int, keep_models: bool,
             pilot: dict[str, Any] | None) -> dict[str, Any]:
    from dataio.atomic import atomic_write_json
    from flows.rounds.loop import RoundSteps, run_rounds
    from flows.rounds.mine_step import mine_round as flows_mine_round
    from flows.rounds.mine_step import read_mined
    from flows.rounds.records import finish_round
    from flows.rounds.schedule_step import schedule_round
    from flows.rounds.train_step import train_round
    from flows.run.inputs import evaluate_model
    from flows.run.rundir import RunDir
    from flows.run.step_records import Evaluation, MinedRound

    report = pilot is None
    path = result_path(out, start, setting, arm_name, seed) if report else \
        out / "pilot" / start / setting / f"{arm_name}-{pilot['tag']}" / f"seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    wall = time.perf_counter()
    size = load_size(size_name)
    ctx = SettingContext(start, setting, size, out)
    arm = load_arm(arm_name)
    if not report:
        arm = {**arm, "mining_params": {**(arm.get("mining_params") or {}), **(pilot.get("mining_params") or {})}}
    run = RunDir(out / ("runs" if report else "pilot-runs") / start / setting /
                 (arm_name if report else f"{arm_name}-{pilot['tag']}") / f"seed{seed}")
    config = ctx.config(arm, seed, run.root)
    base = ctx.base_evaluation(report)
    teacher_scores = ctx.teacher_evaluation() if report else None
    clock = PhaseClock()
    shared_only = not encoder_dependent(config)

    def evaluate(model: str, inputs: Any) -> Evaluation:
        if model == ctx.model:
            return Evaluation.model_validate(base["dev"])
        if config.teacher is not None and model == config.teacher.path:  # scored once per setting, not per arm
            return Evaluation.model_validate((teacher_scores or ctx.teacher_evaluation())["dev"])
        with clock.phase("eval"):
            return evaluate_model(model, inputs, config)

    def mine_round(model: str, inputs: Any, r: int) -> MinedRound:
        start_time = time.perf_counter()
        if not run.manifest_path(r).is_file():
            if r == 0 or shared_only:
                link_round(ctx.shared_round(seed, r, config), run.triplets, r)
            else:  # re-mined with the arm's encoder, by the flows' own mining step
                with clock.phase("mine"):
                    flows_mine_round(model, inputs, config, run, r)
        if config.teacher is not None:  # training's distillation and the next round read the teacher's cache
            link_teacher_cache(ctx.dir / "cache", run.cache)
        return read_mined(run, r).model_copy(update={"seconds": time.perf_counter() - start_time})

    def timed(phase: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            with clock.phase(phase):
                return fn(*args)
        return call

    how = RoundSteps(
        prepare=ctx.inputs,
        evaluate=evaluate,
        mine=mine_round,
        schedule=timed("other", lambda r: schedule_round(config, run, r)),
        train=timed("train", lambda model, plan, r: train_round(model, plan, config, run, r)),
        finish=timed("other", lambda r, m, t, e: finish_round(config, run, r, m, t, e)),
    )
    summary = run_rounds(config, run, how)

    curve = []
    step = 0
    mined = mined_share(run.root)
    for r in range(config.rounds):
        metrics = run.read_metrics(r)
        trained = json.loads((run.round_dir(r) / "train_result.json").read_text(encoding="utf-8"))
        step += trained["steps"]
        cur = metrics.get("curriculum") or {}
        curve.append({"round": r, "step": step, "dev": (metrics.get("dev_metric") or {}).get("value"),
                      "evaluation": metrics.get("evaluation"),
                      "train_accuracy": (metrics.get("train") or {}).get("mean_train_accuracy"),
                      "competence": cur.get("competence"), "mixture": cur.get("mixture"), "alpha": cur.get("alpha"),
                      "bands_per_step": trained.get("bands_per_step"), "anchors_sha256": trained.get("anchors_sha256"),
                      "anchor_order_sha256": trained.get("anchor_order_sha256"),
                      "bands": {b: {"rows": s.get("rows"), "difficulty": s.get("mean_anchor_negative_sim")}
                                for b, s in ((metrics.get("mining") or {}).get("bands") or {}).items()},
                      # kept with the result: the run folder that holds the manifests is not kept
                      "mined_positives_share": mined.get(r)})
    final_round = config.rounds - 1
    selection = summary.get("selection") or {}
    chosen = selection.get("selected_round", final_round)
    final_report = selected_report = None  # a pilot never computes the report set
    if report:
        with clock.phase("eval"):
            final_report = ctx.evaluate_report(str(run.model_dir(final_round)), config)
        if chosen == final_round:
            selected_report = final_report
        elif chosen == "base":
            selected_report = base["report"]
        else:
            with clock.phase("eval"):
                selected_report = ctx.evaluate_report(str(run.model_dir(chosen)), config)
    result = {
        "start": start, "setting": setting, "arm": arm_name, "description": arm.get("description"), "seed": seed,
        "pilot": pilot, "mining_params": config.mining.params.as_dict(),
        "teacher": config.teacher.path if config.teacher else None,
        "size": size_name, "rounds": config.rounds, "steps_per_round": config.steps_per_round,
        "batch_size": config.batch_size, "training": config.training.model_dump(exclude_unset=True),
        "config_fingerprint": config.fingerprint(),
        "dev_metric": (base["dev"].get("dev_metric") or {}).get("name"),
        "base": {"dev": (base["dev"].get("dev_metric") or {}).get("value"), "report": base["report"]},
        "teacher_scores": None if teacher_scores is None else {
            "dev": (teacher_scores["dev"].get("dev_metric") or {}).get("value"), "report": teacher_scores["report"]},
        "curve": curve,
        "final": {"round": final_round, "dev": curve[-1]["dev"], "report": final_report},
        "selected": {"round": chosen, "dev": selection.get("dev"), "report": selected_report},
        "timings": {**clock.as_dict(), "wall": round(time.perf_counter() - wall, 3)},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, result)
    if not keep_models:  # the result file holds the figures; a round's model is 90 MB, its optimizer 180 MB
        for r in range(config.rounds):
            shutil.rmtree(run.model_dir(r), ignore_errors=True)
            shutil.rmtree(run.optimizer_dir(r), ignore_errors=True)
        shutil.rmtree(run.cache, ignore_errors=True)
    log.info("%s/%s/%s seed %d done in %.0f s: final %s, selected round %s", start, setting, arm_name, seed,
             result["timings"]["wall"], _short(final_report) if report else f"dev {curve[-1]['dev']}", chosen)
    return result


def _short(evaluation: dict[str, Any]) -> str:
    parts = [f"STS {k} {v:.2f}" for k, v in (evaluation.get("sts") or {}).items()]
    parts += [f"AP {k} {v:.2f}" for k, v in (evaluation.get("pairs") or {}).items()]
    return ", ".join(parts)
