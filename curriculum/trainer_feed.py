"""The curriculum inside a Hugging Face trainer: `CurriculumFeed` turns mined rounds into the training rows of
sentence-transformers' `SentenceTransformerTrainer`, each batch's bands chosen by the scheduler's plan.

How a team uses it (docs/sentence_transformers.md runs the whole example in the test suite):

    feed = CurriculumFeed("triplets", {"pacing": "root", "unit": "step"}, rounds=3, steps_per_round=100,
                          batch_size=64, mine=mine_round, evaluate=dev_score)
    args = SentenceTransformerTrainingArguments(..., max_steps=feed.max_steps, per_device_train_batch_size=64)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=feed.dataset(), loss=...,
                                         callbacks=[simcse.st_trainer.CurriculumCallback(feed)])

- `dataset()` is a `datasets.IterableDataset` of the columns anchor, positive, negative (`TRAINER_COLUMNS`, the
  order sentence-transformers' losses read them). One pass over it is one round: `steps_per_round` batches of
  `batch_size` rows, each batch one `TripletSampler.draw` under the plan for that step, so the trainer's
  DataLoader (which batches consecutive rows) trains exactly the drawn batches. The trainer sees the end of
  a pass as the end of an epoch: a round is an epoch.
- The trainer asks for batches before it trains them (accelerate reads one batch ahead), so batches are drawn
  with a scratch copy of the scheduler from the round's start state, as the flows do (`flows.rounds.train_step`),
  and the sampler's position after each one is kept; the real scheduler moves only when a step is trained
  (`step_trained`, with that step's position), so its state file always says what was trained.
- Between rounds (`round_trained`, at the epoch's end) the round is closed with the dev metric (`evaluate`)
  and a train accuracy measured on the round's last batches, and the next round is mined with the model as
  it is then, when a `mine` function is given (`prepare` does the same for the first round).

The hooks take the model as an object with sentence-transformers' `encode(texts)` shape; nothing here imports
torch or transformers (`simcse.st_trainer.CurriculumCallback` is the `TrainerCallback` that calls them).
Limits: one process, `dataloader_num_workers=0` and no gradient accumulation (the callback checks them), one
negative per row, and the plan's α is not applied (sentence-transformers' losses weigh every negative alike;
α stays in the state's history). A trainer checkpoint is not resumed mid-round: the state file resumes at a
round's start (a run killed mid-round trains that round again).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.config import CurriculumConfig, parse_config
from curriculum.errors import StateError
from curriculum.sampler import TripletSampler
from curriculum.scheduler import CurriculumScheduler, Decision
from curriculum.state import CurriculumState
from dataio.triplets import TRAINER_COLUMNS, is_complete, read_manifest

ACCURACY_BATCHES = 4  # the round's last batches its train accuracy is measured on


@dataclass
class DrawnBatch:
    """What one step trains on: the round, the step within it, the plan's mixture, the bands drawn, and how
    many rows took a band outside the mixture because their anchor has no row in any band of it (`fallbacks`,
    docs/curriculum.md#the-sampler)."""

    round: int
    step: int
    mixture: dict[str, float]
    bands: Counter = field(default_factory=Counter)
    fallbacks: int = 0


class CurriculumFeed:
    """Training rows for sentence-transformers' trainer, drawn round by round by the curriculum's plan.

    `triplets`: the triplets root (`round=<r>/band=<b>/...`); `config`: the `curriculum:` settings (a mapping
    or a `CurriculumConfig`; `total: auto` is resolved for `rounds` x `steps_per_round`); `state_path`: where
    the scheduler saves its state after every change (optional); `mine(model, round)`: writes round `round`
    into `triplets` (called before each round, with the model as it is then; it may do nothing when the round
    is there); `evaluate(model)`: the dev metric that closes a round (adaptive mode needs it).
    """

    def __init__(self, triplets: str | Path, config: CurriculumConfig | Mapping[str, Any] | None = None, *,
                 rounds: int, steps_per_round: int, batch_size: int, seed: int = 0,
                 state_path: str | Path | None = None, mine: Callable[[Any, int], Any] | None = None,
                 evaluate: Callable[[Any], float] | None = None, verify_checksums: bool = True) -> None:
        for name, value in (("rounds", rounds), ("steps_per_round", steps_per_round), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.triplets = Path(triplets)
        self.rounds, self.steps_per_round = int(rounds), int(steps_per_round)
        self.batch_size, self.seed = int(batch_size), int(seed)
        if not isinstance(config, CurriculumConfig):
            config = parse_config(config)
        self.config = config.resolved(self.rounds, self.steps_per_round, self.seed)
        if self.config.mode == "adaptive" and evaluate is None:
            raise ValueError("adaptive mode closes each round on the dev metric: give evaluate=model -> float")
        self.scheduler = (CurriculumScheduler.resume(self.config, state_path) if state_path is not None
                          else CurriculumScheduler(self.config))
        self.mine, self.evaluate, self.verify_checksums = mine, evaluate, verify_checksums
        self.decisions: list[Decision] = []
        self.drawn: list[DrawnBatch] = []  # every batch handed to the trainer, all rounds
        self._round: int | None = None
        self._sampler: TripletSampler | None = None
        self._start: tuple[CurriculumState, dict[str, Any]] | None = None  # the round's start state, sampler's
        self._positions: list[dict[str, Any]] = []  # the sampler's position after each drawn batch of the round
        self._recent: list[dict[str, list[str]]] = []  # the round's last batches (train accuracy)

    # ------------------------------------------------------------------------------------- queries
    @property
    def next_round(self) -> int | None:
        """The round to train now: the open one, else the one after the last closed (None: all done)."""
        s = self.scheduler.state
        r = 0 if s.round is None else (s.round if s.round_open else s.round + 1)
        return r if r < self.rounds else None

    @property
    def max_steps(self) -> int:
        """The trainer's `max_steps`: every round still to train, `steps_per_round` each."""
        r = self.next_round
        return 0 if r is None else (self.rounds - r) * self.steps_per_round

    def dataset(self) -> Any:
        """A `datasets.IterableDataset` of `TRAINER_COLUMNS` (strings); one pass over it is the current round."""
        import datasets

        features = datasets.Features({c: datasets.Value("string") for c in TRAINER_COLUMNS})
        return datasets.IterableDataset.from_generator(self._rows, features=features)

    # --------------------------------------------------------------------------------------- hooks
    def prepare(self, model: Any = None) -> None:
        """Before training: mine the first round to train (with `mine`) and open it.

        A state file whose open round already trained some steps is refused: the trainer would start that
        round from its first batch while the curriculum continues from the middle."""
        s = self.scheduler.state
        if s.round_open and s.round_steps > 0:
            raise StateError(f"round {s.round} stopped after {s.round_steps} of its steps; a trainer checkpoint does "
                             f"not resume a round here: restore the state file saved before round {s.round} "
                             f"started, or start a new state file")
        if self.next_round is None:
            raise StateError(f"every one of the {self.rounds} rounds is done already (the state file says round "
                             f"{s.round} was the last); start a new state file or raise rounds")
        self._open(self.next_round, model)

    def step_trained(self) -> None:
        """One step trained (the trainer's `on_step_end`): the scheduler moves to the position after it."""
        s = self.scheduler.state
        if not s.round_open or s.round != self._round:
            raise StateError("a step was trained outside an open round; call prepare() before training")
        if s.round_steps >= len(self._positions):
            raise StateError(f"round {s.round}: a step was trained that was never drawn (round_steps "
                             f"{s.round_steps}); give the trainer feed.dataset() with per_device_train_batch_size "
                             f"{self.batch_size}")
        self.scheduler.after_batch(self._positions[s.round_steps])

    def round_trained(self, model: Any = None) -> Decision | None:
        """The round's pass is over (the trainer's `on_epoch_end`): close the round with the dev metric and
        the train accuracy, then mine and open the next one. None when no round was open."""
        s = self.scheduler.state
        if not s.round_open:
            return None
        dev = float(self.evaluate(model)) if self.evaluate is not None and model is not None else None
        accuracy = train_accuracy(model, self._recent) if model is not None and self._recent else None
        decision = self.scheduler.end_round(dev_metric=dev, train_accuracy=accuracy)
        self.decisions.append(decision)
        if self.next_round is not None:
            self._open(self.next_round, model)
        return decision

    # ------------------------------------------------------------------------------------ internals
    def _open(self, round_: int, model: Any) -> None:
        if self.mine is not None and not (self.scheduler.state.round_open and self.scheduler.state.round == round_):
            self.mine(model, round_)
        if not is_complete(self.triplets, round_):
            raise StateError(f"{self.triplets}: round {round_} is not mined (no round={round_}/.manifest.json); "
                             f"mine it first or give mine=")
        self.scheduler.start_round(round_, read_manifest(self.triplets, round_).difficulties())
        self._sampler = TripletSampler(self.triplets, round_, batch_size=self.batch_size, seed=self.seed,
                                       verify_checksums=self.verify_checksums)
        self._start = (self.scheduler.state.model_copy(deep=True), self._sampler.state_dict())
        self._round, self._positions, self._recent = round_, [], []

    def _rows(self) -> Iterator[dict[str, str]]:
        """One pass: the open round's batches, row by row, each batch drawn under its step's plan."""
        if self._start is None or self._sampler is None:
            raise StateError("the feed has no open round: the trainer needs CurriculumCallback(feed) among its "
                             "callbacks (or call feed.prepare() first)")
        state, position = self._start
        scratch = CurriculumScheduler(self.config, state=copy.deepcopy(state))
        sampler = self._sampler
        sampler.load_state_dict(position)
        plan = scratch.plan
        drawn_before = len(self._positions)
        for step in range(self.steps_per_round):
            fallbacks = sampler.fallbacks
            batch = sampler.draw(plan)
            after = sampler.state_dict()
            if step < drawn_before:  # a second pass over the same round (nothing trained it yet): the same rows
                self._positions[step] = after
            else:
                self._positions.append(after)
                self.drawn.append(DrawnBatch(self._round, step, dict(plan.mixture), Counter(batch["band"]),
                                             sampler.fallbacks - fallbacks))
            texts = {c: list(batch[c]) for c in TRAINER_COLUMNS}
            self._recent = (self._recent + [texts])[-ACCURACY_BATCHES:]
            for anchor, positive, negative in zip(*(texts[c] for c in TRAINER_COLUMNS)):
                yield {"anchor": anchor, "positive": positive, "negative": negative}
            plan = scratch.after_batch(after)


def train_accuracy(model: Any, batches: list[dict[str, list[str]]]) -> float | None:
    """The share of rows whose positive the model ranks first among the batch's positives and negatives
    (cosine; the in-batch task sentence-transformers' MultipleNegativesRankingLoss trains), over `batches`."""
    correct = total = 0
    for batch in batches:
        n = len(batch["anchor"])
        if n == 0:
            continue
        vectors = np.asarray(model.encode(batch["anchor"] + batch["positive"] + batch["negative"]), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        anchors, candidates = vectors[:n], vectors[n:]
        scores = anchors @ candidates.T
        correct += int((scores.argmax(axis=1) == np.arange(n)).sum())
        total += n
    return correct / total if total else None
