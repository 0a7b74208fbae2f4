"""The schedule worked out before any data: which mined bands a run's curriculum never trains on, and why."""

from __future__ import annotations

import pytest

from curriculum.config import CurriculumConfig
from curriculum.preview import preview_schedule

BANDS = ["random", "in_domain", "nearest_neighbour"]


def test_the_default_total_reaches_the_nearest_neighbour_band_in_a_two_round_run() -> None:
    """Issue 12: `--rounds 2` with the old fixed total (4) reached competence 0.51, nearest_neighbour 0.00."""
    preview = preview_schedule(CurriculumConfig().resolved(2, 2), BANDS, rounds=2, steps_per_round=2)
    assert preview.final_competence == pytest.approx(1.0)
    assert preview.rounds[-1].share["nearest_neighbour"] > 0.3
    assert preview.unused_bands(batch_size=32) == []


def test_a_total_beyond_the_run_names_the_band_and_the_competence_it_reaches() -> None:
    preview = preview_schedule(CurriculumConfig(total=4), BANDS, rounds=2, steps_per_round=2)
    assert preview.final_competence == pytest.approx(0.507, abs=1e-3)
    (unused,) = preview.unused_bands(batch_size=32)
    assert unused.band == "nearest_neighbour" and unused.cause == "pacing" and unused.expected_triplets == 0
    assert "competence reaches only 0.51" in unused.why and "curriculum.total 4 rounds" in unused.why
    assert "drawn only above 0.67" in unused.why


def test_adaptive_is_judged_on_its_best_case_and_says_so() -> None:
    preview = preview_schedule(CurriculumConfig(mode="adaptive", total=4), BANDS, rounds=2, steps_per_round=3)
    (unused,) = preview.unused_bands(batch_size=8)
    assert unused.band == "nearest_neighbour" and "even if every round advances" in unused.why


def test_bands_left_out_of_the_mixture_or_of_static_weights() -> None:
    left_out = CurriculumConfig(mixture={"bands": ["random", "nearest_neighbour"]}).resolved(3, 4)
    (unused,) = preview_schedule(left_out, BANDS, rounds=3, steps_per_round=4).unused_bands(batch_size=16)
    assert (unused.band, unused.cause) == ("in_domain", "mixture")
    static = CurriculumConfig(mode="static", static={"weights": {"nearest_neighbour": 1.0}})
    unused = preview_schedule(static, BANDS, rounds=2, steps_per_round=4).unused_bands(batch_size=16)
    assert {(u.band, u.cause) for u in unused} == {("random", "static"), ("in_domain", "static")}


def test_per_step_pacing_flags_a_band_that_opens_only_in_the_last_steps() -> None:
    """Per step, competence moves within a round: nearest_neighbour (band 3 of 3, open above 2/3) opens at
    step 89 of a 200-step schedule, so a 92-step run draws it a few times with tiny shares: under one triplet."""
    preview = preview_schedule(CurriculumConfig(unit="step", total=200), BANDS, rounds=1, steps_per_round=92)
    expected = preview.expected_triplets("nearest_neighbour", batch_size=4)
    assert 0 < expected < 1
    (unused,) = preview.unused_bands(batch_size=4)
    assert unused.band == "nearest_neighbour" and unused.why.endswith(f"~{expected:.1f} triplets expected over the run")
    assert preview_schedule(CurriculumConfig(unit="step", total=200), BANDS, 1, 140).unused_bands(4) == []


def test_a_static_mixture_of_bands_that_are_not_mined_cannot_be_scheduled() -> None:
    static = CurriculumConfig(mode="static", static={"weights": {"nli_contradiction": 1.0}})
    with pytest.raises(ValueError, match="static mixture bands nli_contradiction have no rows"):
        preview_schedule(static, BANDS, rounds=1, steps_per_round=1)
