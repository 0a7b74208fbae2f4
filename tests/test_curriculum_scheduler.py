"""Scheduler: paced (per step / per round), adaptive advance-or-hold, state persistence."""

from __future__ import annotations

import json

import pytest

from curriculum import CurriculumScheduler, CurriculumState, StateError, parse_config

D = {"random": 0.05, "in_domain": 0.3, "nli_contradiction": 0.45, "nearest_neighbour": 0.7}


def adaptive(**over):
    return parse_config({"mode": "adaptive", "pacing": "linear", "total": 3,
                         "adaptive": {"accuracy_threshold": 0.8, **over}})


def test_paced_per_round_moves_one_stage_each_round(tmp_path):
    cfg = parse_config({"pacing": "linear", "total": 2, "c0": 0.5, "alpha": {"start": 0.0, "end": 1.0}})
    s = CurriculumScheduler(cfg, state_path=tmp_path / "state.json")
    competences = []
    for r in range(4):
        plan = s.start_round(r, D)
        competences.append(plan.competence)
        for _ in range(3):
            assert s.after_batch() == plan  # per-round pacing: batches do not move it
        s.end_round(dev_metric=0.1 * r, train_accuracy=0.0)
    assert competences == [0.5, 0.75, 1.0, 1.0]
    assert s.plan.alpha == {b: 1.0 for b in D}
    assert [e.event for e in s.state.history].count("advance") == 2


def test_paced_per_step_moves_with_every_batch():
    cfg = parse_config({"pacing": "linear", "unit": "step", "total": 10, "c0": 0.1})
    s = CurriculumScheduler(cfg)
    s.start_round(0, D)
    seen = [s.plan.competence]
    for _ in range(12):
        seen.append(s.after_batch().competence)
    assert seen == sorted(seen) and seen[0] == 0.1 and seen[10] == seen[12] == 1.0
    decision = s.end_round(dev_metric=0.5, train_accuracy=0.9)
    assert not decision.advanced and s.state.step == 12


def test_adaptive_advances_only_when_dev_holds_and_accuracy_passes():
    s = CurriculumScheduler(adaptive())
    s.start_round(0, D)
    assert s.end_round(dev_metric=0.70, train_accuracy=0.85).advanced  # first round: nothing to fall from
    s.start_round(1, D)
    d = s.end_round(dev_metric=0.69, train_accuracy=0.95)
    assert not d.advanced and "fell" in d.reason and d.stage == 1
    s.start_round(2, D)
    d = s.end_round(dev_metric=0.72, train_accuracy=0.5)
    assert not d.advanced and "train accuracy 0.500 < 0.8" in d.reason
    s.start_round(3, D)
    assert s.end_round(dev_metric=0.72, train_accuracy=0.8).advanced  # equal dev counts as "did not fall"
    assert s.state.stage == 2
    assert [e.event for e in s.state.history if e.event != "start_round"] == ["advance", "hold", "hold", "advance"]


def test_adaptive_round_zero_is_compared_with_the_starting_model():
    """Without a baseline round 0 always advanced, even when training made the model worse."""
    s = CurriculumScheduler(adaptive(tolerance=0.2))
    s.set_baseline(77.62)
    s.start_round(0, D)
    d = s.end_round(dev_metric=76.24, train_accuracy=1.0)
    assert not d.advanced and "fell below previous 77.6200" in d.reason and s.state.stage == 0
    best = CurriculumScheduler(adaptive(compare_to="best"))
    best.set_baseline(0.8)
    best.start_round(0, D)
    assert not best.end_round(dev_metric=0.79, train_accuracy=0.9).advanced
    assert best.state.baseline_dev_metric == 0.8


def test_per_step_pacing_reaches_competence_one_on_the_last_step():
    rounds, steps = 2, 5
    s = CurriculumScheduler(parse_config({"pacing": "root", "unit": "step", "c0": 0.2}).resolved(rounds, steps))
    seen = []
    for r in range(rounds):
        plan = s.start_round(r, D)
        for _ in range(steps):
            seen.append(plan.competence)  # the competence the batch is drawn with
            plan = s.after_batch()
        s.end_round(0.5, 0.9)
    assert seen[0] == 0.2 and seen[-1] == 1.0 and seen == sorted(seen) and seen[-2] < 1.0


