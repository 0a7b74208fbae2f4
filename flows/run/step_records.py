"""What one step of a round hands the next: small frozen records instead of dicts.

    prepare  -> RunInputs         the input files (paths, column maps) and their content fingerprints
    evaluate -> Evaluation        the model's scores, its dev metric, what each score was measured on
    mine     -> MinedRound        the round's bands, files, rows and difficulties, its manifest's hash
    schedule -> RoundPlan         the mixture and alpha (`PlanSpec`), the scheduler's state the batches start from
    train    -> TrainedRound      steps, accuracy, the bands each step drew, where the batches left the scheduler

Pydantic models, so a Prefect task's result persisted as JSON (`flows.orchestration.tasks`) reads back as the
record it was (Prefect's JSON serializer names the class), and a record written to a file (`train_result.json`,
`base_metrics.json`) is its `model_dump`. No field is required that an older file lacks. `task_seconds` is
the time inside a Prefect task body, set by the task wrapper (`with_task_seconds`); the loop subtracts it from
the round's wall time to measure orchestration overhead.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StepRecord(BaseModel):
    """What every step's record carries: the step's own time and, run as a Prefect task, the task body's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seconds: float | None = None
    task_seconds: float = 0.0

    def with_task_seconds(self, seconds: float) -> StepRecord:
        return self.model_copy(update={"task_seconds": seconds})

    def as_file(self) -> dict[str, Any]:
        """The record as its JSON file holds it (the task's time is not the step's: left out)."""
        return self.model_dump(mode="json", exclude={"task_seconds"})


class RunInputs(StepRecord):
    """The run's input files as plain JSON, with their content fingerprints (`flows.run.inputs.prepare_inputs`):
    training files as `{"path", "columns", "domain"}` entries, one per file (a folder's files in sorted order),
    evaluation files as paths with their column maps."""

    corpus: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    nli: list[dict[str, Any]] = []
    sts: list[str] = []
    eval_pairs: list[str] = []
    eval_columns: dict[str, Any] = {}  # evaluation file -> its column map, where one was given
    exclude_pairs: str | None = None
    fingerprint: str  # the training files' bytes, columns and domains, and the excluded pairs: the mine step's key
    eval_fingerprint: str  # the evaluation files' bytes and column maps: the evaluate step's key


class Evaluation(StepRecord):
    """A model's scores on the run's evaluation files (`flows.run.inputs.evaluate_model`)."""

    model: str
    evaluation: dict[str, Any]
    dev_metric: dict[str, Any] | None = None  # {"name", "value"}: the evaluator's primary metric
    eval_keys: dict[str, str] = {}  # metric name -> fingerprint of the file, columns and settings it was measured on


class MinedRound(StepRecord):
    """A mined round as the later steps take it (`flows.rounds.mine_step`), from the manifest mining wrote."""

    round: int
    bands: dict[str, dict[str, Any]]
    files: list[dict[str, Any]]
    rows: int
    difficulties: dict[str, float | None]
    manifest_sha256: str


class PlanSpec(BaseModel):
    """The round's plan: the curriculum's stage and competence, the band mixture and each band's alpha."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round: int | None = None
    stage: int
    competence: float
    mixture: dict[str, float]
    alpha: dict[str, float]


class RoundPlan(StepRecord):
    """The schedule step's result (`flows.rounds.schedule_step`): the plan, and the scheduler state its batches
    start from (None when the round was closed already: nothing is drawn again)."""

    plan: PlanSpec
    state: dict[str, Any] | None
    manifest_sha256: str
    closed: bool = False


class TrainedRound(StepRecord):
    """A trained round (`flows.rounds.train_step`; also `rounds/<r>/train_result.json`)."""

    round: int
    steps: int
    mean_train_accuracy: float | None = None
    history: list[dict[str, Any]] = []
    triplets_per_s: float | None = None
    resumed_from: int = 0
    model: str | None = None
    # The bands each step drew, and digests of the batches' anchors (with their positives, and alone): what a run
    # trained on, so two runs can be checked to have seen the same data in the same order (paired experiments).
    bands_per_step: dict[str, Any] | None = None
    anchors_sha256: str | None = None
    anchor_order_sha256: str | None = None
    # Where the batches left the curriculum: the round closes from it, drawing nothing again (None: older files).
    scheduler_after: dict[str, Any] | None = None
