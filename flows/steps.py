"""The plain functions behind each Prefect task (no Prefect here, so each is testable on its own).

Each step reads and writes only inside the run directory, writes atomically, and is idempotent: called
again after a kill it finds its finished output (a manifest, a model folder, a metrics file) and returns
it, or continues from the checkpoint it left.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from dataio.errors import InputError, TripletDataError
from dataio.tables import table_files
from flows.config import DEFAULT_MODEL, RunConfig, TableFile
from flows.fingerprint import combine, file_fingerprint, path_fingerprint
from flows.rundir import RunDir, remove_stale_temporaries, write_json

_log = logging.getLogger("flows")


# ------------------------------------------------------------------------------------------- inputs
def base_model_path(config: RunConfig) -> str:
    """The base model as a folder path when it is the offline default, else as given."""
    if config.model.name_or_path in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from simcse.model import default_model_path

        return str(default_model_path())
    return config.model.name_or_path


_File = TypeVar("_File", bound=TableFile)


def _present(entry: _File | None, what: str, log: Any) -> _File | None:
    if entry is None:
        return None
    if not entry.path.exists():
        if entry.optional:
            log.warning("%s %s not found; skipped (optional)", what, entry.path)
            return None
        raise InputError(f"{what} file not found; check the path in the config", path=entry.path)
    return entry


def eval_inputs(config: RunConfig, log: Any = _log) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """The evaluation files present (STS, labeled pairs) and, by path, the column maps of those that rename."""
    sts_entries = [e for e in config.eval.sts if _present(e, "eval.sts", log)]
    pair_entries = [e for e in config.eval.pairs if _present(e, "eval.pairs", log)]
    columns = {str(e.path): e.columns.model_dump() for e in [*sts_entries, *pair_entries] if e.columns.model_dump()}
    return [str(e.path) for e in sts_entries], [str(e.path) for e in pair_entries], columns


def prepare_inputs(config: RunConfig, run: RunDir, log: Any = _log) -> dict[str, Any]:
    """The input files of the run as plain JSON (paths, column names) with their content fingerprints.

    For `data.builtin` the demo corpus is built into `<run>/data` first (offline, a few seconds).
    """
    corpus: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    nli: list[dict[str, Any]] = []
    sts, pair_files, eval_columns = eval_inputs(config, log)
    if config.data.builtin == "python_docstrings":
        from flows.demo_data import build_demo_data

        demo = build_demo_data(run.data, max_sentences=config.data.builtin_max_sentences, seed=config.seed)
        log.info("built-in corpus: %d docstring sentences, %d pairs, %d evaluation pairs in %s",
                 demo.sentences, demo.train_pairs, demo.eval_rows, demo.folder)
        corpus.append({"path": str(demo.corpus), "columns": {"text": "text", "id": "id", "domain": "domain"}})
        pairs.append({"path": str(demo.pairs), "columns": {}})
        pair_files.append(str(demo.eval_pairs))
    for entry, out, what in ((config.data.corpus, corpus, "data.corpus"), (config.data.pairs, pairs, "data.pairs"),
                             (config.data.nli, nli, "data.nli")):
        present = _present(entry, what, log)
        if present is not None:  # a folder (a corpus that grows between runs): each of its files, in sorted order
            out.extend({"path": str(path), "columns": present.columns.model_dump(), "domain": present.domain_label}
                       for path in table_files(present.path))
    if not corpus and not nli and not pairs:
        raise InputError("no training input is present (all inputs were optional and missing)")
    fingerprinted: list[Any] = [(e["path"], file_fingerprint(e["path"]) if Path(e["path"]).is_file()
                                 else path_fingerprint(e["path"]), e["columns"], e.get("domain"))
                                for e in corpus + pairs + nli]
    exclude = config.mining.exclude_pairs
    if exclude is not None:  # its content, not just its path, decides what a round mines
        if not exclude.is_file():
            raise InputError("mining.exclude_pairs: no such file; check the path in the config", path=exclude)
        from mining.exclusions import read_excluded_pairs

        read_excluded_pairs(exclude)  # a bad row stops the run here, before anything is mined
        fingerprinted.append(("exclude_pairs", file_fingerprint(exclude)))
    fingerprint = combine(fingerprinted)
    eval_fingerprint = combine([path_fingerprint(p) for p in sts], [path_fingerprint(p) for p in pair_files],
                               *([eval_columns] if eval_columns else []))
    return {"corpus": corpus, "pairs": pairs, "nli": nli, "sts": sts, "eval_pairs": pair_files,
            **({"eval_columns": eval_columns} if eval_columns else {}),
            "exclude_pairs": str(exclude) if exclude is not None else None,
            "fingerprint": fingerprint, "eval_fingerprint": eval_fingerprint}


def load_mining_corpus(inputs: dict[str, Any], params: Any = None) -> Any:
    """The mining corpus of the prepared inputs; `params` (the config's mining.params, a MiningParams or a
    mapping of its fields) may turn off `unsupervised_anchors` so that corpus sentences join the pool as
    candidates only."""
    from mining.corpus import CorpusSource, NliSource, PairSource, load_corpus
    from mining.params import MiningParams

    def cols(entry: dict[str, Any], name: str) -> str | None:
        return entry["columns"].get(name)

    corpus = [CorpusSource(Path(e["path"]), text_column=cols(e, "text"), id_column=cols(e, "id"),
                           domain_column=cols(e, "domain"), domain=e.get("domain")) for e in inputs["corpus"]]
    pairs = [PairSource(Path(e["path"]), anchor_column=cols(e, "anchor"), positive_column=cols(e, "positive"),
                        label_column=cols(e, "label"), domain=e.get("domain")) for e in inputs["pairs"]]
    nli = [NliSource(Path(e["path"]), anchor_column=cols(e, "anchor"), positive_column=cols(e, "positive"),
                     negative_column=cols(e, "negative"), domain=e.get("domain")) for e in inputs["nli"]]
    if not isinstance(params, MiningParams):
        params = MiningParams.from_dict(params or {})
    unsupervised = params.unsupervised_anchors
    return load_corpus(corpus, pairs, nli, unsupervised_anchors=unsupervised)


def load_encoder(model_path: str, config: RunConfig) -> Any:
    from simcse.model import SimCSEEncoder

    m = config.model
    return SimCSEEncoder.from_pretrained(model_path, pooling=m.pooling, mlp_only_train=m.mlp_only_train,
                                         max_length=m.max_length, trust_remote_code=m.trust_remote_code)


# --------------------------------------------------------------------------------------- evaluation
def read_eval_sets(inputs: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The prepared inputs' STS and labeled-pair files, read and checked (with their column maps)."""
    from dataio.tables import read_labeled_pairs, read_sts

    columns = inputs.get("eval_columns") or {}
    return ([read_sts(p, columns.get(p)) for p in inputs["sts"]],
            [read_labeled_pairs(p, columns.get(p)) for p in inputs["eval_pairs"]])


