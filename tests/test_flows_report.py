"""The run report's plots on hand-made rows: a y axis that does not turn a small change into a cliff."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.rounds import report_plots as report


def test_y_limits_keep_a_minimum_span_centred_on_the_values():
    assert report.y_limits([40.0, 40.2], 5.0) == pytest.approx((37.6, 42.6))
    assert report.y_limits([10.0, 30.0], 5.0) == pytest.approx((9.0, 31.0))  # wide enough: 5% padding only
    assert report.y_limits([None, float("nan")], 5.0) is None


def test_metrics_plot_draws_a_small_ap_change_on_at_least_five_points(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report, "_save_figure", lambda fig, path: figures.append(fig) or path)
    base = {"round": "base", "evaluation": {"pairs": {"dev": 61.3}, "alignment": 0.301, "uniformity": -2.5}}
    rounds = [{"round": 0, "evaluation": {"pairs": {"dev": 61.5}, "alignment": 0.302, "uniformity": -2.501}}]
    report.plot_metrics(base, rounds, Path(tmp_path / "metrics.png"))
    top, middle, bottom = figures[0].axes
    low, high = top.get_ylim()
    assert high - low == pytest.approx(5.0) and low < 61.3 and high > 61.5  # auto-scaling gave ~0.2
    assert "5 points" in top.get_ylabel()
    for ax in (middle, bottom):
        assert ax.get_ylim()[1] - ax.get_ylim()[0] == pytest.approx(0.1)
