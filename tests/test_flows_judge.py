"""A run with a teacher, mined positives and distillation, end to end through the flows' round loop (plain steps,
as the experiment harness runs it; tiny random BERTs as student and teacher): every round's rows carry the
teacher's scores, the teacher's embeddings are computed once for the run, the trainer distils from them, and the
report states the teacher's ceiling and the mined positives."""

from __future__ import annotations

import pytest

from dataio.triplets import read_manifest


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import mining.embeddings as embeddings
    from flows.rounds.loop import plain_steps, run_rounds
    from flows.run.config import config_from_mapping
    from flows.run.rundir import RunDir
    from simcse.testing import build_tiny_model, torch_threads

    root = tmp_path_factory.mktemp("judged")
    student = build_tiny_model(root / "student", seed=0)
    teacher = build_tiny_model(root / "teacher", seed=1)
    sts = root / "sts_dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"topic {i % 5} item {i}\ttopic {i % 5} thing {i}\t{(i * 7) % 6}\n" for i in range(12)), encoding="utf-8")
    corpus = root / "corpus.txt"
    # Near-duplicate pairs ("... again") give the judge confident mutual neighbours to mine.
    lines = [f"sentence {i} talks about topic {i % 13} and item {i * 7919 % 1000}" for i in range(150)]
    corpus.write_text("\n".join(lines + [t + " again" for t in lines[:40]]) + "\n", encoding="utf-8")
    config = config_from_mapping({
        "output_dir": str(root / "run"), "seed": 3, "rounds": 2, "steps_per_round": 2, "batch_size": 8,
        "model": {"name_or_path": str(student), "pooling": "mean", "max_length": 24},
        "data": {"corpus": str(corpus)}, "eval": {"sts": [str(sts)]},
        "teacher": {"path": str(teacher)},
        "mining": {"bands": ["random", "nearest_neighbour", "graded_easy", "graded_medium", "graded_hard"],
                   "params": {"range_max": 10, "mined_positives": True, "positive_min_score": 0.95,
                              "max_score": None}},  # tiny random BERTs: every cosine is near 1
        "curriculum": {"difficulty": "teacher"},
        "training": {"progress": False, "distill_kl": 1.0, "distill_temperature": 0.1}})
    calls: list[int] = []
    real = embeddings.embed_corpus

    def counting(corpus_, encoder, *args, **kwargs):
        if (kwargs.get("model_fp") or "").startswith("teacher:"):
            out = real(corpus_, encoder, *args, **kwargs)
            calls.append(int(not out.cached))
            return out
        return real(corpus_, encoder, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(embeddings, "embed_corpus", counting)
    import flows.rounds.train_step
    import mining.pipeline

    mp.setattr(mining.pipeline, "embed_corpus", counting)
    mp.setattr(flows.rounds.train_step, "embed_corpus", counting, raising=False)
    try:
        with torch_threads(1):
            run = RunDir(root / "run")
            summary = run_rounds(config, run, plain_steps(config, run))
    finally:
        mp.undo()
    return {"run": run, "summary": summary, "teacher_encodes": calls}


def test_every_round_carries_the_teachers_scores_and_the_mined_positives(judged_run):
    from dataio.triplets import read_manifest, read_triplets

    run = judged_run["run"]
    rows = read_triplets(run.triplets).to_pylist()
    assert {r["round"] for r in rows} == {0, 1}
    assert all(r["teacher_score"] is not None and r["teacher_positive_score"] is not None for r in rows)
    for r in (0, 1):
        mined = read_manifest(run.triplets, r).model_extra["mined_positives"]
        assert (mined["judge"], mined["candidates"]) == ("teacher", 190) and mined["mined"] >= 1, mined
    assert sum(r["positive_source"] == "mined" for r in rows if r["round"] == 0) >= 1


def test_the_curriculum_orders_the_bands_by_the_teachers_grades(judged_run):
    from curriculum.state import CurriculumState
    from dataio.triplets import read_manifest

    run = judged_run["run"]
    state = CurriculumState.load(run.state_path)
    assert state.config["difficulty"] == "teacher"
    starts = [e for e in state.history if e.event == "start_round"]
    manifest = read_manifest(run.triplets, 1)
    by_teacher = {b: s.model_extra["mean_teacher_score"] for b, s in manifest.bands.items() if s.rows}
    assert state.difficulties == by_teacher
    assert by_teacher["graded_easy"] < by_teacher["graded_medium"] < by_teacher["graded_hard"]
    # Round 0 starts at the lowest competence: the easiest band by the teacher's grades has the largest share.
    first = starts[0].mixture
    assert max(first, key=first.get) == min(by_teacher, key=by_teacher.get), (first, by_teacher)


def test_the_teacher_encodes_the_pool_once_per_run(judged_run):
    assert sum(judged_run["teacher_encodes"]) == 1, judged_run["teacher_encodes"]


def test_the_report_states_the_teachers_ceiling_and_the_mined_positives(judged_run):
    run = judged_run["run"]
    assert run.teacher_metrics_path.is_file()
    report = (run.root / "report.md").read_text(encoding="utf-8")
    assert "## The judge" in report and "(the ceiling)" in report
    assert "| 0 | teacher |" in report and "| 1 | teacher |" in report
    # What the teacher cost: its encoding time, and the memory the process held by the end of that round.
    manifest = read_manifest(run.triplets, 0)
    peak = manifest.model_extra["teacher"]["process_peak_rss_mb"]
    assert peak > 50, peak  # a Python process with torch and a model loaded holds far more than 50 MiB
    assert "Its embeddings of the pool took" in report and f"peaked at {peak / 1024:.1f} GiB resident" in report
    assert "process_peak_rss_mb" not in read_manifest(run.triplets, 1).model_extra["teacher"], "round 1 read the cache"
