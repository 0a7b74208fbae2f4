"""The flows end to end on tiny data (a 2-layer random BERT, 200 docstring sentences) through Prefect.

One Prefect test harness serves the whole module (Prefect takes ~10 s to start); the resume test's
subprocesses talk to the same harness server instead of starting their own ephemeral API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dataio.triplet_layout import manifest_path

REPO = Path(__file__).resolve().parent.parent
BANDS_EXPECTED = {"random", "in_domain", "nearest_neighbour"}  # no NLI input in the built-in corpus


def tiny_settings(output_dir: Path, model: Path, sts: Path) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir), "seed": 3, "rounds": 2, "steps_per_round": 6, "batch_size": 8,
        "model": {"name_or_path": str(model), "pooling": "mean", "max_length": 24},
        "data": {"builtin": "python_docstrings", "builtin_max_sentences": 200},
        "eval": {"sts": [str(sts)]},
        "mining": {"params": {"range_max": 20}},
        "curriculum": {"total": 2, "c0": 0.2, "alpha": {"start": 0.5, "end": 1.0}},
        "training": {"progress": False, "log_every": 1},
    }


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simcse.testing import build_tiny_model

    root = tmp_path_factory.mktemp("flows-inputs")
    model = build_tiny_model(root / "tiny-bert", seed=0)
    # A base model's own card, whose licence the round models' cards carry on.
    (model / "README.md").write_text("---\nlicense: mit\n---\n\n# A tiny random BERT\n", encoding="utf-8")
    # A small STS-format file: only the plumbing of STS scoring is under test here, not the score.
    rows = ["sentence1\tsentence2\tscore"]
    for i in range(12):
        rows.append(f"Return the value number {i}.\tGive back value {i}.\t{(i * 7) % 6}")
    sts = root / "sts_dev.tsv"
    sts.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"model": model, "sts": sts, "root": root}


@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def reference_run(harness: str, tiny_inputs: dict[str, Path]) -> dict[str, Any]:
    """One uninterrupted run of the curriculum flow (in process, through the harness)."""
    from flows.orchestration.curriculum_flow import curriculum_flow
    from flows.run.config import config_from_mapping
    from simcse.testing import torch_threads

    out = tiny_inputs["root"] / "reference"
    settings = tiny_settings(out, tiny_inputs["model"], tiny_inputs["sts"])
    # Tracked: results must not change (the resume test compares bit for bit with untracked runs).
    settings["tracking"] = {"enabled": True, "uri": str(tiny_inputs["root"] / "mlflow")}
    cfg = config_from_mapping(settings)
    with torch_threads(1):  # as the resume test's subprocesses: same arithmetic, bit-equal results
        summary = curriculum_flow(cfg)
    return {"dir": out, "summary": summary}


def _triplets(run_dir: Path) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """Every round's rows per band, read through the manifests (the only files that count)."""
    from dataio.triplets import read_triplets

    out: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in read_triplets(run_dir / "triplets").to_pylist():
        out.setdefault((row["round"], row["band"]), []).append(row)
    return out