def evaluate_model(model_path: str, inputs: dict[str, Any], config: RunConfig, log: Any = _log) -> dict[str, Any]:
    """STS Spearman, pair AP, alignment and uniformity of one model on the run's evaluation files, and its dev
    metric: the evaluator's primary metric, `eval.dev_metric` (default: the first file's)."""
    from simcse.evaluation import SimCSEEvaluator, primary_score

    start = time.perf_counter()
    # The files are read before the model loads: a bad file (or a dev metric naming none) stops at once.
    evaluator = SimCSEEvaluator(*read_eval_sets(inputs), primary_metric=config.eval.dev_metric)
    result = evaluator(load_encoder(model_path, config))
    name = evaluator.primary_metric
    dev = {"name": name, "value": primary_score(evaluator, result)} if name else None
    return {"model": model_path, "evaluation": _jsonable(result), "dev_metric": _jsonable(dev),
            "seconds": time.perf_counter() - start}


def describe_evaluation(evaluated: dict[str, Any]) -> str:
    ev = evaluated.get("evaluation") or {}
    parts = [f"STS {k} {v:.2f}" for k, v in (ev.get("sts") or {}).items()]
    parts += [f"AP {k} {v:.2f}" for k, v in (ev.get("pairs") or {}).items()]
    for name in ("alignment", "uniformity"):
        if ev.get(name) is not None:
            parts.append(f"{name} {ev[name]:.3f}")
    return ", ".join(parts) or "no evaluation files"


def write_base_metrics(run: RunDir, evaluated: dict[str, Any]) -> None:
    write_json(run.base_metrics_path, {"round": "base", **{k: v for k, v in evaluated.items()
                                                            if k != "task_seconds"}})


