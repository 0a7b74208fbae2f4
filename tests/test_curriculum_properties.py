"""Property tests: pacing, band mixture and alpha keep their promises for any valid input."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from curriculum import (
    AlphaSchedule,
    CurriculumScheduler,
    Pacing,
    curriculum_mixture,
    expected_difficulty,
    order_bands,
    parse_config,
    static_mixture,
)

BANDS = ["random", "in_domain", "nli_contradiction", "nearest_neighbour"]
FAST = settings(max_examples=150, deadline=None)

difficulty = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
difficulties = st.dictionaries(st.sampled_from(BANDS), difficulty, min_size=1, max_size=4)
competence = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
floor = st.floats(min_value=0.0, max_value=0.9, allow_nan=False)
tilt = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@FAST
@given(kind=st.sampled_from(["linear", "root", "geometric", "step"]), total=st.integers(1, 500),
       c0=st.floats(min_value=0.01, max_value=1.0), power=st.floats(min_value=0.5, max_value=5.0),
       steps=st.integers(1, 10), t1=st.integers(0, 1000), t2=st.integers(0, 1000))
def test_pacing_in_range_monotone_and_reaches_one(kind, total, c0, power, steps, t1, t2):
    pacing = Pacing(kind=kind, total=total, c0=c0, power=power, steps=steps)
    lo, hi = sorted((t1, t2))
    assert c0 <= pacing(lo) <= pacing(hi) <= 1.0
    assert pacing(0) == pytest.approx(c0)
    assert pacing(total) == 1.0
    assert pacing(total + 7) == 1.0


def test_pacing_shapes_differ_as_documented():
    linear, root, geometric = (Pacing(kind=k, total=10, c0=0.1) for k in ("linear", "root", "geometric"))
    # root rises faster than linear early; geometric slower.
    assert root(2) > linear(2) > geometric(2)
    step = Pacing(kind="step", total=8, c0=0.2, steps=4)
    assert [step(t) for t in range(9)] == pytest.approx([0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0])


def test_unknown_pacing_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown pacing 'sqroot'"):
        Pacing(kind="sqroot")


@FAST
@given(difficulties=difficulties, c=competence, floor=floor, tilt=tilt)
def test_mixture_is_a_probability_vector(difficulties, c, floor, tilt):
    mixture = curriculum_mixture(difficulties, c, floor=floor, tilt=tilt)
    assert list(mixture) == order_bands(difficulties)
    assert all(p >= 0.0 for p in mixture.values())
    assert math.isclose(sum(mixture.values()), 1.0, abs_tol=1e-9)
    if "random" in mixture:
        assert mixture["random"] >= floor - 1e-12


@FAST
@given(difficulties=difficulties, c1=competence, c2=competence, floor=floor, tilt=tilt)
def test_expected_difficulty_never_decreases_as_competence_grows(difficulties, c1, c2, floor, tilt):
    lo, hi = sorted((c1, c2))
    easy = curriculum_mixture(difficulties, lo, floor=floor, tilt=tilt)
    hard = curriculum_mixture(difficulties, hi, floor=floor, tilt=tilt)
    assert expected_difficulty(hard, difficulties) >= expected_difficulty(easy, difficulties) - 1e-9
    # Stronger than the mean: the share of the k hardest bands never shrinks (stochastic dominance).
    order = list(easy)
    for k in range(1, len(order)):
        assert sum(hard[b] for b in order[k:]) >= sum(easy[b] for b in order[k:]) - 1e-9


@FAST
@given(difficulties=st.dictionaries(st.sampled_from(BANDS), difficulty, min_size=2, max_size=4), floor=floor)
def test_easiest_band_first_and_hardest_unlocked_last(difficulties, floor):
    assume(len(set(difficulties.values())) == len(difficulties))
    order = order_bands(difficulties)
    n = len(order)
    start = curriculum_mixture(difficulties, 0.5 / n, floor=floor)
    # Below the first threshold only the easiest band (and the random floor) can be drawn.
    assert all(start[b] == 0.0 for b in order[1:] if b != "random")
    assert start[order[0]] > 0.0
    # The hardest band is locked until competence passes (n-1)/n, then drawn (unless it holds the floor).
    if order[-1] != "random":
        assert curriculum_mixture(difficulties, (n - 1) / n, floor=floor)[order[-1]] == 0.0
    assert curriculum_mixture(difficulties, 1.0, floor=floor)[order[-1]] > 0.0


def test_tilt_weights_the_hardest_band_up_at_full_competence():
    d = {"random": 0.05, "in_domain": 0.3, "nli_contradiction": 0.45, "nearest_neighbour": 0.7}
    flat = curriculum_mixture(d, 1.0, floor=0.0, tilt=0.0)
    tilted = curriculum_mixture(d, 1.0, floor=0.0, tilt=1.0)
    assert flat == pytest.approx({b: 0.25 for b in d})
    assert tilted["nearest_neighbour"] == max(tilted.values())


@FAST
@given(difficulties=difficulties, missing=st.sampled_from(BANDS), c=competence)
def test_missing_band_weight_is_redistributed(difficulties, missing, c):
    with_nan = dict(difficulties, **{missing: float("nan")})  # a band with no rows has no difficulty
    present = {b: d for b, d in difficulties.items() if b != missing}
    assume(present)
    mixture = curriculum_mixture(with_nan, c)
    assert missing not in mixture
    assert math.isclose(sum(mixture.values()), 1.0, abs_tol=1e-9)


def test_mixture_order_comes_from_measurement_not_names():
    # Here NLI contradictions measured easier than random negatives: they are scheduled first.
    d = {"random": 0.4, "nli_contradiction": 0.1}
    assert order_bands(d) == ["nli_contradiction", "random"]
    assert curriculum_mixture(d, 0.2, floor=0.0)["nli_contradiction"] == 1.0


@FAST
@given(start=st.floats(-5, 5), end=st.floats(-5, 5), c0=st.floats(0.0, 0.99), c1=competence, c2=competence,
       band_start=st.floats(-5, 5), band_end=st.floats(-5, 5))
def test_alpha_within_bounds_and_follows_competence(start, end, c0, c1, c2, band_start, band_end):
    schedule = AlphaSchedule(start=start, end=end, c0=c0, per_band={"nearest_neighbour": (band_start, band_end)})
    lo, hi = sorted((c1, c2))
    for band, (a, b) in ((None, (start, end)), ("random", (start, end)), ("nearest_neighbour", (band_start, band_end))):
        v_lo, v_hi = schedule.value(lo, band), schedule.value(hi, band)
        assert min(a, b) <= v_lo <= max(a, b) and min(a, b) <= v_hi <= max(a, b)
        if b >= a:
            assert v_hi >= v_lo
        else:
            assert v_hi <= v_lo
        assert schedule.value(c0, band) == pytest.approx(a)
        assert schedule.value(1.0, band) == pytest.approx(b)


@FAST
@given(weights=st.dictionaries(st.sampled_from(BANDS), st.floats(0.01, 10.0), min_size=1, max_size=4),
       difficulties=difficulties, events=st.lists(st.sampled_from(["batch", "round"]), min_size=1, max_size=25),
       unit=st.sampled_from(["step", "round"]))
def test_static_schedule_is_constant(weights, difficulties, events, unit):
    assume(set(weights) & set(difficulties))
    config = parse_config({"mode": "static", "unit": unit, "total": 5, "static": {"weights": weights},
                           "alpha": {"start": 0.5, "end": 2.0}})
    scheduler = CurriculumScheduler(config)
    plan = scheduler.start_round(0, difficulties)
    expected = static_mixture(weights, difficulties)
    assert plan.mixture == pytest.approx(expected)
    assert math.isclose(sum(plan.mixture.values()), 1.0, abs_tol=1e-9)
    round_ = 0
    for event in events:
        if event == "batch":
            plan = scheduler.after_batch()
        else:
            scheduler.end_round(dev_metric=0.5, train_accuracy=0.5)
            round_ += 1
            plan = scheduler.start_round(round_, difficulties)
        assert plan.mixture == expected
        assert plan.alpha == {b: 2.0 for b in expected}