def test_curriculum_flow_leaves_a_complete_run_directory(reference_run: dict[str, Any]) -> None:
    import pyarrow.dataset as ds
    from sentence_transformers import SentenceTransformer

    run: Path = reference_run["dir"]
    summary = reference_run["summary"]
    assert summary["rounds_completed"] == [0, 1]

    # Curriculum state: both rounds closed, competence moved from c0 as the pacing says.
    state = json.loads((run / "state.json").read_text())
    assert state["round"] == 1 and not state["round_open"] and state["stage"] == 2
    starts = [e for e in state["history"] if e["event"] == "start_round"]
    assert [e["round"] for e in starts] == [0, 1]
    assert starts[0]["competence"] == pytest.approx(0.2) and starts[1]["competence"] > starts[0]["competence"]
    assert state["step"] == 12, "6 steps per round were reported to the scheduler"

    # Triplets: Hive-partitioned Parquet, complete rounds only, every contract column, one round per folder.
    table = ds.dataset(run / "triplets", format="parquet", partitioning="hive",
                       exclude_invalid_files=True).to_table()
    for column in ("anchor_id", "anchor", "positive", "negative", "band", "anchor_negative_sim", "round"):
        assert column in table.column_names
    rows = _triplets(run)
    assert {band for (_, band) in rows} == BANDS_EXPECTED
    assert {r for (r, _) in rows} == {0, 1}
    for (r, band), items in rows.items():
        assert items and all(x["round"] == r and x["band"] == band for x in items)
        assert all(x["negative"] not in (x["anchor"], x["positive"]) for x in items)

    # Models: one SentenceTransformer folder per round, loadable without project code, and trained
    # (weights differ from the base model and between rounds).
    vectors = []
    for r in (0, 1):
        model = SentenceTransformer(str(run / "rounds" / str(r) / "model"), device="cpu")
        vectors.append(model.encode(["Return the value.", "Open a file."]))
        assert vectors[-1].shape == (2, 32)
    base = SentenceTransformer(str(reference_run["dir"].parent / "tiny-bert"), device="cpu")
    base_vectors = base.encode(["Return the value.", "Open a file."])
    assert abs(vectors[0] - base_vectors).max() > 1e-4 and abs(vectors[1] - vectors[0]).max() > 1e-4

    # Metrics: base and per round, with STS, pair AP, alignment and uniformity; train accuracy recorded.
    base_metrics = json.loads((run / "base_metrics.json").read_text())
    assert set(base_metrics["evaluation"]["sts"]) == {"sts_dev"}
    assert set(base_metrics["evaluation"]["pairs"]) == {"eval_pairs"}
    for r in (0, 1):
        metrics = json.loads((run / "rounds" / str(r) / "metrics.json").read_text())
        ev = metrics["evaluation"]
        assert -100 <= ev["sts"]["sts_dev"] <= 100 and 0 <= ev["pairs"]["eval_pairs"] <= 100
        assert ev["alignment"] >= 0 and ev["uniformity"] <= 0
        assert metrics["dev_metric"]["name"] == "sts/sts_dev"
        assert metrics["train"]["steps"] == 6 and metrics["train"]["mean_train_accuracy"] is not None
        assert set(metrics["mining"]["bands"]) >= BANDS_EXPECTED
        assert abs(sum(metrics["curriculum"]["mixture"].values()) - 1) < 1e-6

    # Report and plots.
    report = (run / "report.md").read_text()
    assert "Rounds completed: 2 of 2" in report
    for png in ("metrics.png", "schedule.png", "similarity_round0.png", "similarity_round1.png"):
        assert (run / "plots" / png).read_bytes()[:4] == b"\x89PNG" and f"plots/{png}" in report
    assert "triplets/round=1/band=nearest_neighbour/part-0.parquet" in report
    assert yaml.safe_load((run / "config.yaml").read_text())["rounds"] == 2
    timings = json.loads((run / "timings.json").read_text())
    assert [t["round"] for t in timings] == [0, 1] and all(t["task_seconds"] > 0 for t in timings)
    assert not list(run.rglob(".*.tmp")), "no temporary files left behind"
    assert not (run / "rounds" / "0" / "train").exists(), "the trainer checkpoint is dropped after the round"

    # One learning-rate schedule over the run: warm-up once, then decay to 0 at the end of the last round;
    # round 1 continues round 0's optimizer (only the last round's optimizer state is kept).
    lrs = [h["lr"] for r in (0, 1) for h in json.loads((run / f"rounds/{r}/train_result.json").read_text())["history"]]
    total, warmup = 12, 2  # ceil(0.1 * 12)
    expected = [3e-5 * (g / warmup if g < warmup else (total - g) / (total - warmup)) for g in range(1, total + 1)]
    assert lrs == pytest.approx(expected, rel=1e-9) and lrs[-1] == 0.0
    assert not (run / "rounds/0/optimizer").exists() and (run / "rounds/1/optimizer/optimizer.pt").is_file()

    # The run names the model to use: the best by the dev metric, the starting model included.
    selection = json.loads((run / "selection.json").read_text())
    devs = {c["round"]: c["dev"] for c in selection["candidates"]}
    assert set(devs) == {"base", 0, 1} and selection["dev"] == max(devs.values())
    assert summary["model_to_use"] == str(run / selection["model_to_use"]) and "model to use" in report.lower()


