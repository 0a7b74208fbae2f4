"""Config errors are one line and name the key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from curriculum import (
    ConfigError,
    CurriculumConfig,
    format_validation_error,
    parse_config,
)


@pytest.mark.parametrize("data, message", [
    ({"pacing": "sqroot"},
     "curriculum.pacing: unknown 'sqroot' (did you mean 'root'?); expected one of linear, root, geometric, step"),
    ({"mode": "curriculum"}, "curriculum.mode: unknown 'curriculum'; expected one of paced, adaptive, static"),
    ({"mixture": {"flor": 0.1}},
     "curriculum.mixture.flor: unknown key (did you mean 'floor'?); expected one of floor, floor_band, tilt, bands"),
    ({"pace": "root"}, ("curriculum.pace: unknown key (did you mean 'pacing'?); expected one of mode, pacing, unit, "
                        "total, order, shuffle_seed, c0, root_power, "
                        "step_count, mixture, alpha, adaptive, static, difficulty")),
    ({"mixture": {"bands": ["random", "nn"]}},
     "curriculum.mixture.bands[1]: unknown 'nn'; "
     "expected one of random, in_domain, nli_contradiction, nearest_neighbour, graded_easy, graded_medium, "
     "graded_hard"),
    ({"alpha": {"per_band": {"nearest_neighbour": {"start": 1.0}}}},
     "curriculum.alpha.per_band.nearest_neighbour.end: required key is missing"),
    ({"c0": 0}, "curriculum.c0: input should be greater than 0 (got 0)"),
    ({"mixture": {"floor": 1.0}}, "curriculum.mixture.floor: input should be less than 1 (got 1.0)"),
    ({"alpha": {"end": float("inf")}}, "curriculum.alpha.end: input should be a finite number (got inf)"),
    ({"mode": "adaptive", "unit": "step"},
     "curriculum.unit: adaptive mode decides once per round from the dev metric; set unit: round"),
    ({"mode": "static"}, "curriculum.static: static mode needs static.weights, e.g. {nearest_neighbour: 1.0}"),
    ({"mode": "static", "static": {"weights": {"random": 0.0}}},
     "curriculum.static.weights: at least one weight must be > 0"),
    ({"total": 0, "c0": 2}, ("curriculum.total: total must be >= 1 or 'auto' "
                             "(and 1 more: curriculum.c0)")),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_prefix_is_the_callers_section():
    with pytest.raises(ConfigError, match=r"^run\.curriculum\.pacing: unknown 'x'"):
        parse_config({"pacing": "x"}, prefix="run.curriculum")
    with pytest.raises(ConfigError, match="curriculum: expected a mapping of settings, got list"):
        parse_config([1, 2])


def test_formatter_works_for_other_models():
    class Other(BaseModel):
        size: int

    with pytest.raises(ValidationError) as caught:
        Other.model_validate({"size": "big"})
    assert format_validation_error(caught.value, "train", Other).startswith(
        "train.size: input should be a valid integer")


def test_defaults_and_yaml_like_input_are_valid():
    config = parse_config(None)
    assert config == CurriculumConfig()
    config = parse_config({"mode": "static", "static": {"weights": {"nearest_neighbour": 1}},
                           "alpha": {"per_band": {"nearest_neighbour": {"start": 0.5, "end": 2}}}})
    assert config.make_alpha().constant("nearest_neighbour") == 2.0
    assert config.make_pacing()(config.total_units) == 1.0


def test_auto_total_reaches_the_hardest_stage_on_the_runs_last_unit():
    per_round = parse_config({"unit": "round"})
    with pytest.raises(ConfigError, match="total is 'auto': resolve it"):
        per_round.make_pacing()
    assert per_round.resolved(rounds=4, steps_per_round=50).total == 3  # rounds 0..3, the last at competence 1
    per_step = parse_config({"unit": "step"}).resolved(rounds=2, steps_per_round=10)
    assert per_step.total == 19 and per_step.make_pacing()(19) == 1.0 > per_step.make_pacing()(18)
    assert parse_config({"total": 7}).resolved(rounds=2, steps_per_round=10).total == 7  # explicit stays
    shuffled = parse_config({"order": "shuffled"}).resolved(rounds=3, steps_per_round=5, seed=9)
    assert shuffled.shuffle_seed == 9 and sorted(shuffled.stage_order()) == [0, 1, 2]
    with pytest.raises(ConfigError, match="adaptive mode advances through the stages in order"):
        parse_config({"mode": "adaptive", "order": "shuffled"})
