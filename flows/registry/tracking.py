"""A run in MLflow: its config as params, metrics per round and per training log window, the report and plots
as artifacts, tagged with the Prefect flow run and the input fingerprints, so runs compare side by side in
MLflow's UI (`mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db --host 127.0.0.1`) or a team's
server.

Steps: the evaluation metrics (`sts/<stem>`, `pairs/<stem>`, `alignment`, `uniformity`, the curriculum's
competence, mixture and alpha per band, band difficulty and rows) are logged at step = rounds completed, so
step 0 is the model the run starts from; the trainer's log windows (`train/loss`, `train/accuracy`,
`train/lr`) at step = optimizer steps over the whole run.

The MLflow run's id is kept in `<run>/tracking.json` with what was logged, so a resumed run continues the
same MLflow run and logs each round once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flows.registry.mlflow_store import MlflowStore, store_for
from flows.run.rundir import RunDir, write_json
from flows.run.step_records import Evaluation, RunInputs
from simcse.evaluation import flat_metrics

TRACKING_FILE = "tracking.json"
_log = logging.getLogger("flows")


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = json.dumps(value) if not isinstance(value, str) else value
    return {prefix: text[:6000]}


class RunTracker:
    """Logs one run folder to one MLflow run (created on first use, found again in tracking.json)."""

    def __init__(self, store: MlflowStore, experiment: str, run: RunDir,
                 context_tags: dict[str, str] | None = None) -> None:
        self.store = store
        self.experiment = experiment
        self.run = run
        self.context_tags = dict(context_tags or {})  # the orchestrator's ids (flows.orchestration.curriculum_flow)
        self.path = run.root / TRACKING_FILE
        self.state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self._found = False  # the MLflow run tracking.json names was found in the store (asked once)

    @property
    def client(self) -> Any:
        return self.store.client()

    @property
    def run_id(self) -> str:
        if self.state.get("run_id") and self.state.get("store") == self.store.location and not self._found:
            self._found = self._recorded_run_exists()
            if not self._found:
                _log.warning("%s: MLflow run %s, which this run logged to, is not in %s (a store moved aside or "
                             "restored from an older backup); logging the run again, to a new MLflow run",
                             self.path, self.state["run_id"], self.store.location)
                self.state = {}
        if not self.state.get("run_id") or self.state.get("store") != self.store.location:
            experiment = self.store.experiment_id(self.experiment)
            run = self.client.create_run(experiment, run_name=self.run.root.name,
                                         tags={"simcse.run_dir": str(self.run.root)})
            self.state = {"store": self.store.location, "experiment": self.experiment, "run_id": run.info.run_id,
                          "logged": []}
            self._save()
        return self.state["run_id"]

    def _recorded_run_exists(self) -> bool:
        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.state["run_id"])
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise  # a server that does not answer is not a store without the run
        return True

    def _save(self) -> None:
        write_json(self.path, self.state)

    def _once(self, what: str) -> bool:
        """True the first time `what` is asked about for this MLflow run (then recorded as logged)."""
        if what in self.state.get("logged", []):
            return False
        self.state.setdefault("logged", []).append(what)
        return True

    def _batch(self, metrics: dict[str, float] | None = None, step: int = 0, params: dict[str, str] | None = None,
               tags: dict[str, str] | None = None) -> None:

        # MLflow: only when a store is used (the optional `tracking` extra)
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        p = [Param(k, v) for k, v in (params or {}).items()]
        t = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i in range(0, max(len(m), len(p), len(t)), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, metrics=m[i:i + 100], params=p[i:i + 100], tags=t[i:i + 100])

    def log(self, metrics: dict[str, float | None] | None = None, tags: dict[str, str] | None = None,
            step: int = 0) -> None:
        """Metrics (None values left out) at `step`, and tags, in one batch."""
        self._batch(metrics={k: v for k, v in (metrics or {}).items() if v is not None}, step=step, tags=tags)

    def start(self, config: Any, extra_tags: dict[str, str] | None = None) -> str:
        """Open (or reopen) the MLflow run; log the config as params once."""
        run_id = self.run_id
        self.client.update_run(run_id, status="RUNNING")
        tags = {"simcse.config_fingerprint": config.fingerprint(), **self.context_tags, **(extra_tags or {})}
        if self._once("params"):
            params = _flatten(config.model_dump(mode="json"))
            self._batch(params=params, tags=tags)
            self._save()
        else:
            self._batch(tags=tags)
        return run_id

    def log_inputs(self, inputs: RunInputs) -> None:
        self._batch(tags={"simcse.inputs_fingerprint": inputs.fingerprint,
                          "simcse.eval_fingerprint": inputs.eval_fingerprint,
                          "simcse.input_files": json.dumps([e["path"] for e in inputs.corpus + inputs.pairs +
                                                            inputs.nli])[:8000]})

    def log_base(self, evaluated: Evaluation) -> None:
        if self._once("base"):
            self._batch(metrics=flat_metrics(evaluated.evaluation), step=0)
            self._save()

    def log_round(self, r: int, metrics: dict[str, Any], steps_per_round: int) -> None:
        """Round r's evaluation, curriculum and mining at step r + 1; its trainer's log windows by global step."""
        if not self._once(f"round-{r}"):
            return
        values = flat_metrics(metrics.get("evaluation"))
        train = metrics.get("train") or {}
        cur = metrics.get("curriculum") or {}
        values["train_accuracy"] = train.get("mean_train_accuracy")
        values["competence"] = cur.get("competence")
        for band, share in (cur.get("mixture") or {}).items():
            values[f"mixture/{band}"] = share
        for band, alpha in (cur.get("alpha") or {}).items():
            values[f"alpha/{band}"] = alpha
        for band, stats in ((metrics.get("mining") or {}).get("bands") or {}).items():
            values[f"rows/{band}"] = stats.get("rows")
            values[f"difficulty/{band}"] = stats.get("mean_anchor_negative_sim")
        for what, seconds in (metrics.get("seconds") or {}).items():
            values[f"seconds/{what}"] = seconds
        self._batch(metrics={k: v for k, v in values.items() if isinstance(v, (int, float))}, step=r + 1)
        result_path = self.run.round_dir(r) / "train_result.json"
        if result_path.is_file():
            history = json.loads(result_path.read_text(encoding="utf-8")).get("history") or []
            for record in history:
                step = r * steps_per_round + int(record["step"])
                self._batch(metrics={f"train/{k}": record.get(k) for k in ("loss", "accuracy", "lr")
                                     if isinstance(record.get(k), (int, float))}, step=step)
        self._save()

    def log_files(self) -> None:
        """The report, plots and the run's small JSON records (overwritten each time: the latest stands)."""
        for path in (self.run.report_path, self.run.base_metrics_path, self.run.root / "selection.json",
                     self.run.root / "timings.json", self.run.config_path):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if self.run.plots.is_dir():
            self.client.log_artifacts(self.run_id, str(self.run.plots), "plots")

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def tracker_for(config: Any, run: RunDir, context_tags: dict[str, str] | None = None) -> RunTracker | None:
    """The run's tracker when `tracking.enabled`, else None; `context_tags` are set on the MLflow run when it starts."""
    store = store_for(config)
    if store is None:
        return None
    return RunTracker(store, config.tracking.experiment, run, context_tags)


def round_hooks(tracker: RunTracker | None, config: Any) -> dict[str, Any]:
    """`RoundSteps` hooks (flows.rounds.loop) that log to `tracker`; none when it is None."""
    if tracker is None:
        return {}

    def on_start(inputs: RunInputs, base: Evaluation) -> None:
        tracker.start(config)
        tracker.log_inputs(inputs)
        tracker.log_base(base)
        for r in tracker.run.completed_rounds():  # rounds a killed run closed before it could log them
            tracker.log_round(r, tracker.run.read_metrics(r), config.steps_per_round)

    def on_round(r: int, metrics: dict[str, Any]) -> None:
        tracker.log_round(r, metrics, config.steps_per_round)
        tracker.log_files()

    def on_end(summary: dict[str, Any]) -> None:
        tracker.log_files()
        tracker.finish()

    return {"on_start": on_start, "on_round": on_round, "on_end": on_end}