def test_a_tracked_flow_run_is_one_mlflow_run_tagged_with_its_prefect_flow_run(
        reference_run: dict[str, Any], tiny_inputs: dict[str, Path]) -> None:
    from flows.registry.mlflow_store import MlflowStore

    client = MlflowStore.at(tiny_inputs["root"] / "mlflow").client()
    runs = client.search_runs([client.get_experiment_by_name("simcse-curriculum").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_run_id"]
    assert run.data.params["rounds"] == "2" and run.data.tags["simcse.run_dir"] == str(reference_run["dir"])
    sts = [key for key in run.data.metrics if key.startswith("sts/")]
    assert len(sts) == 1 and [m.step for m in client.get_metric_history(run.info.run_id, sts[0])] == [0, 1, 2]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == list(range(1, 13)), "log_every 1: one window per optimizer step, 6 steps x 2 rounds"
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "report.md").is_file() and (artifacts / "plots").is_dir()
    assert artifacts.is_relative_to(tiny_inputs["root"] / "mlflow")


def test_round_models_carry_model_cards(reference_run: dict[str, Any], tiny_inputs: dict[str, Path]) -> None:
    """Each round's model folder has a card: base model and its licence, data, loss, curriculum, metrics."""
    from simcse.model_card import read_card_info, read_front_matter

    run: Path = reference_run["dir"]
    for r in (0, 1):
        folder = run / "rounds" / str(r) / "model"
        metrics = json.loads((run / "rounds" / str(r) / "metrics.json").read_text())
        meta = read_front_matter(folder / "README.md")
        # Round 1 trains from round 0's folder, yet names the run's base model and its licence.
        assert meta["base_model"] == str(tiny_inputs["model"]) and meta["license"] == "mit"
        assert meta["library_name"] == "sentence-transformers" and "simcse" in meta["tags"]
        index = {m["type"]: m["value"] for res in meta["model-index"][0]["results"] for m in res["metrics"]}
        assert index["spearman_cosine"] == pytest.approx(metrics["evaluation"]["sts"]["sts_dev"] / 100)
        assert index["cosine_ap"] == pytest.approx(metrics["evaluation"]["pairs"]["eval_pairs"] / 100)
        text = (folder / "README.md").read_text()
        cur = metrics["curriculum"]
        for expected in (f"**Curriculum round:** {r} of 2", "supervised SimCSE", "**Temperature τ:** 0.050",
                         "#### Curriculum", "mode paced, pacing root", f"**After this round:** {cur['decision']}",
                         "| nearest_neighbour | ", "#### Training Data Provenance", "corpus.jsonl", "PSF-2.0",
                         f"STS sts_dev {metrics['evaluation']['sts']['sts_dev']:.2f}", "mined triplets, round"):
            assert expected in text, (r, expected)
        assert f'SentenceTransformer("{folder.resolve()}")' in text, "the usage loads this round's folder"
        assert f"* Size: {6 * 8} training samples" in text, "the rows the round trained on, not the rows mined"
        info = read_card_info(folder)
        assert info.curriculum["mixture"] == pytest.approx(cur["mixture"])
        assert info.loss["alpha"] == pytest.approx(cur["alpha"]) and info.steps == 6
        assert {d["kind"] for d in info.data} == {"corpus", "pairs"} and all(d["sha256"] for d in info.data)
        assert info.trained_from == (None if r == 0 else str(run / "rounds" / "0" / "model"))  # None: the base


def test_report_counts_distinct_pairs_and_keeps_self_matches_apart(reference_run: dict[str, Any]) -> None:
    """The positives histogram counts each labeled pair once (not once per band); candidates that were the
    anchor itself are not shown as skips; the report says what was read and how long the run took."""
    import pyarrow.parquet as pq

    from flows.rounds.report_plots import read_similarities
    from flows.run.rundir import RunDir

    run: Path = reference_run["dir"]
    manifest = json.loads(RunDir(run).manifest_path(0).read_text())
    rows, pairs = 0, set()
    for entry in manifest["files"]:
        table = pq.read_table(run / "triplets/round=0" / entry["path"]).to_pylist()
        labeled = [(x["anchor_id"], x["positive_id"]) for x in table if x["anchor_id"] != x["positive_id"]]
        rows += len(labeled)
        pairs.update(labeled)
    assert len(pairs) < rows, "the bands repeat labeled pairs, which is what is under test"
    negatives, positives = read_similarities(RunDir(run), 0)
    assert positives.size == len(pairs)
    assert {b: v.size for b, v in negatives.items()} == {f["band"]: f["rows"] for f in manifest["files"]}

    report = (run / "report.md").read_text()
    mined = report.split("## Mined bands", 1)[1].split("## Models", 1)[0]
    table_rows = [line for line in mined.splitlines() if line.startswith("| ") and not line.startswith("| band")]
    assert table_rows and not any("anchor:" in line for line in table_rows)
    for band, stats in manifest["bands"].items():
        if stats["skipped"].get("anchor"):
            assert f"{band} {stats['skipped']['anchor']}" in mined.split("### Round 1")[0]
    nn = manifest["bands"]["nearest_neighbour"]["skipped"]
    assert f"max_score: {nn['max_score']}" in mined

    assert "Wall time: " in report
    corpus = json.loads(RunDir(run).manifest_path(1).read_text())["corpus"]
    read = report.split("## Data read", 1)[1].split("## ", 1)[0]
    for src in corpus["sources"]:
        name = Path(src["path"]).name
        assert f"| `data/{name}` | {src['kind']} | {src['rows']} | {src['kept']} |" in read
    assert f"{corpus['anchor_rows']['pair']} labeled pairs" in read
    assert "rounds/1/model/README.md" in report


def test_prefect_records_artifacts_and_reuses_cached_tasks(reference_run: dict[str, Any]) -> None:
    """A second call finds every round complete; the base evaluation comes from Prefect's cache."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from flows.orchestration.curriculum_flow import curriculum_flow
    from flows.run.config import load_config

    run: Path = reference_run["dir"]
    state = curriculum_flow(load_config(run / "config.yaml"), return_state=True)
    summary = state.result()
    assert summary["rounds_completed"] == [0, 1] and summary["timings"] == []

    async def query() -> tuple[list[Any], list[Any]]:
        async with get_client() as client:
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["reference-metrics", "reference-report"])))
            return task_runs, artifacts

    task_runs, artifacts = asyncio.run(query())
    by_name = {t.name.rsplit("-", 1)[0]: t for t in task_runs}
    assert by_name["evaluate"].state.name == "Cached"
    assert {"mine", "train"}.isdisjoint(by_name), "no round was redone"
    kinds = {a.key: a.type for a in artifacts}
    assert kinds == {"reference-metrics": "table", "reference-report": "markdown"}


DRIVER = textwrap.dedent("""
    # Runs `simcse-curriculum run CONFIG`, SIGKILLing itself at a chosen point (no hooks in the product):
    #   replace|<text>|<n>: just before the n-th os.replace whose target contains <text> (a write in flight)
    #   step|<n>: right after the n-th optimizer step of this process (training in flight)
    import os, signal, sys
    import torch
    torch.set_num_threads(1)  # as the in-process reference run
    kind, _, rest = os.environ.get("FLOWS_TEST_KILL", "||").partition("|")
    count = [0]
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "replace":
        pattern, n = rest.rsplit("|", 1)
        real_replace = os.replace
        def replace(src, dst, *args, **kwargs):
            if pattern in str(dst):
                count[0] += 1
                if count[0] == int(n):
                    die()
            return real_replace(src, dst, *args, **kwargs)
        os.replace = replace
    elif kind == "step":
        from torch.optim.optimizer import register_optimizer_step_post_hook
        def hook(optimizer, args, kwargs):
            count[0] += 1
            if count[0] == int(rest):
                die()
        register_optimizer_step_post_hook(hook)
    from flows.cli.app import main
    sys.exit(main(["run", sys.argv[1]]))
""")


def _run_cli(config: Path, driver: Path, api_url: str, kill: str | None) -> int:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWS_TEST_KILL", None)
    if kill:
        env["FLOWS_TEST_KILL"] = kill
    proc = subprocess.run([sys.executable, str(driver), str(config)], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=300, check=False)
    if kill is None and proc.returncode != 0:
        raise AssertionError(f"resumed run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode


def test_killed_run_resumes_to_the_same_triplets_and_model(reference_run: dict[str, Any], harness: str,
                                                           tiny_inputs: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL during training, closing, mining and the model rename; each rerun resumes; same result."""
    from safetensors.numpy import load_file

    out = tmp_path / "killed"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_settings(out, tiny_inputs["model"], tiny_inputs["sts"])))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    # 1. Mid-training in round 0 (step 5 of 6; the trainer checkpointed at step 3).
    assert _run_cli(config, driver, harness, "step|5") == -signal.SIGKILL
    assert (out / "rounds/0/train/checkpoint").is_dir() and not (out / "rounds/0/model").exists()
    assert json.loads((out / "state.json").read_text())["round_open"]

    # 2. Closing round 0: state.json closed, metrics.json (the round's completion mark) not yet written.
    assert _run_cli(config, driver, harness, "replace|rounds/0/metrics.json|1") == -signal.SIGKILL
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 0 and not state["round_open"] and not (out / "rounds/0/metrics.json").exists()

    # 3. Mining round 1: one band's Parquet file is in place, the second is in flight, no manifest.
    assert _run_cli(config, driver, harness, "replace|round=1/band=|2") == -signal.SIGKILL
    assert (out / "rounds/0/metrics.json").is_file()
    assert list((out / "triplets/round=1").glob("band=*/part-*.parquet"))
    assert not manifest_path(out / "triplets", 1).exists()

    # 4. Moving round 1's trained model into place.
    assert _run_cli(config, driver, harness, "replace|rounds/1/model|1") == -signal.SIGKILL
    assert not (out / "rounds/1/model").exists() and manifest_path(out / "triplets", 1).is_file()

    # 5. Uninterrupted to the end.
    assert _run_cli(config, driver, harness, None) == 0

    assert _triplets(out) == _triplets(reference_run["dir"]), "triplets equal an uninterrupted run's"
    for r in (0, 1):
        ours = load_file(str(out / f"rounds/{r}/model/model.safetensors"))
        ref = load_file(str(reference_run["dir"] / f"rounds/{r}/model/model.safetensors"))
        assert ours.keys() == ref.keys() and all((ours[k] == ref[k]).all() for k in ours), f"round {r} weights"
    for r in (0, 1):  # the learning rate across the kills is the uninterrupted run's
        ours = json.loads((out / f"rounds/{r}/train_result.json").read_text())["history"]
        ref = json.loads((reference_run["dir"] / f"rounds/{r}/train_result.json").read_text())["history"]
        assert [h["lr"] for h in ours] == [h["lr"] for h in ref]
    ref_state = json.loads((reference_run["dir"] / "state.json").read_text())
    our_state = json.loads((out / "state.json").read_text())
    assert our_state["history"] == ref_state["history"] and our_state["stage"] == ref_state["stage"]
    assert not list(out.rglob(".*.tmp")), "no temporary files left behind"