# ------------------------------------------------------------------------------------------- mining
def mine_round(model_path: str, inputs: dict[str, Any], config: RunConfig, run: RunDir, round_: int,
               log: Any = _log) -> dict[str, Any]:
    """Mine every band of round `round_` with `model_path`; mining returns an existing complete round."""
    from mining.pipeline import mine

    start = time.perf_counter()
    corpus = load_mining_corpus(inputs, config.mining.params)
    encoder = load_encoder(model_path, config)
    # Progress bars only on a terminal: in a log file or a CI capture they are carriage-return noise.
    kwargs: dict[str, Any] = {"round": round_, "bands": config.mining.bands, "seed": config.seed,
                              "cache_dir": run.cache, "show_progress": sys.stderr.isatty(),
                              "params": config.mining.params}
    if inputs.get("exclude_pairs"):
        kwargs["exclude_pairs"] = inputs["exclude_pairs"]
    mine(corpus, encoder, run.triplets, **kwargs)
    summary = read_mined(run, round_)
    summary["seconds"] = time.perf_counter() - start
    log.info("round %d mined: %s", round_, ", ".join(
        f"{b} {s['rows']} rows (difficulty {_fmt(s.get('mean_anchor_negative_sim'))})"
        for b, s in summary["bands"].items()))
    return summary


def read_mined(run: RunDir, round_: int) -> dict[str, Any]:
    """The band statistics and files of a complete round, from its manifest (never from partial files)."""
    from dataio.triplets import read_manifest

    manifest = read_manifest(run.triplets, round_)
    return {"round": round_, "bands": {b: s.model_dump(mode="json") for b, s in manifest.bands.items()},
            "files": [f.model_dump(mode="json") for f in manifest.files],
            "rows": sum(f.rows for f in manifest.files), "difficulties": manifest.difficulties(),
            "manifest_sha256": file_fingerprint(run.manifest_path(round_))}


def mined_round_intact(run: RunDir, round_: int, log: Any = _log) -> bool:
    """The round's manifest exists and every file it lists is in place with its rows and sha256 (else the
    round is mined again: a Prefect cache hit never stands in for a missing or changed file)."""
    from dataio.triplets import is_complete, read_manifest, round_problem

    if not is_complete(run.triplets, round_):  # an old-layout round stops the run with the upgrade command
        return False
    try:
        problem = round_problem(run.triplets, read_manifest(run.triplets, round_), check_sha=True)
    except (OSError, TripletDataError) as err:
        problem = str(err)
    if problem is not None:
        log.warning("round %d: %s; mining it again", round_, problem)
    return problem is None


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


# ------------------------------------------------------------------------------------- curriculum
def _scheduler(config: RunConfig, run: RunDir, state: Any = None, persist: bool = True) -> Any:
    from curriculum import CurriculumScheduler

    if state is not None:
        return CurriculumScheduler(config.curriculum, state, state_path=run.state_path if persist else None)
    return CurriculumScheduler.resume(config.curriculum, run.state_path)


def schedule_round(config: RunConfig, run: RunDir, round_: int, log: Any = _log) -> dict[str, Any]:
    """Open round `round_` (idempotent for a round already open) and return its plan and start state."""
    from dataio.triplets import read_manifest

    manifest = read_manifest(run.triplets, round_)
    scheduler = _scheduler(config, run)
    if scheduler.state.round is None and not scheduler.state.round_open:
        scheduler.set_baseline(base_dev_metric(run))  # adaptive mode compares round 0 with the starting model
    state = scheduler.state
    if state.round is not None and state.round >= round_ and not state.round_open:
        # Closed already (a kill after state.json but before metrics.json): report the round's start.
        start = next((e for e in state.history if e.event == "start_round" and e.round == round_), None)
        if start is None:
            raise RuntimeError(f"{run.state_path}: round {round_} closed without a start entry")
        plan = {"round": round_, "stage": start.stage, "competence": start.competence,
                "mixture": dict(start.mixture), "alpha": dict(start.alpha)}
        return {"plan": plan, "state": None, "manifest_sha256": file_fingerprint(run.manifest_path(round_)),
                "closed": True}
    plan = scheduler.start_round(round_, manifest.difficulties())
    log.info("round %d plan: competence %.3f, mixture %s, alpha %s", round_, plan.competence,
             {b: round(p, 3) for b, p in plan.mixture.items()}, {b: round(a, 3) for b, a in plan.alpha.items()})
    return {"plan": {"round": round_, "stage": plan.stage, "competence": plan.competence,
                     "mixture": dict(plan.mixture), "alpha": dict(plan.alpha)},
            "state": json.loads(scheduler.state.to_json()),
            "manifest_sha256": file_fingerprint(run.manifest_path(round_)), "closed": False}


