"""What a run will cost on this machine, before it runs: `simcse-curriculum run CONFIG --dry-run`.

Counted from the checked inputs (`flows.rounds.validate.RunCheck`): the sentences each round encodes (the whole
pool for mining, the evaluation sentences), the training steps and their rows. Timed by a short
calibration with the configured base model on this machine's device: a few hundred of the run's own
sentences encoded, three training steps at the run's batch size (the first, warm-up step not counted) in a
temporary folder that is deleted. Disk from the saved model's size, the optimizer's state, the embeddings
cache (float16) and the triplets (their text, uncompressed: an upper bound). It is an estimate: the kNN
search, Prefect's start-up and other load on the machine are not in it.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flows.rounds.train_step import train_config
from flows.run.config import RunConfig
from flows.run.inputs import base_model_path, encoder_settings, eval_inputs, open_encoder, read_eval_sets

CALIBRATION_SENTENCES = 256
CALIBRATION_STEPS = 3  # the first is a warm-up: its time is not counted
TRIPLET_ROW_OVERHEAD = 80  # bytes per Parquet row besides the three texts: ids, band, similarities, rank, round


@dataclass(frozen=True)
class Calibration:
    device: str
    sentences: int
    encode_per_s: float
    steps: int
    seconds_per_step: float
    load_seconds: float  # loading the model once
    save_seconds: float  # training's set-up and saving the model, once per round
    model_bytes: int  # the saved model folder
    parameter_bytes: int  # trainable parameters (fp32): the optimizer keeps two moments of each
    dim: int
    seconds: float  # the calibration itself


@dataclass(frozen=True)
class Estimate:
    rounds: int
    steps_per_round: int
    batch_size: int
    pool_sentences: int  # encoded by mining every round
    eval_sentences: int  # encoded by each evaluation (base model, then every round)
    sentences_per_step: int
    seconds: dict[str, float]
    disk_bytes: dict[str, int]
    calibration: Calibration

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        c = self.calibration
        per_round = self.pool_sentences + self.eval_sentences
        s, d = self.seconds, self.disk_bytes
        head = (f"estimate (an estimate: calibrated on this machine's {c.device} in {c.seconds:.0f} s, encoding "
                f"{c.sentences} of the run's sentences at {c.encode_per_s:.0f}/s and timing {c.steps - 1} training "
                f"steps at {c.seconds_per_step:.2f} s/step):")
        work = (f"  per round: encode {per_round:,} sentences ({self.pool_sentences:,} pool sentences to mine, "
                f"{self.eval_sentences:,} to evaluate); train {self.steps_per_round} steps of {self.batch_size} rows "
                f"({self.sentences_per_step} sentences a step)")
        whole = (f"  whole run: {self.rounds} rounds, {self.rounds * self.steps_per_round:,} steps, "
                 f"{self.rounds * per_round + self.eval_sentences:,} sentences encoded (the base model is evaluated "
                 f"too)")
        time_ = (f"  time: ~{_duration(s['total'])} (mining {_duration(s['mine'])}, training {_duration(s['train'])}, "
                 f"evaluation {_duration(s['evaluate'])}, loading and saving models {_duration(s['models'])}); "
                 f"not counted: the kNN search, Prefect's start-up")
        disk = (f"  disk: ~{_size(d['total'])} at most (models {self.rounds} x {_size(c.model_bytes)}, optimizer "
                f"state {_size(d['optimizer'])}, mid-round checkpoint {_size(d['checkpoint'])}, embeddings cache "
                f"{_size(d['embeddings'])}, triplets <= {_size(d['triplets'])})")
        return [head, work, whole, time_, disk]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def calibration_texts(check: Any, n: int = CALIBRATION_SENTENCES, seed: int = 0) -> list[str]:
    """Up to `n` of the run's own sentences (its pool, else its evaluation files), else generic ones."""
    texts: list[str] = list(check.corpus.texts) if check.corpus is not None else []
    if not texts:
        sts, pairs = read_eval_sets(_eval_inputs(check.config))
        texts = list(dict.fromkeys(s for d in [*sts, *pairs] for s in (*d.sentence1, *d.sentence2)))
    if len(texts) < 8:  # the built-in corpus is built at run time: sentences of docstring length
        texts = [f"Return the value of setting number {i} for the given key, or the default." for i in range(n)]
    rng = random.Random(seed)
    return rng.sample(texts, n) if len(texts) > n else texts


def _eval_inputs(config: RunConfig) -> dict[str, Any]:
    sts, pairs, columns = eval_inputs(config)
    return {"sts": sts, "eval_pairs": pairs, "eval_columns": columns}