def test_standalone_mine_train_evaluate_flows_share_the_tasks(harness: str, tiny_inputs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """A domain team's path: mine only, then train one round on those triplets, then evaluate a model."""
    from dataio.errors import InputError
    from flows.orchestration.curriculum_flow import evaluate_flow, mine_flow, train_flow
    from flows.run.config import config_from_mapping
    from simcse.testing import torch_threads

    out = tmp_path / "standalone"
    cfg = config_from_mapping({**tiny_settings(out, tiny_inputs["model"], tiny_inputs["sts"]), "rounds": 1})
    with pytest.raises(InputError, match="has not been mined"):
        train_flow(cfg)
    with torch_threads(1):
        mined = mine_flow(cfg)
    assert manifest_path(out / "triplets", 0).is_file()
    assert set(mined["bands"]) >= BANDS_EXPECTED and mined["rows"] == sum(f["rows"] for f in mined["files"])
    assert not (out / "rounds").exists(), "mining alone trains nothing"

    with torch_threads(1):
        metrics = train_flow(cfg)
    assert (out / "rounds/0/model/model.safetensors").is_file() and metrics["train"]["steps"] == 6
    with torch_threads(1):
        result = evaluate_flow(cfg, model=str(out / "rounds/0/model"))
    assert result["evaluation"] == metrics["evaluation"], "the same model scores the same"


def test_accelerator_tasks_carry_the_gpu_tag_only_when_a_limit_exists(harness: str, tmp_path: Path) -> None:
    """Tagging costs an API round trip per task run, so `gpu` is set only where a concurrency limit on it
    makes it do something (`prefect concurrency-limit create gpu 1`)."""
    from prefect.client.orchestration import get_client

    from flows.orchestration.tasks import GPU_TAG, bind_tasks, gpu_limit_exists
    from flows.run.rundir import RunDir

    run = RunDir(tmp_path / "run")
    assert not gpu_limit_exists()
    untagged = bind_tasks(run)
    assert all(not t.tags for t in (untagged.mine, untagged.train, untagged.evaluate))
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=1)
        try:
            assert gpu_limit_exists()
            tagged = bind_tasks(run)
            assert all(t.tags == {GPU_TAG} for t in (tagged.mine, tagged.train, tagged.evaluate))
            assert not tagged.schedule.tags and not tagged.report.tags
        finally:
            client.delete_concurrency_limit_by_tag(tag=GPU_TAG)
    assert not gpu_limit_exists()