def base_dev_metric(run: RunDir) -> float | None:
    """The starting model's dev metric (base_metrics.json), if it was evaluated on a dev set."""
    base = run.read_base_metrics() or {}
    value = (base.get("dev_metric") or {}).get("value")
    return float(value) if value is not None else None


def round_batches(config: RunConfig, run: RunDir, round_: int, start_state: dict[str, Any]) -> tuple[list[dict], Any]:
    """The round's training batches, drawn from its triplets with the plan as the curriculum moves.

    Drawn on a scratch copy of the scheduler from the round's start state, so the sequence is the same
    every time it is asked for (the trainer skips what it already trained after a resume) and state.json
    is written once, when the round closes. Returns the batches and the scheduler state after them.
    """
    from curriculum import CurriculumState, TripletSampler

    state = CurriculumState.model_validate(copy.deepcopy(start_state))
    scratch = _scheduler(config, run, state=state, persist=False)
    sampler = TripletSampler(run.triplets, round_, batch_size=config.batch_size, seed=config.seed,
                             negatives_per_anchor=config.negatives_per_anchor, verify_checksums=True)
    batches: list[dict] = []
    plan = scratch.plan
    for _ in range(config.steps_per_round):
        batches.append(sampler.draw(plan))
        plan = scratch.after_batch(sampler.state_dict())
    return batches, scratch.state


