"""The promotion gate and the tracking config section (no MLflow, no Prefect)."""

from __future__ import annotations

import pytest

from dataio.errors import InputError
from flows.registry.promotion import GateSettings, best_round, decide, metric_value
from flows.run.config import config_from_mapping
from simcse.evaluation import flat_metrics


def ev(select: float | None, guard: float | None = 80.0, report: float = 50.0) -> dict:
    return {"pairs": {"select": select, "report": report}, "sts": {"dev": guard}, "alignment": 0.3}


def test_the_dev_metric_must_beat_the_parent_by_more_than_the_margin() -> None:
    gate = GateSettings(min_gain=0.5)
    passed = decide(ev(71.0), ev(70.0), gate, "pairs/select", "version 2")
    assert passed.passed and passed.metric == "pairs/select" and (passed.candidate, passed.parent) == (71.0, 70.0)
    assert "70.00 -> 71.00 (+1.00" in passed.reason
    equal_gain = decide(ev(70.5), ev(70.0), gate, "pairs/select", "version 2")
    assert not equal_gain.passed and "not above the margin +0.50" in equal_gain.reason
    assert "version 2" in equal_gain.reason
    fell = decide(ev(69.0), ev(70.0), GateSettings(), "pairs/select")
    assert not fell.passed and "(-1.00)" in fell.reason
    # A negative margin tolerates a small fall (noise on a small dev set), not a large one.
    assert decide(ev(69.8), ev(70.0), GateSettings(min_gain=-0.5), "pairs/select").passed
    assert not decide(ev(69.0), ev(70.0), GateSettings(min_gain=-0.5), "pairs/select").passed


def test_the_guard_vetoes_a_model_that_forgets_and_reports_never_decide() -> None:
    gate = GateSettings(guard="sts/dev", guard_tolerance=1.0)
    ok = decide(ev(72.0, guard=79.5), ev(70.0, guard=80.0), gate, "pairs/select")
    assert ok.passed and "guard sts/dev 80.00 -> 79.50" in ok.reason
    forgot = decide(ev(72.0, guard=78.0), ev(70.0, guard=80.0), gate, "pairs/select")
    assert not forgot.passed and "guard sts/dev fell 2.00 points" in forgot.reason
    assert forgot.as_dict()["guard_candidate"] == 78.0
    # The report set may move any way: it is not read.
    assert decide(ev(71.0, report=0.0), ev(70.0, report=99.0), GateSettings(), "pairs/select").passed


def test_a_diverged_model_or_a_missing_metric_is_not_promoted() -> None:
    assert not decide(ev(None), ev(70.0), GateSettings(), "pairs/select").passed
    nan = {"pairs": {"select": float("nan")}}
    verdict = decide(nan, ev(70.0), GateSettings(), "pairs/select")
    assert not verdict.passed and "not a number" in verdict.reason
    assert not decide(ev(71.0), {}, GateSettings(), "pairs/select").passed
    assert not decide(ev(71.0), ev(70.0), GateSettings(), None).passed
    assert metric_value(nan, "pairs/select") is None and flat_metrics(nan) == {}
    assert flat_metrics(ev(1.0)) == {"pairs/select": 1.0, "pairs/report": 50.0, "sts/dev": 80.0, "alignment": 0.3}


def test_the_candidate_is_the_best_round_by_the_deciding_metric() -> None:
    rounds = {0: ev(70.0), 1: ev(72.0), 2: ev(71.0), 3: ev(None)}
    assert best_round(rounds, "pairs/select") == 1
    assert best_round({0: ev(72.0), 1: ev(72.0)}, "pairs/select") == 1, "a tie goes to the later round"
    assert best_round({0: ev(None)}, "pairs/select") is None


BASE = {"output_dir": "/tmp/x", "data": {"builtin": "python_docstrings"}}


def test_gate_settings_refuse_bad_metric_names_and_a_guard_that_is_the_deciding_metric() -> None:
    for bad, message in (({"metric": "ap/a"}, "sts/<file stem>"), ({"guard": "pairs"}, "pairs/<file stem>"),
                         ({"metric": "pairs/a", "guard": "pairs/a"}, "another metric"),
                         ({"guard_tolerance": -1}, "guard_tolerance")):
        with pytest.raises(ValueError) as err:
            GateSettings(**bad)
        assert message in str(err.value), (bad, str(err.value))


def test_tracking_and_retention_change_neither_the_fingerprint_nor_what_a_run_may_resume(tmp_path) -> None:
    from flows.run.rundir import RunDir

    plain = config_from_mapping({**BASE, "output_dir": str(tmp_path / "run")})
    tracked = config_from_mapping({**BASE, "output_dir": str(tmp_path / "run"),
                                   "tracking": {"enabled": True, "uri": str(tmp_path / "store")},
                                   "retention": {"keep": 3}})
    assert plain.fingerprint() == tracked.fingerprint()
    run = RunDir(tmp_path / "run")
    run.claim(plain)
    run.claim(tracked)  # no "different settings" refusal
    with pytest.raises(InputError, match="retention.keep"):
        config_from_mapping({**BASE, "output_dir": str(tmp_path / "run"), "retention": {"keep": 0}})
    relative = config_from_mapping({**BASE, "tracking": {"uri": "store"}}, base_dir=tmp_path)
    assert relative.tracking.uri == str((tmp_path / "store").resolve())
    server = config_from_mapping({**BASE, "tracking": {"uri": "http://127.0.0.1:5000"}}, base_dir=tmp_path)
    assert server.tracking.uri == "http://127.0.0.1:5000"