def calibrate(config: RunConfig, texts: list[str]) -> Calibration:
    """Time the configured model here: load, encode `texts`, train a few steps at the run's batch size (in a
    temporary folder, deleted)."""
    from simcse.train import train  # torch: only when a model is loaded or trained

    start = time.perf_counter()
    settings = encoder_settings(config)  # opened, not held: the calibration times a load and trains its copy
    open_encoder(base_model_path(config), **settings)  # the first load also imports the libraries
    t = time.perf_counter()
    encoder = open_encoder(base_model_path(config), **settings)
    load_seconds = time.perf_counter() - t
    encoder.encode(texts[:16])  # warm-up (first-call allocations) not counted
    t = time.perf_counter()
    vectors = encoder.encode(texts)
    encode_per_s = len(texts) / max(time.perf_counter() - t, 1e-9)
    parameter_bytes = sum(p.numel() * 4 for p in encoder.parameters() if p.requires_grad)

    rng = random.Random(config.seed)
    batches = []
    for _ in range(CALIBRATION_STEPS):
        anchors = [rng.choice(texts) for _ in range(config.batch_size)]
        batch: dict[str, Any] = {"anchor": anchors, "positive": list(anchors)}
        if config.negatives == "hard":
            batch["negative"] = [[rng.choice(texts) for _ in range(config.negatives_per_anchor)] for _ in anchors]
        batches.append(batch)
    settings = train_config(config, 0).model_dump()
    settings.update(max_steps=CALIBRATION_STEPS, schedule_steps=None, schedule_offset=0, save_every=0, eval_every=0,
                    final_checkpoint=False, save_optimizer=False, progress=False, log_every=1)
    from simcse.train import TrainConfig  # torch: only when a model is loaded or trained

    with tempfile.TemporaryDirectory(prefix="simcse-calibration-") as tmp:
        encoder.save(Path(tmp) / "warm-up")  # the first save imports the model-card machinery: once per run
        t = time.perf_counter()
        result = train(encoder, batches, TrainConfig(**settings), Path(tmp))
        train_seconds = time.perf_counter() - t
        model_bytes = _folder_bytes(Path(result.model_path))
    rows_per_s = result.triplets_per_s or (config.batch_size * CALIBRATION_STEPS / train_seconds)
    seconds_per_step = config.batch_size / rows_per_s
    device = str(getattr(encoder, "device", "cpu"))
    return Calibration(device=device, sentences=len(texts), encode_per_s=encode_per_s, steps=CALIBRATION_STEPS,
                       seconds_per_step=seconds_per_step, load_seconds=load_seconds,
                       save_seconds=max(0.0, train_seconds - CALIBRATION_STEPS * seconds_per_step),
                       model_bytes=model_bytes, parameter_bytes=parameter_bytes, dim=int(vectors.shape[1]),
                       seconds=time.perf_counter() - start)


def estimate_run(check: Any, calibration: Calibration | None = None) -> Estimate:
    """The run's cost from its checked inputs (`flows.rounds.validate.check_run`) and a calibration (made here if
    none is given)."""
    config: RunConfig = check.config
    texts = calibration_texts(check, seed=config.seed)
    cal = calibration or calibrate(config, texts)
    if check.corpus is not None:
        pool, anchors = len(check.corpus.texts), check.corpus.n_anchor_rows
        mean_bytes = sum(len(t.encode("utf-8")) for t in texts) / max(1, len(texts))
    else:  # the built-in corpus: about builtin_max_sentences docstring sentences, each an anchor
        pool = anchors = config.data.builtin_max_sentences
        mean_bytes = 80.0
    eval_sentences = check.eval_sentences
    rounds, spr = config.rounds, config.steps_per_round
    per_row = 2 + (config.negatives_per_anchor if config.negatives == "hard" else 0)
    seconds = {
        "mine": rounds * pool / cal.encode_per_s,
        "train": rounds * spr * cal.seconds_per_step,
        "evaluate": (rounds + 1) * eval_sentences / cal.encode_per_s,
        # mining, training and evaluation each load the round's model; the base model is evaluated once more
        "models": (3 * rounds + 1) * cal.load_seconds + rounds * cal.save_seconds,
    }
    seconds["total"] = sum(seconds.values())
    optimizer = 2 * cal.parameter_bytes
    disk = {
        "models": rounds * cal.model_bytes,
        "optimizer": optimizer,
        "checkpoint": cal.model_bytes + optimizer,
        "embeddings": rounds * pool * cal.dim * 2,
        "triplets": int(rounds * len(check.bands) * anchors * (3 * mean_bytes + TRIPLET_ROW_OVERHEAD)),
    }
    disk["total"] = sum(disk.values())
    return Estimate(rounds=rounds, steps_per_round=spr, batch_size=config.batch_size, pool_sentences=pool,
                    eval_sentences=eval_sentences, sentences_per_step=config.batch_size * per_row,
                    seconds=seconds, disk_bytes=disk, calibration=cal)
