"""The experiment harness: its statistics (paired t CIs, Holm) against independent computations, the analysis
and markdown on hand-made results, the design plumbing (arms x settings -> flows run configs), and one real
arm end to end at the smoke size."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from bench import REPO
from bench import experiment_design as design
from bench import experiment_report as report

SETTINGS = {"general": {"label": "General", "dev_name": "STS-B dev", "report_name": "STS-B test",
                        "report_metric": "sts/test", "recipe": "static_nli"},
            "domain": {"label": "Domain", "dev_name": "AP select", "report_name": "AP report",
                       "report_metric": "pairs/dev_pairs", "guard_metric": "sts/test", "recipe": "in_batch"}}


def _result(setting: str, arm: str, seed: int, value: float, *, start: str = "tuned", anchors: str = "x") -> dict:
    report_eval = {"sts": {"test": value}, "pairs": {}} if setting == "general" else \
        {"sts": {"test": 80.0}, "pairs": {"dev_pairs": value}}
    curve = [{"round": r, "step": 5 * (r + 1), "dev": value + r, "anchors_sha256": f"{anchors}{seed}{r}",
              "bands": {"random": {"rows": 10, "difficulty": 0.05},
                        "nearest_neighbour": {"rows": 9, "difficulty": 0.6}},
              "bands_per_step": {"bands": ["random", "nearest_neighbour"], "counts": [[3, 1]] * 5}} for r in range(2)]
    return {"start": start, "setting": setting, "arm": arm, "seed": seed, "description": arm, "curve": curve,
            "base": {"dev": 70.0, "report": report_eval | {"sts": {"test": 70.0}, "pairs": {"dev_pairs": 70.0}}},
            "final": {"round": 1, "dev": value + 1, "report": report_eval},
            "selected": {"round": 1, "dev": value + 1, "report": report_eval}}


# Per seed: the curriculum equals static_matched up to +-0.1 and beats static_nli by 0.06 +- 0.2; static_nli
# beats in_batch by about 0.94.
OFFSETS = [0.0, 0.3, -0.2, 0.5, 0.1]


def _results(anchors_of: dict[str, str] | None = None) -> list[dict]:
    out = []
    for seed, o in enumerate(OFFSETS):
        jitter = [0.1, -0.1, 0.0, 0.05, -0.05][seed]
        values = {"in_batch": 80.0 + o, "static_nli": 81.0 + o - [0.1, 0.2, -0.2, 0.0, 0.3][seed],
                  "static_matched": 81.0 + o - jitter, "curriculum": 81.0 + o}
        for arm, v in values.items():
            out.append(_result("general", arm, seed, v, anchors=(anchors_of or {}).get(arm, "x")))
    return out


def test_paired_difference_ci_matches_the_t_formula():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 3: 6.0}
    b = {0: 2.5, 1: 4.0, 2: 4.2, 3: 5.0, 9: 1.0}  # seed 9 has no partner: left out
    c = report.paired(a, b)
    diffs = [0.5, 1.0, -0.2, 1.0]
    assert c["n"] == 4 and c["diffs"] == pytest.approx(diffs)
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = 3.182446305284263 * sd / 2  # t(0.975, df=3)
    assert c["mean"] == pytest.approx(mean) and c["low"] == pytest.approx(mean - half)
    assert c["high"] == pytest.approx(mean + half)
    t = mean / (sd / 2)
    from scipy import stats

    assert c["p"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    assert c["p"] == pytest.approx(2 * stats.t.sf(t, 3))
    assert report.paired({0: 1.0}, {0: 0.0})["low"] is None


def test_holm_adjusts_in_order_and_keeps_missing():
    assert report.holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None,
                                                     pytest.approx(0.06)]
    assert report.holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_readings_say_goal_equivalence_or_not_separated():
    def c(low: float, high: float, p: float = 0.2) -> dict:
        return {"low": low, "high": high, "mean": (low + high) / 2, "p": p}

    assert report.reading(c(0.6, 1.2, p=0.001)) == "better by ≥ 0.5 (goal met)"
    assert report.reading({**c(0.6, 1.2, p=0.01), "p_holm": 0.06}) == "better; the goal neither met nor excluded"
    assert report.reading(c(-0.3, 0.4)) == "equivalent within ±0.5"
    assert report.reading(c(0.1, 0.4)) == "better, by less than 0.5"
    assert report.reading(c(0.1, 0.8)) == "better; the goal neither met nor excluded"
    assert report.reading(c(-1.0, -0.2)) == "worse"
    assert report.reading(c(-0.4, -0.2)) == "worse, by less than 0.5"
    assert report.reading(c(-0.6, 0.7)) == "not separated"


def test_analysis_contrasts_pairing_and_holm_on_hand_made_results():
    blocks = report.analyse(_results(), SETTINGS)
    assert len(blocks) == 1
    block = blocks[0]
    contrasts = {c["label"]: c for c in block["contrasts"]}
    order = contrasts["order: curriculum − static_matched"]
    assert order["n"] == 5 and order["mean"] == pytest.approx(0.0, abs=1e-9)
    assert order["reading"] == "equivalent within ±0.5"
    recipe = contrasts["recipe: curriculum − static_nli"]
    assert recipe["mean"] == pytest.approx(statistics.fmean([0.1, 0.2, -0.2, 0.0, 0.3]))
    control = contrasts["control: static_nli − in_batch"]
    assert control["low"] > 0.5 and control["reading"] == "better by ≥ 0.5 (goal met)"
    holm = report.holm([order["p"], recipe["p"]])
    assert (order["p_holm"], recipe["p_holm"]) == (holm[0], holm[1])
    assert "p_holm" not in control
    assert block["pairing"] == {"groups": 10, "identical": 10}
    broken = report.analyse(_results({"curriculum": "y"}), SETTINGS)[0]
    assert broken["pairing"] == {"groups": 10, "identical": 0}
    shares = report.band_shares(block["arms"]["curriculum"]["curves"], bin_steps=10)
    assert shares["random"] == pytest.approx([0.75]) and shares["nearest_neighbour"] == pytest.approx([0.25])


def test_section_answers_in_three_sentences_and_keeps_the_rest_of_the_file(tmp_path: Path):
    blocks = report.analyse(_results(), SETTINGS)
    text = report.render_section(blocks, {"size": {"name": "main", "rounds": 2}}, {"forest": "figures/f.png"})
    assert text.startswith(report.START_MARKER) and text.rstrip().endswith(report.END_MARKER)
    answer = text.split("### The answer", 1)[1].split("###", 1)[0]
    assert answer.count("\n1. ") == 1 and "**Does the order matter?**" in answer and "**Which negatives" in answer
    assert "did not beat visiting them in random order" in answer  # +0.0 over static_matched
    assert "| `curriculum` | 5 |" in text and "![paired contrasts](figures/f.png)" in text
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nkept before\n\n" + report.START_MARKER + "\nold\n" + report.END_MARKER
                    + "\nkept after\n")
    report.write_section(path, text)
    written = path.read_text()
    assert written.startswith("# Results\n\nkept before\n\n") and written.endswith("kept after\n")
    assert "old" not in written and written.count(report.START_MARKER) == 1


def test_section_states_the_seeds_run_the_sequential_extension_and_the_precision_target():
    planned = [0, 1, 2, 3, 4]
    five = report.analyse(_results(), SETTINGS)
    text = report.render_section(five, {"size": {"name": "main", "seeds": planned}}, {})
    assert "- Seeds run: tuned General n = 5 (0–4)." in text and "Sequential extension" not in text
    recipe = {c["label"]: c for c in five[0]["contrasts"]}["recipe: curriculum − static_nli"]
    assert recipe["half_width"] < report.PRECISION  # the hand-made differences are tight (sd 0.19)
    assert f"tuned recipe ±{recipe['half_width']:.2f} (met)" in text
    # Two more seeds whose curriculum − static_matched differences spread widely: n = 7, beyond the plan.
    extra = [_result("general", arm, seed, v) for seed, spread in ((5, 2.0), (6, -2.0))
             for arm, v in (("in_batch", 80.0), ("static_nli", 81.0), ("static_matched", 81.0),
                            ("curriculum", 81.0 + spread))]
    seven = report.analyse(_results() + extra, SETTINGS)
    text = report.render_section(seven, {"size": {"name": "main", "seeds": planned},
                                         "commands": ["run --size main", "run --size main --seeds 5,6"]}, {})
    assert "- Seeds run: tuned General n = 7 (0–6)." in text
    assert "- Sequential extension: seeds 5, 6 were added after the planned 0–4 finished, for tuned General" in text
    order = {c["label"]: c for c in seven[0]["contrasts"]}["order: curriculum − static_matched"]
    assert order["n"] == 7 and order["half_width"] > report.PRECISION
    assert f"tuned order ±{order['half_width']:.2f} (not met)" in text
    assert "Commands: `run --size main`, then `run --size main --seeds 5,6`" in text


def test_run_meta_keeps_every_distinct_command_across_invocations(tmp_path: Path, monkeypatch):
    from bench import experiment as runner

    size = {"name": "main", "seeds": [0, 1]}
    script = str(REPO / "bench" / "experiment.py")  # sys.argv[0] under `python -m bench.experiment`
    for argv in ([script, "run", "--size", "main"], [script, "run", "--size", "main"],
                 [script, "run", "--size", "main", "--seeds", "2"]):
        monkeypatch.setattr(sys, "argv", argv)
        runner.write_run_meta(tmp_path, size, 0.0, [], [], starting=True)
        runner.write_run_meta(tmp_path, size, 10.0, [], [])
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["commands"] == ["python -m bench.experiment run --size main",
                                "python -m bench.experiment run --size main --seeds 2"]
    assert meta["invocations"] == 3 and meta["wall_seconds"] == pytest.approx(30.0)


def test_workers_run_as_modules_of_this_checkout(tmp_path: Path, monkeypatch):
    """`run` starts each job as `python -m bench.experiment run-one` with an absolute --out: the workers run in the
    repository root (bench.child_options), so a harness started from a snapshot worktree runs that snapshot."""
    from bench import experiment as runner

    monkeypatch.chdir(tmp_path)
    cmd = runner.worker_command("smoke", Path("out"), ("tuned", "general", "in_batch", 0), 1, True)
    assert cmd[0] == sys.executable and cmd[1:4] == ["-m", "bench.experiment", "run-one"]
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "out") and cmd[-1] == "--keep-models"


def test_figures_are_drawn(tmp_path: Path):
    blocks = report.analyse(_results(), SETTINGS)
    for fn in (report.plot_forest, report.plot_dev_by_step, report.plot_band_shares):
        path = fn(blocks, tmp_path / f"{fn.__name__}.png")
        assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_every_arm_builds_a_flows_config_that_pairs_with_the_others(tmp_path: Path):
    size = design.load_size("main")
    assert size["arms"][-1] == "anti_curriculum"  # the optional arm runs last in each seed
    for setting in design.SETTINGS:
        raw = {**design.load_setting(setting), "_name": setting}
        configs = {}
        for name in size["arms"]:
            arm = design.load_arm(name)
            if setting not in arm["settings"]:
                continue
            for start in size["starts"]:
                config = design.build_config(raw, arm, size, start, 3, tmp_path / name, "model-folder")
                configs[(name, start)] = config
                assert config.seed == 3 and config.steps_per_round == size["steps_per_round"]
                assert config.model.name_or_path == "model-folder"
                assert "random" in config.mining.bands  # every round holds every anchor: paired sampling
                assert config.training.lr == design.training_for(size, start, setting)["lr"]
                assert config.negatives == ("in_batch" if name == "in_batch" else "hard")
                if config.curriculum.mode != "static":
                    assert config.curriculum.total == size["rounds"] * size["steps_per_round"] - 1
        cur = configs[("curriculum", "tuned")].curriculum
        matched = configs[("static_matched", "tuned")].curriculum
        anti = configs[("anti_curriculum", "tuned")].curriculum
        assert matched.order == "shuffled" and matched.shuffle_seed == 3 and anti.order == "hard_to_easy"
        same = {k: v for k, v in cur.model_dump().items() if k not in ("order", "shuffle_seed")}
        assert same == {k: v for k, v in matched.model_dump().items() if k not in ("order", "shuffle_seed")}
        assert same == {k: v for k, v in anti.model_dump().items() if k not in ("order", "shuffle_seed")}
    plan = design.planned_runs(size)
    assert len(plan) == len(size["seeds"]) * 2 * (6 + 5)  # static_nli only in General
    assert [p[3] for p in plan] == sorted(p[3] for p in plan)  # seeds outermost


def test_subsample_lines_keeps_header_and_order(tmp_path: Path):
    src = tmp_path / "in.tsv"
    src.write_text("sentence1\tsentence2\tscore\n" + "".join(f"a{i}\tb{i}\t{i % 5}\n" for i in range(50)))
    dst = design.subsample_lines(src, tmp_path / "out" / "in.tsv", 10)
    lines = dst.read_text().splitlines()
    assert lines[0] == "sentence1\tsentence2\tscore" and len(lines) == 11
    numbers = [int(line.split("\t")[0][1:]) for line in lines[1:]]
    assert numbers == sorted(numbers) and len(set(numbers)) == 10
    assert design.subsample_lines(src, tmp_path / "again" / "in.tsv", 10).read_text() == dst.read_text()


def test_twitter_pairs_split_by_headline(tmp_path: Path):
    from bench import experiment_data as data

    src = tmp_path / "dev_pairs.tsv"
    rows = [f"headline {h}\ttweet {h}-{t}\t{t % 2}" for h in range(40) for t in range(5)]
    src.write_text("sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    halves = data.split_twitter_dev(src, tmp_path / "split")
    heads = {}
    for half, path in halves.items():
        lines = path.read_text().splitlines()
        assert lines[0] == "sentence1\tsentence2\tlabel" and path.name == "dev_pairs.tsv"
        heads[half] = {line.split("\t")[0] for line in lines[1:]}
    assert not heads["select"] & heads["report"] and len(heads["select"] | heads["report"]) == 40
    assert 10 < len(heads["select"]) < 30


def test_twitter_pairs_split_by_component_share_no_text(tmp_path: Path):
    """A tweet under two headlines ties them: the component split keeps every text on one side."""
    from bench import experiment_data as data

    src = tmp_path / "dev_pairs.tsv"
    rows = [f"headline {h}\ttweet {h}-{t}\t{t % 2}" for h in range(40) for t in range(5)]
    rows += [f"headline {h}\ttweet {h + 1}-0\t0" for h in range(0, 40, 4)]  # tweets shared by two headlines
    src.write_text("sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    halves = data.split_twitter_dev(src, tmp_path / "split", "component")
    texts = {}
    for half, path in halves.items():
        lines = path.read_text().splitlines()[1:]
        texts[half] = {t for line in lines for t in line.split("\t")[:2]}
    assert not texts["select"] & texts["report"]
    assert sum(len(p.read_text().splitlines()) - 1 for p in halves.values()) == len(rows)
    by_headline = data.split_twitter_dev(src, tmp_path / "old", "headline")
    old = {h: {t for line in p.read_text().splitlines()[1:] for t in line.split("\t")[:2]}
           for h, p in by_headline.items()}
    assert old["select"] & old["report"], "the headline split does share tweets here: the case the new split fixes"


def test_the_judge_arms_build_configs_with_their_mining_settings_and_teacher(tmp_path: Path):
    from bench import experiment_arm as arm_module

    size = design.load_size("judge")
    raw = {**design.load_setting("domain"), "_name": "domain"}
    configs = {name: design.build_config(raw, design.load_arm(name), size, "tuned", 1, tmp_path / name, "m")
               for name in size["arms"]}
    assert configs["in_batch"].teacher is None and not configs["in_batch"].mining.params.mined_positives
    assert arm_module.judge_variant(configs["in_batch"]) is None  # shares the first experiment's rounds
    student, teacher = configs["mined_student"], configs["mined_teacher"]
    assert student.mining.params.mined_positives and student.teacher is None
    assert teacher.teacher is not None and teacher.teacher.path == str(design.teacher_path(size))
    # Round 0 mines every band of the setting: arms with the same judge settings share it, whatever they train on.
    assert arm_module.judge_variant(teacher) == arm_module.judge_variant(configs["teacher_nn"])
    assert arm_module.judge_variant(student) != arm_module.judge_variant(teacher)
    # Later rounds: the student's own positives change with its encoder; the teacher's do not.
    assert arm_module.encoder_dependent(student) and not arm_module.encoder_dependent(teacher)
    assert arm_module.encoder_dependent(configs["teacher_nn"])
    distill = configs["distill"]
    assert distill.teacher is not None and distill.training.distill_kl == 1.0
    assert not distill.mining.params.mined_positives
    for config in configs.values():  # every arm trains the same data, steps, rate and positive view
        assert (config.steps_per_round, config.batch_size, config.training.lr, config.positive_view) == \
            (125, 32, 1e-5, "word_deletion")


@pytest.mark.e2e
def test_smoke_run_of_one_arm_end_to_end(shared_data: Path, minilm_path: str, tmp_path: Path):
    """The harness for real (offline MiniLM, shared data, the smoke size): one arm of General through the
    flows' round loop, its result file and the markdown section."""
    import subprocess

    out = tmp_path / "exp"
    proc = subprocess.run([sys.executable, "-m", "bench.experiment", "run", "--size", "smoke", "--out", str(out),
                           "--results", str(out / "results.md"), "--settings", "general", "--arms", "in_batch",
                           "--workers", "1"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results" / "tuned" / "general" / "in_batch" / "seed0.json").read_text())
    assert [c["round"] for c in result["curve"]] == [0, 1] and result["curve"][-1]["step"] == 6
    value = report.endpoint(result, "sts/test")
    assert value is not None and 0 < value <= 100 and not math.isnan(value)
    assert not (out / "runs" / "tuned" / "general" / "in_batch" / "seed0" / "rounds" / "1" / "model").exists()
    section = (out / "results.md").read_text()
    assert report.START_MARKER in section and "`in_batch`" in section


def _judge_result(arm: str, seed: int, report_ap: float, select_ap: float, sts: float = 82.0) -> dict:
    base = {"sts": {"test": 82.0}, "pairs": {"dev_pairs": 76.0}}
    return {"start": "tuned", "setting": "domain", "arm": arm, "seed": seed, "description": arm,
            "curve": [{"round": r, "anchors_sha256": f"a{seed}{r}"} for r in range(2)],
            "base": {"dev": 79.0, "report": base},
            "teacher_scores": {"dev": 80.0, "report": {"sts": {"test": 84.0}, "pairs": {"dev_pairs": 78.0}}},
            "final": {"round": 1, "dev": select_ap,
                      "report": {"sts": {"test": sts}, "pairs": {"dev_pairs": report_ap}}},
            "selected": {"round": 1, "dev": select_ap, "report": {"sts": {"test": sts},
                                                                  "pairs": {"dev_pairs": report_ap}}},
            "timings": {"train": 100.0}}


def test_judge_report_reads_goal_rows_gap_winner_and_margin(tmp_path: Path):
    from bench import judge_report as judge

    noise = [0.1, -0.1, 0.0, 0.2, -0.2]
    results = []
    for seed, e in enumerate(noise):
        results.append(_judge_result("in_batch", seed, 76.0 + e, 79.1 + e))
        results.append(_judge_result("mined_teacher", seed, 77.5 + e / 2, 79.6 + e))  # +1.5 over the start
        results.append(_judge_result("distill", seed, 77.4 + e, 79.55 + e, sts=81.0))  # STS-B falls 1.0
    analysis = judge.analyse(results)
    goal = {c["a"]: c for c in analysis["contrasts"] if c["kind"] == "goal"}
    assert goal["mined_teacher"]["mean"] == pytest.approx(1.5)
    assert goal["mined_teacher"]["reading"].startswith("goal met")
    assert goal["mined_teacher"]["gap_closed"] == pytest.approx(0.75)  # 1.5 of the 2.0 between start and teacher
    assert "STS-B test fell" in goal["distill"]["reading"]
    assert goal["in_batch"]["reading"] == "not separated from the start"
    versus = {c["a"]: c for c in analysis["contrasts"] if c["kind"] == "vs reference"}
    assert set(versus) == {"mined_teacher", "distill"} and all(c["p_holm"] is not None for c in versus.values())
    # mined_teacher (79.6) and distill (79.55) tie within 0.1 on the select half: the simpler arm wins.
    assert analysis["winner"] == "mined_teacher"
    sd = statistics.stdev([79.1 + e for e in noise])
    assert analysis["margin"] == pytest.approx(math.ceil(2 * sd / 0.05 - 1e-9) * 0.05)
    text = judge.render(analysis, {"size": {"name": "judge"}})
    assert judge.START_MARKER in text and "teacher (ceiling)" in text and "`mined_teacher`" in text
    assert "not a registered size" not in text
    assert "not a registered size" not in judge.render(analysis, {"size": {"name": "judge2"}})  # phase 2's size
    assert "not a registered size" in judge.render(analysis, {"size": {"name": "judge2-smoke"}})


def test_judge_report_reads_mined_shares_from_the_result_else_from_a_kept_run_folder(tmp_path: Path):
    """The share of anchors with a mined positive: the result's own record (the harness keeps it in each round of
    the curve), else the run folder's manifests when that folder was kept, else nothing (shown as a dash)."""
    from bench import judge_report as judge

    recorded = _judge_result("mined_teacher", 0, 77.0, 79.5)
    for c, share in zip(recorded["curve"], (0.25, 0.125)):
        c["mined_positives_share"] = share
    from_folder = _judge_result("mined_student", 0, 76.5, 79.2)
    manifest = tmp_path / "tuned" / "domain" / "mined_student" / "seed0" / "triplets" / "round=0" / ".manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"round": 0, "mined_positives": {"share": 0.5}}))
    neither = _judge_result("in_batch", 0, 76.0, 79.0)
    arms = judge.analyse([recorded, from_folder, neither], runs_dir=tmp_path)["arms"]
    assert arms["mined_teacher"]["mined_share"] == {0: 0.25, 1: 0.125}
    assert arms["mined_student"]["mined_share"] == {0: 0.5}
    assert arms["in_batch"]["mined_share"] == {}


def test_judge_report_phase_2_keeps_phase_1s_family_and_checks_the_order_controls_exposure(tmp_path: Path):
    from bench import judge_report as judge

    def graded(arm: str, seed: int, report_ap: float, select_ap: float, counts: list[list[int]]) -> dict:
        res = _judge_result(arm, seed, report_ap, select_ap)
        res["curve"] = [{"round": 0, "anchors_sha256": f"a{seed}0",
                         "bands_per_step": {"bands": ["graded_easy", "graded_hard"], "counts": counts}}]
        return res

    results = []
    for seed, e in enumerate([0.1, -0.1, 0.0, 0.2, -0.2]):
        results.append(_judge_result("in_batch", seed, 76.0 + e, 79.1 + e))
        results.append(_judge_result("teacher_nn", seed, 76.5 + e, 79.9 + e))  # phase 1's winner
        results.append(graded("graded_curriculum", seed, 77.0 + e, 81.0 + e, [[3, 1], [1, 3]]))  # +0.5 on teacher_nn
        results.append(graded("graded_shuffled", seed, 76.8 + e / 2, 80.9 + e, [[1, 3], [3, 1]]))  # same exposure
    analysis = judge.analyse(results)
    versus = {c["a"] for c in analysis["contrasts"] if c["kind"] == "vs reference"}
    assert versus == {"teacher_nn"}, "the phase-2 arms stay out of phase 1's Holm family"
    assert analysis["winner"] == "teacher_nn", "phase 1's rule picks among phase 1's arms"
    phase2 = {c["kind"]: c for c in analysis["contrasts"] if c["kind"] in ("order", "vs best static")}
    assert phase2["order"]["label"] == "graded_curriculum − graded_shuffled"
    assert phase2["order"]["mean"] == pytest.approx(0.2)
    assert phase2["vs best static"]["b"] == "teacher_nn" and phase2["vs best static"]["mean"] == pytest.approx(0.5)
    assert analysis["exposure"]["graded_curriculum"] == analysis["exposure"]["graded_shuffled"] == \
        {"graded_easy": 0.5, "graded_hard": 0.5}
    text = judge.render(analysis, {"size": {"name": "judge2"}})
    assert "the order control first" in text and "graded_curriculum − graded_shuffled" in text


def test_the_phase_2_arms_mine_and_schedule_the_graded_bands_in_rounds_of_their_own(tmp_path: Path):
    from bench import experiment_arm as arm_module

    size = design.load_size("judge2")
    raw = {**design.load_setting("domain"), "_name": "domain"}
    config = design.build_config(raw, design.load_arm("graded_curriculum"), size, "tuned", 0, tmp_path / "g", "m")
    graded = ["graded_easy", "graded_medium", "graded_hard"]
    assert config.mining.bands[0] == "random" and config.mining.bands[-3:] == graded
    assert config.curriculum.mixture.bands == ["random", *graded], "only its own bands are scheduled"
    assert config.curriculum.difficulty == "teacher" and config.teacher is not None
    shuffled = design.build_config(raw, design.load_arm("graded_shuffled"), size, "tuned", 0, tmp_path / "s", "m")
    assert shuffled.curriculum.order == "shuffled" and shuffled.mining.bands == config.mining.bands
    nn = design.build_config(raw, design.load_arm("teacher_nn"), size, "tuned", 0, tmp_path / "n", "m")
    assert not set(graded) & set(nn.mining.bands), "phase 1's arms mine what they mined"
    assert arm_module.judge_variant(config) == arm_module.judge_variant(nn)  # same judge, rounds kept apart by name
    assert arm_module.encoder_dependent(config)


def test_judge_report_phase_3_picks_a_variant_only_beyond_the_tie_and_reads_it_against_phase_1s_winner(
        tmp_path: Path):
    from bench import judge_report as judge

    results = []
    for seed, e in enumerate([0.1, -0.1, 0.0, 0.2, -0.2]):
        results.append(_judge_result("in_batch", seed, 76.0 + e, 79.1 + e))
        results.append(_judge_result("mined_teacher", seed, 76.8 + e, 79.6 + e))
        results.append(_judge_result("mined_teacher_more", seed, 77.3 + e, 79.75 + e))  # +0.15 select: beyond tie
        results.append(_judge_result("mined_teacher_lr2", seed, 77.6 + e, 79.65 + e))  # +0.05 select: a tie
    analysis = judge.analyse(results)
    assert {c["a"] for c in analysis["contrasts"] if c["kind"] == "vs reference"} == {"mined_teacher"}, \
        "the phase-3 variants stay out of phase 1's Holm family"
    assert analysis["winner"] == "mined_teacher"
    # lr2 reports best, but the choice is the select half's: more beats mined_teacher by 0.15 > 0.1, lr2 by 0.05.
    assert analysis["phase3_winner"] == "mined_teacher_more"
    phase3 = {c["a"]: c for c in analysis["contrasts"] if c["kind"] == "phase 3"}
    assert phase3["mined_teacher_more"]["mean"] == pytest.approx(0.5)
    assert phase3["mined_teacher_lr2"]["mean"] == pytest.approx(0.8)
    assert all(c["p_holm"] is not None and c["b"] == "mined_teacher" for c in phase3.values())
    text = judge.render(analysis, {"size": {"name": "judge3"}})
    assert "not a registered size" not in text
    assert "Phase 3's choice by the select half" in text and "`mined_teacher_more`; its goal row: +1.30" in text
    tie = [r for r in results if r["arm"] != "mined_teacher_more"]
    assert judge.analyse(tie)["phase3_winner"] == "mined_teacher", "within the tie, phase 1's winner stays"
    assert judge.analyse([r for r in results if r["arm"] in ("in_batch", "mined_teacher")])["phase3_winner"] is None


def test_judge_report_reproduction_control_needs_the_same_anchor_order_and_a_close_score(tmp_path: Path):
    from bench import judge_report as judge

    record = _judge_result("mined_teacher", 0, 75.97, 80.2)
    for c in record["curve"]:
        c["anchor_order_sha256"] = f"o{c['round']}"
    same = json.loads(json.dumps(record))
    same["final"]["report"]["pairs"]["dev_pairs"] = 75.99
    assert judge.reproduction_check(record, same)["passed"]
    drifted = json.loads(json.dumps(same))
    drifted["final"]["report"]["pairs"]["dev_pairs"] = 75.80
    assert not judge.reproduction_check(record, drifted)["passed"]
    reordered = json.loads(json.dumps(same))
    reordered["curve"][1]["anchor_order_sha256"] = "other"
    check = judge.reproduction_check(record, reordered)
    assert not check["passed"] and not check["same_order"]
    # Read from <out>/reproduction/results beside the records, and said first in the section.
    for folder, res in ((tmp_path / "results", record), (tmp_path / "reproduction" / "results", drifted)):
        path = folder / "tuned" / "domain" / "mined_teacher" / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(res))
    checks = judge.reproductions(tmp_path)
    assert len(checks) == 1 and checks[0]["difference"] == pytest.approx(-0.17)
    analysis = {**judge.analyse([record]), "reproductions": checks}
    text = judge.render(analysis, {"size": {"name": "judge3"}})
    assert "Reproduction control" in text and "**FAILED**" in text
    assert text.index("Reproduction control") < text.index("| model |")


def test_the_phase_3_arms_differ_from_mined_teacher_only_in_their_registered_setting(tmp_path: Path):
    size = design.load_size("judge3")
    raw = {**design.load_setting("domain"), "_name": "domain"}
    built = {arm: design.build_config(raw, design.load_arm(arm), size, "tuned", 0, tmp_path / arm, "m")
             for arm in ("mined_teacher", "mined_teacher_more", "mined_teacher_lr2")}
    base, more, lr2 = built["mined_teacher"], built["mined_teacher_more"], built["mined_teacher_lr2"]
    assert (base.mining.params.positive_min_score, more.mining.params.positive_min_score) == (0.8, 0.7)
    assert (base.training.lr, lr2.training.lr) == (1.0e-5, 2.0e-5)
    assert more.training == base.training and lr2.mining.params == base.mining.params
    assert more.curriculum == base.curriculum == lr2.curriculum and more.teacher == base.teacher == lr2.teacher
    assert set(design.load_size("judge")["arms"]) < set(size["arms"]), "run into phase 1's folder, beside its arms"


def test_the_phase_6_arms_differ_from_mined_teacher_only_in_their_judge(tmp_path: Path):
    from bench import experiment_arm as arm_module

    size = design.load_size("judge6")
    raw = {**design.load_setting("domain"), "_name": "domain"}
    built = {arm: design.build_config(raw, design.load_arm(arm), size, "tuned", 0, tmp_path / arm, "m")
             for arm in ("mined_teacher", "mined_ensemble", "mined_teacher_strict")}
    base, both, strict = built["mined_teacher"], built["mined_ensemble"], built["mined_teacher_strict"]
    assert (base.mining.params.positive_judge, both.mining.params.positive_judge) == ("auto", "both")
    assert both.mining.params.model_copy(update={"positive_judge": "auto"}) == base.mining.params
    assert strict.mining.params.model_copy(update={"positive_min_score": 0.8}) == base.mining.params
    assert strict.mining.params.positive_min_score == 0.85
    assert base.training == both.training == strict.training and base.teacher == both.teacher == strict.teacher
    # The ensemble's student half is the arm's own encoder: its later rounds are re-mined, the teacher's are shared.
    assert arm_module.encoder_dependent(both) and not arm_module.encoder_dependent(base)
    assert not arm_module.encoder_dependent(strict)
    assert len({arm_module.judge_variant(c) for c in built.values()}) == 3
    assert set(design.load_size("judge3")["arms"]) < set(size["arms"]), "run into phase 1's folder, beside its arms"


def test_judge_report_phase_6_reads_its_own_variants_and_reproduction(tmp_path: Path):
    from bench import judge_report as judge

    results = []
    for seed, e in enumerate([0.1, -0.1, 0.0, 0.2, -0.2]):
        results.append(_judge_result("mined_teacher", seed, 76.8 + e, 79.6 + e))
        results.append(_judge_result("mined_teacher_more", seed, 77.3 + e, 79.75 + e))  # phase 3: beyond the tie
        results.append(_judge_result("mined_ensemble", seed, 77.1 + e, 79.65 + e))  # phase 6: a tie
        results.append(_judge_result("mined_teacher_strict", seed, 76.5 + e, 79.8 + e))  # phase 6: beyond the tie
    analysis = judge.analyse(results)
    assert analysis["phase3_winner"] == "mined_teacher_more" and analysis["phase6_winner"] == "mined_teacher_strict"
    phase6 = {c["a"]: c for c in analysis["contrasts"] if c["kind"] == "phase 6"}
    assert set(phase6) == {"mined_ensemble", "mined_teacher_strict"}, "each phase is its own Holm family"
    assert phase6["mined_ensemble"]["mean"] == pytest.approx(0.3)
    assert phase6["mined_teacher_strict"]["mean"] == pytest.approx(-0.3)
    assert judge.analyse([r for r in results if r["arm"] != "mined_teacher_strict"])["phase6_winner"] == \
        "mined_teacher", "within the tie, phase 1's winner stays"
    record = results[0]
    for c in record["curve"]:
        c["anchor_order_sha256"] = f"o{c['round']}"
    for folder in ("results", "reproduction6/results"):
        path = tmp_path / folder / "tuned" / "domain" / "mined_teacher" / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    checks = judge.reproductions(tmp_path)
    assert [(c["phase"], c["passed"]) for c in checks] == [(6, True)]
    text = judge.render({**analysis, "reproductions": checks}, {"size": {"name": "judge6"}})
    assert "not a registered size" not in text and "Reproduction control (phase 6, first)" in text
    assert "Phase 6's choice by the select half" in text and "`mined_teacher_strict`; its goal row: +0.50" in text
    assert text.index("Phase 3:") < text.index("Phase 6:")
    assert "sixth reading of the same report half" in text and text.count("sixth reading") == 1


def test_judge_report_phase_4_reads_the_teacher_in_a_labeled_run_against_the_recipe(tmp_path: Path):
    from bench import judge_report as judge

    def general(arm: str, seed: int, test: float) -> dict:
        res = _judge_result(arm, seed, 0.0, 80.0, sts=test)
        res["setting"] = "general"
        res["base"]["report"] = {"sts": {"test": 82.0}}
        res["curve"] = [{"round": r, "anchors_sha256": f"a{seed}{r}"} for r in range(2)]
        return res

    noise = [0.1, -0.1, 0.0, 0.2, -0.2]
    results = [general("static_nli", s, 83.0 + e) for s, e in enumerate(noise)]
    close = results + [general("static_nli_distill", s, 82.9 + e + 0.05 * (s % 2)) for s, e in enumerate(noise)]
    analysis = judge.analyse_general(close)
    c = analysis["contrast"]
    assert c["mean"] == pytest.approx(-0.08) and c["low"] > -judge.HARM
    assert "a loss of 0.5 or more ruled out" in c["reading"]
    assert analysis["pairing"] == {"groups": 10, "identical": 10}
    assert analysis["arms"]["static_nli"]["versus_start"]["mean"] == pytest.approx(1.0)
    worse = results + [general("static_nli_distill", s, 82.0 + e * 3) for s, e in enumerate(noise)]
    assert "not ruled out" in judge.analyse_general(worse)["contrast"]["reading"]
    text = judge.render_general(analysis, {"size": {"name": "judge4"}})
    assert text.startswith(judge.GENERAL_START) and "static_nli_distill − static_nli" in text
    assert "not the registered size" in judge.render_general(analysis, {"size": {"name": "judge4-smoke"}})
    assert judge.analyse_general([])["contrast"] is None


def test_the_phase_4_arm_is_the_recipe_with_the_teacher_and_distillation_only(tmp_path: Path):
    size = design.load_size("judge4")
    raw = {**design.load_setting("general"), "_name": "general"}
    recipe = design.build_config(raw, design.load_arm("static_nli"), size, "tuned", 0, tmp_path / "r", "m")
    distill = design.build_config(raw, design.load_arm("static_nli_distill"), size, "tuned", 0, tmp_path / "d", "m")
    assert recipe.teacher is None and distill.teacher is not None
    assert (distill.training.distill_kl, distill.training.distill_temperature) == (1.0, recipe.training.temperature)
    assert distill.mining.bands == recipe.mining.bands and distill.curriculum == recipe.curriculum
    assert distill.training.model_copy(update={"distill_kl": 0.0}) == recipe.training
    assert recipe.training.lr == 5.0e-5 and design.load_size("main")["training"]["tuned"]["general"] == {"lr": 5.0e-5}


def test_phase_5_reads_the_whole_corpus_against_phase_1s_pool_and_lets_the_select_half_choose(tmp_path: Path):
    from bench import judge_corpus_report as corpus

    noise = [0.1, -0.1, 0.0, 0.2, -0.2]
    pool = [_judge_result("mined_teacher", s, 77.0 + e, 80.0 + e) for s, e in enumerate(noise)]
    # The whole corpus: +0.3 on the report half in every seed (plus a little noise); select half +0.2 (above TIE).
    whole = [_judge_result("mined_teacher_all", s, 77.3 + e + 0.02 * (s % 2), 80.2 + e) for s, e in enumerate(noise)]
    for r in whole:
        r["curve"][0]["mined_positives_share"] = 0.2
    analysis = corpus.analyse(whole, pool + [_judge_result("in_batch", 0, 70.0, 70.0)])
    assert analysis["control"]["passed"] and analysis["chosen"] == "mined_teacher_all"
    rows = {r["arm"]: r for r in analysis["rows"]}
    assert rows["mined_teacher_all"]["mean"] == pytest.approx(1.308) and rows["mined_teacher_all"]["low"] > 0
    assert rows["mined_teacher_all"]["reading"].startswith("goal met")
    assert rows["mined_teacher"]["reading"] == "shown; not the select half's choice"  # no goal reading off the choice
    assert analysis["contrast"]["mean"] == pytest.approx(0.308) and analysis["contrast"]["reading"] == "better"
    assert analysis["arms"]["mined_teacher_all"]["mined_share"] == pytest.approx(0.2)
    # A select-half edge within TIE keeps the pool, however the report half looks.
    close = [_judge_result("mined_teacher_all", s, 79.0 + e, 80.05 + e) for s, e in enumerate(noise)]
    chosen = corpus.analyse(close, pool)
    assert chosen["chosen"] == "mined_teacher"
    assert {r["arm"]: r["reading"] for r in chosen["rows"]}["mined_teacher_all"].startswith("shown")
    # The control fails when this folder scores the start differently from phase 1's record; it is said first.
    moved = [dict(r, base={**r["base"], "dev": 79.5}) for r in whole]
    failed = corpus.analyse(moved, pool)
    assert not failed["control"]["passed"] and failed["control"]["diffs"]["select half"] == pytest.approx(0.5)
    text = corpus.render(failed, {"size": {"name": "judge5"}})
    assert text.startswith(corpus.START_MARKER) and "FAILED" in text.split("| model |")[0]
    assert "not the registered size" in corpus.render(analysis, {"size": {"name": "judge5-smoke"}})
    assert corpus.analyse([], pool)["start"] is None and "No results yet" in corpus.render(
        corpus.analyse([], pool), {"size": {"name": "judge5"}})
    # Without phase 1's records: the whole corpus alone, no choice, no contrast, the control not run.
    alone = corpus.analyse(whole, [])
    assert alone["control"] is None and alone["chosen"] is None and alone["contrast"] is None
    assert "Control: not run" in corpus.render(alone, {"size": {"name": "judge5"}})


def test_the_phase_5_size_is_phase_1s_winner_on_the_whole_corpus(tmp_path: Path):
    size, judge = design.load_size("judge5"), design.load_size("judge")
    assert "subsample" not in size and judge["subsample"] == {"domain": {"data.corpus": 12000}}
    for key in ("rounds", "steps_per_round", "batch_size", "training", "twitter_split", "teacher", "seeds"):
        assert size[key] == judge[key], key
    raw = {**design.load_setting("domain"), "_name": "domain"}
    whole = design.build_config(raw, design.load_arm("mined_teacher_all"), size, "tuned", 0, tmp_path / "w", "m")
    pool = design.build_config(raw, design.load_arm("mined_teacher"), judge, "tuned", 0, tmp_path / "p", "m")
    assert whole.mining == pool.mining and whole.training == pool.training and whole.curriculum == pool.curriculum
    assert whole.teacher == pool.teacher and whole.negatives == pool.negatives
    assert (REPO / size["phase1_results"] / "tuned" / "domain" / "mined_teacher").is_dir()