@pytest.mark.parametrize("order", ["hard_to_easy", "shuffled"])
def test_reversed_and_shuffled_orders_visit_the_same_stages(order):
    """The anti-curriculum and the shuffled control train on the same multiset of (mixture, alpha) plans as
    the curriculum: only their order differs."""
    def plans(o):
        cfg = parse_config({"pacing": "linear", "unit": "step", "c0": 0.2, "order": o,
                            "alpha": {"start": 0.5, "end": 1.0}}).resolved(rounds=2, steps_per_round=6, seed=3)
        s = CurriculumScheduler(cfg)
        out = []
        for r in range(2):
            plan = s.start_round(r, D)
            for _ in range(6):
                out.append((round(plan.competence, 9), tuple(sorted(plan.mixture.items())),
                            tuple(sorted(plan.alpha.items()))))
                plan = s.after_batch()
            s.end_round(0.5, 0.9)
        return out

    forward, other = plans("easy_to_hard"), plans(order)
    assert sorted(forward) == sorted(other) and forward != other
    if order == "hard_to_easy":
        assert other == forward[::-1]


def test_adaptive_tolerance_compare_to_best_and_max_holds():
    s = CurriculumScheduler(adaptive(tolerance=0.02, compare_to="best", max_holds=1))
    s.start_round(0, D)
    s.end_round(0.80, 0.9)
    s.start_round(1, D)
    assert s.end_round(0.79, 0.9).advanced  # within tolerance of the best
    s.start_round(2, D)
    assert not s.end_round(0.77, 0.9).advanced  # more than 0.02 below best (0.80)
    s.start_round(3, D)
    d = s.end_round(0.775, 0.9)  # previous would pass (0.775 > 0.77 - 0.02), best does not; second hold is forced
    assert d.advanced and d.reason.startswith("forced after 1 holds")


def test_adaptive_needs_both_metrics():
    s = CurriculumScheduler(adaptive())
    s.start_round(0, D)
    with pytest.raises(ValueError, match="needs both dev_metric and train_accuracy"):
        s.end_round(dev_metric=0.5)
    with pytest.raises(ValueError, match="finite"):
        s.end_round(dev_metric=float("nan"), train_accuracy=0.5)


def test_rounds_must_be_started_ended_and_move_forward():
    s = CurriculumScheduler(parse_config({"total": 4}))
    with pytest.raises(StateError, match="outside a round"):
        s.after_batch()
    s.start_round(2, D)
    with pytest.raises(StateError, match="round 2 was started but not ended"):
        s.start_round(3, D)
    s.end_round()
    with pytest.raises(StateError, match="not after the last round"):
        s.start_round(2, D)


def test_empty_band_is_left_out_and_its_weight_redistributed():
    s = CurriculumScheduler(parse_config({"total": 1}))
    s.start_round(0, dict(D, nli_contradiction=float("nan")))
    s.end_round()
    plan = s.start_round(1, dict(D, nli_contradiction=float("nan")))
    assert set(plan.mixture) == {"random", "in_domain", "nearest_neighbour"}
    assert sum(plan.mixture.values()) == pytest.approx(1.0)


def test_state_is_saved_after_each_change_and_restores_exactly(tmp_path):
    path = tmp_path / "run" / "state.json"
    cfg = parse_config({"pacing": "root", "unit": "step", "total": 50, "alpha": {"start": 0.2, "end": 1.0}})
    s = CurriculumScheduler.resume(cfg, path)
    s.start_round(0, D)
    on_disk = CurriculumState.load(path)
    assert on_disk.round_open and on_disk.round == 0
    for i in range(7):
        s.after_batch({"position": i})
        assert CurriculumState.load(path).step == i + 1  # written at every batch
    restored = CurriculumScheduler.resume(cfg, path)
    assert restored.state == s.state
    assert restored.plan == s.plan
    assert restored.sampler_state == {"position": 6}
    assert restored.start_round(0, D) == s.plan  # resuming the open round keeps its position
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left behind
    json.loads(path.read_text())  # plain JSON


def test_resume_refuses_other_settings_or_a_remined_round(tmp_path):
    path = tmp_path / "state.json"
    s = CurriculumScheduler.resume(parse_config({"total": 3}), path)
    s.start_round(0, D)
    with pytest.raises(StateError, match=r"different settings \(total\)"):
        CurriculumScheduler.resume(parse_config({"total": 4}), path)
    with pytest.raises(StateError, match="statistics changed"):
        CurriculumScheduler.resume(parse_config({"total": 3}), path).start_round(0, dict(D, random=0.06))


def test_corrupt_state_file_names_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match=r"state\.json: not valid JSON"):
        CurriculumScheduler.resume(parse_config({"total": 4}), path)
    path.write_text(json.dumps({"stage": -1}))
    with pytest.raises(StateError, match=r"state\.json: key 'stage'"):
        CurriculumState.load(path)
