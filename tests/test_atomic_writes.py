"""Atomic writers leave what a plain write would: the user's umask decides the modes, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from curriculum import CurriculumScheduler, parse_config, plot_schedule
from dataio.atomic import atomic_dir, atomic_write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_and_folders_get_the_modes_a_plain_write_would(tmp_path: Path, umask: int) -> None:
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    atomic_write_text(tmp_path / "atomic.txt", "x")
    with atomic_dir(tmp_path / "atomic_dir") as d:
        (d / "f").write_text("x")
    scheduler = CurriculumScheduler(parse_config({"total": 2}), state_path=tmp_path / "state.json")
    scheduler.start_round(0, {"random": 0.1, "nearest_neighbour": 0.7})
    scheduler.after_batch()
    scheduler.save()
    plot_schedule(scheduler.state, tmp_path / "curriculum.png")
    for written in ("state.json", "curriculum.png"):
        assert mode(tmp_path / written) == 0o666 & ~umask, written
    assert mode(tmp_path / "atomic.txt") == mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert mode(tmp_path / "atomic_dir") == mode(tmp_path / "plain_dir") == 0o777 & ~umask
