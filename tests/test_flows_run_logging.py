"""The step functions log with Python's logging; `flows.run.progress.forwarded` makes their lines a run's (the
Prefect flow's or task's logger, the experiment harness's): each line once, to the innermost receiver, and the
loggers as they were afterwards."""

from __future__ import annotations

import logging

from flows.run.progress import forwarded


class _Receiver:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, fmt: str, *args: object) -> None:
        self.lines.append((level, fmt % args))


def test_a_nested_block_sends_each_line_once_to_the_innermost_receiver_and_gives_the_outer_one_back() -> None:
    steps = logging.getLogger("flows")
    before = (steps.level, steps.propagate, list(steps.handlers))
    flow, task = _Receiver(), _Receiver()
    with forwarded(("flows",), flow):
        logging.getLogger("flows").info("checking the inputs")
        with forwarded(("flows",), task):
            logging.getLogger("flows.rounds.train_step").info("round %d trained", 0)  # a child logger too
            steps.warning("a warning")
        steps.info("report: %s", "r.md")
    assert flow.lines == [(logging.INFO, "checking the inputs"), (logging.INFO, "report: r.md")]
    assert task.lines == [(logging.INFO, "round 0 trained"), (logging.WARNING, "a warning")]
    assert (steps.level, steps.propagate, list(steps.handlers)) == before
    steps.info("after the run")  # below the logger's own level again: nobody receives it
    assert len(flow.lines) == 2 and len(task.lines) == 2


def test_forwarding_stops_when_the_block_fails() -> None:
    steps = logging.getLogger("flows")
    before = (steps.level, steps.propagate, list(steps.handlers))
    receiver = _Receiver()
    try:
        with forwarded(("flows",), receiver):
            raise RuntimeError("a step failed")
    except RuntimeError:
        pass
    assert (steps.level, steps.propagate, list(steps.handlers)) == before