# ------------------------------------------------------------------------------------------ training
def train_config(config: RunConfig, round_: int) -> Any:
    """simcse's TrainConfig for round `round_`: the run's `training:` section plus what the run decides.

    Steps, batch size and seed come from the run (a different dropout stream per round, reproducible);
    the learning rate follows one schedule over all the run's steps (warm-up once, then decay to 0 at the
    end of the last round), and the optimizer's state passes from round to round; a mid-round checkpoint
    every half round lets a killed round continue instead of starting over.
    """
    from simcse.train_config import TrainConfig

    settings = config.training.model_dump(exclude_unset=True)  # what the YAML set; the run fills in the rest
    settings.setdefault("seed", config.seed + round_)
    settings.setdefault("save_every", max(1, config.steps_per_round // 2))
    settings.setdefault("eval_every", 0)
    settings.setdefault("final_checkpoint", False)  # the round keeps its model and drops the train folder
    settings.update(max_steps=config.steps_per_round, batch_size=config.batch_size,
                    schedule_steps=config.rounds * config.steps_per_round,
                    schedule_offset=round_ * config.steps_per_round, save_optimizer=True)
    return TrainConfig(**settings)


def describe_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """What a round trained on: the bands its negatives came from, step by step, and a digest of its anchors
    and positives (equal for every arm with the same seed: paired sampling, checked by the experiment)."""
    names: list[str] = []
    per_step = []
    digest = hashlib.sha256()
    for batch in batches:
        counts: dict[str, int] = {}
        for band in batch.get("band") or []:
            for b in band if isinstance(band, list) else [band]:
                counts[b] = counts.get(b, 0) + 1
                if b not in names:
                    names.append(b)
        per_step.append(counts)
        digest.update(json.dumps([batch["anchor"], batch.get("positive")]).encode("utf-8"))
    return {"bands_per_step": {"bands": names, "counts": [[c.get(b, 0) for b in names] for c in per_step]},
            "anchors_sha256": digest.hexdigest()}


def with_word_deletion(batch: dict[str, Any], p: float, salt: str) -> dict[str, Any]:
    """Unsupervised rows (positive == anchor) get a word-deleted copy of the anchor as their positive."""
    from simcse.views import word_deletion

    positives = [word_deletion(a, p, salt) if pos == a else pos for a, pos in zip(batch["anchor"], batch["positive"])]
    return {**batch, "positive": positives}


def without_hard_negatives(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch for `negatives: in_batch`: anchors and positives only; unsupervised rows (positive == anchor)
    become plain unsupervised SimCSE (the trainer encodes the anchors twice under two dropout masks)."""
    anchors, positives = batch["anchor"], batch.get("positive")
    if positives is None or all(p == a for a, p in zip(anchors, positives)):
        return {"anchor": list(anchors)}
    return {"anchor": list(anchors), "positive": list(positives)}


def train_round(model_path: str, plan: dict[str, Any], config: RunConfig, run: RunDir, round_: int,
                log: Any = _log) -> dict[str, Any]:
    """Train `steps_per_round` steps from `model_path`; the model lands in `rounds/<r>/model/`.

    The trainer works in `rounds/<r>/train/` (its checkpoint makes a killed round continue where it
    stopped, with the same weights as an uninterrupted run); its final model folder is then moved into
    place in one rename, and the checkpoint is dropped.
    """
    from simcse.train import MODEL, OPTIMIZER, train

    start = time.perf_counter()
    result_path = run.round_dir(round_) / "train_result.json"
    if run.model_complete(round_) and result_path.is_file():
        shutil.rmtree(run.train_dir(round_), ignore_errors=True)
        return json.loads(result_path.read_text(encoding="utf-8"))
    if plan.get("state") is None:
        raise RuntimeError(f"round {round_} is closed but its model is missing: {run.model_dir(round_)}")
    optimizer_state = None
    if round_ > 0 and model_path == str(run.model_dir(round_ - 1)):  # the run continues: so does its optimizer
        optimizer_state = run.optimizer_dir(round_ - 1)
        if not optimizer_state.is_dir():
            raise InputError(f"the optimizer state of round {round_ - 1} is missing, so round {round_} cannot "
                             f"continue the run's schedule; delete rounds/{round_ - 1} to retrain that round",
                             path=optimizer_state)
    batches, _ = round_batches(config, run, round_, plan["state"])
    if config.positive_view == "word_deletion":
        batches = [with_word_deletion(b, config.word_deletion, f"{config.seed}/{round_}/{i}")
                   for i, b in enumerate(batches)]
    drawn = describe_batches(batches)
    if config.negatives == "in_batch":
        batches = [without_hard_negatives(b) for b in batches]
    encoder = load_encoder(model_path, config)
    from flows.model_cards import round_card

    result = train(encoder, batches, train_config(config, round_), run.train_dir(round_),
                   optimizer_state=optimizer_state, card=round_card(config, run, round_, plan.get("plan")))
    trained = run.train_dir(round_) / MODEL
    for src, dst in ((run.train_dir(round_) / OPTIMIZER, run.optimizer_dir(round_)), (trained, run.model_dir(round_))):
        if dst.exists():  # left by a kill between these renames and the result file
            shutil.rmtree(dst)
        os.replace(src, dst)  # the model last: its folder marks the round trained
    summary = _jsonable({"round": round_, "steps": result.steps, "mean_train_accuracy": result.train_accuracy,
                         "history": result.history, "triplets_per_s": result.triplets_per_s,
                         "resumed_from": result.resumed_from, "model": str(run.model_dir(round_)),
                         "seconds": time.perf_counter() - start, **drawn})
    write_json(result_path, summary)
    shutil.rmtree(run.train_dir(round_), ignore_errors=True)  # the checkpoint is only needed mid-round
    if round_ > 0:  # round r's optimizer state now carries the run on; r-1's is no longer needed
        shutil.rmtree(run.optimizer_dir(round_ - 1), ignore_errors=True)
    log.info("round %d trained: %d steps, train accuracy %s, %.1f s", round_, summary["steps"],
             _fmt(summary["mean_train_accuracy"]), summary["seconds"])
    return summary


# ------------------------------------------------------------------------------------- closing
def finish_round(config: RunConfig, run: RunDir, round_: int, mined: dict[str, Any], trained: dict[str, Any],
                 evaluated: dict[str, Any], log: Any = _log) -> dict[str, Any]:
    """Close the round in the curriculum (once), then write `rounds/<r>/metrics.json` (marks it done)."""
    from curriculum import CurriculumState

    state = CurriculumState.load(run.state_path)
    dev = evaluated.get("dev_metric") or {}
    if state.round == round_ and state.round_open:
        start = next(e for e in reversed(state.history) if e.event == "start_round" and e.round == round_)
        plan = {"stage": start.stage, "competence": start.competence, "mixture": dict(start.mixture),
                "alpha": dict(start.alpha)}
        _, after = round_batches(config, run, round_, json.loads(state.to_json()))
        scheduler = _scheduler(config, run, state=after, persist=False)
        decision = scheduler.end_round(dev.get("value"), trained.get("mean_train_accuracy"))
        scheduler.save(run.state_path)  # one atomic write closes the round
        verdict = {"advanced": decision.advanced, "reason": decision.reason, "stage_after": decision.stage,
                   "competence_after": decision.competence}
    else:
        start = next(e for e in reversed(state.history) if e.event == "start_round" and e.round == round_)
        end = next(e for e in reversed(state.history)
                   if e.round == round_ and e.event in ("advance", "hold", "end_round"))
        plan = {"stage": start.stage, "competence": start.competence, "mixture": dict(start.mixture),
                "alpha": dict(start.alpha)}
        verdict = {"advanced": end.event == "advance", "reason": end.reason, "stage_after": end.stage,
                   "competence_after": end.competence}
    metrics = _jsonable({
        "round": round_, "model": str(run.model_dir(round_)), "model_sha256": run.model_sha256(round_),
        "evaluation": evaluated.get("evaluation"), "dev_metric": evaluated.get("dev_metric"),
        "train": {k: trained.get(k) for k in ("steps", "mean_train_accuracy", "seconds")},
        "mining": {"bands": mined.get("bands"), "rows": mined.get("rows"), "seconds": mined.get("seconds")},
        "curriculum": {**plan, "decision": verdict["reason"], **verdict},
        "seconds": {"mine": mined.get("seconds"), "train": trained.get("seconds"),
                    "evaluate": evaluated.get("seconds")},
    })
    from flows.model_cards import write_round_card

    write_round_card(config, run, round_, metrics)  # before metrics.json, which marks the round complete
    write_json(run.metrics_path(round_), metrics)
    log.info("round %d closed: %s", round_, verdict["reason"])
    return metrics


def clean_partial_writes(run: RunDir) -> None:
    """Drop leftovers of a killed write in the folders this package writes (rounds/, plots/)."""
    removed = remove_stale_temporaries(run.root / "rounds") + remove_stale_temporaries(run.plots)
    if removed:
        _log.info("removed %d temporary files left by an interrupted run", removed)


def select_model(run: RunDir, config: RunConfig) -> dict[str, Any] | None:
    """The run's result: its best model by the dev metric, the starting model included; `selection.json`.

    A run whose rounds all scored below the model it started from says so and names the starting model:
    the team's data did not improve it, and the model to keep is the one they had."""
    base = run.read_base_metrics()
    if not base or not base.get("dev_metric"):
        return None
    name = base["dev_metric"]["name"]
    candidates = [{"round": "base", "model": base.get("model"), "dev": base["dev_metric"]["value"]}]
    for r in run.completed_rounds():
        metrics = run.read_metrics(r)
        value = (metrics.get("dev_metric") or {}).get("value")
        if value is not None:
            candidates.append({"round": r, "model": metrics.get("model"), "dev": value})
    margin = config.eval.min_improvement
    best_round = max(candidates[1:], key=lambda c: (c["dev"], c["round"]), default=None)
    improved = best_round is not None and best_round["dev"] > candidates[0]["dev"] + margin
    best = best_round if improved else candidates[0]
    by = f" by more than {margin:g} (eval.min_improvement)" if margin else ""
    if improved:
        note = (f"round {best['round']} has the best {name} ({best['dev']:.2f}, starting model "
                f"{candidates[0]['dev']:.2f}): use {best['model']}")
    else:
        best_dev = best_round["dev"] if best_round else float("nan")
        note = (f"no round beat the starting model on {name}{by} (best round {best_dev:.2f}, starting model "
                f"{candidates[0]['dev']:.2f}): this data did not improve it; keep the starting model {best['model']}")
    selection = {"dev_metric": name, "selected_round": best["round"], "model_to_use": best["model"],
                 "dev": best["dev"], "improved": improved, "min_improvement": margin, "note": note,
                 "candidates": candidates}
    write_json(run.root / "selection.json", _jsonable(selection))
    return selection


def summarize(run: RunDir, config: RunConfig) -> dict[str, Any]:
    done = run.completed_rounds()
    selection = select_model(run, config)
    return {"run_dir": str(run.root), "rounds_completed": done, "rounds": config.rounds,
            "base": run.read_base_metrics(), "last": run.read_metrics(done[-1]) if done else None,
            "model_to_use": (selection or {}).get("model_to_use"), "selection": selection}


def write_timings(run: RunDir, timings: list[dict[str, Any]]) -> None:
    """Per-round wall time vs time in task bodies (Prefect's overhead), merged over resumed invocations."""
    if not timings:
        return
    path = run.root / "timings.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    by_round = {t["round"]: t for t in previous}
    by_round.update({t["round"]: t for t in timings})
    write_json(path, [by_round[r] for r in sorted(by_round)])


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays become floats and lists; NaN becomes None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if hasattr(obj, "model_dump"):
        return _jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
