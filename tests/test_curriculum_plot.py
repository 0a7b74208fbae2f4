"""The schedule plot is a real PNG showing the run's history."""

from __future__ import annotations

import struct

import pytest

from curriculum import CurriculumScheduler, parse_config, plot_schedule

D = {"random": 0.05, "in_domain": 0.3, "nli_contradiction": 0.45, "nearest_neighbour": 0.7}


def test_plot_writes_a_valid_png(tmp_path):
    scheduler = CurriculumScheduler(parse_config({"pacing": "linear", "unit": "step", "total": 30,
                                                 "alpha": {"start": 0.5, "end": 1.5}}))
    for r in range(3):
        scheduler.start_round(r, D)
        for _ in range(12):
            scheduler.after_batch()
        scheduler.end_round(0.5, 0.9)
    path = plot_schedule(scheduler.state, tmp_path / "plots" / "curriculum.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (800, 600)
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.shape[:2] == (600, 800)
    assert image.std() > 0.05  # something was drawn
    assert sorted(p.name for p in path.parent.iterdir()) == ["curriculum.png"]


def test_plot_needs_a_history(tmp_path):
    scheduler = CurriculumScheduler(parse_config({"total": 4}))
    with pytest.raises(ValueError, match="no schedule to plot"):
        plot_schedule(scheduler.state, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_step_axis_has_whole_step_ticks_on_a_short_run():
    """A 3-step run once showed ticks at 0.5, 1.5, ...: steps are whole numbers."""
    from curriculum.plot import schedule_figure

    scheduler = CurriculumScheduler(parse_config({"pacing": "linear", "unit": "step", "total": 3}))
    scheduler.start_round(0, D)
    for _ in range(3):
        scheduler.after_batch()
    fig = schedule_figure(scheduler.state)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
