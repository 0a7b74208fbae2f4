"""`mine` and `train` take their options' defaults and help from the settings models (MiningParams,
TrainConfig), so the command line, the run config and the library cannot disagree on a default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from flows.cli.app import main
from mining import cli as mining_cli
from mining.params import MiningParams
from simcse import cli as simcse_cli
from simcse.train_config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
MINE_FIELDS = {"num_negatives", "range_min", "unsupervised_range_min", "range_max", "relative_margin", "max_score",
               "sampling", "backend", "batch_size", "unsupervised_anchors"}
TRAIN_FIELDS = {"max_steps", "epochs", "batch_size", "lr", "temperature", "eval_every", "save_every", "seed", "devices",
                "precision"}


def _options(command: Callable[..., Any]) -> dict[str, Any]:
    """The click options of a typer command function, by parameter name."""
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)  # two commands: get_command gives the group, whatever typer's version
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command.__name__.replace("_", "-")].params}


@pytest.mark.parametrize("command, model, fields", [
    (mining_cli.mine_command, MiningParams, MINE_FIELDS),
    (simcse_cli.train_command, TrainConfig, TRAIN_FIELDS),
])
def test_every_option_of_a_setting_has_the_models_default_and_description(
        command: Callable[..., Any], model: type[BaseModel], fields: set[str]) -> None:
    options = _options(command)
    assert set(options) & set(model.model_fields) == fields  # every setting the command exposes is checked
    for name in fields:
        field = model.model_fields[name]
        assert options[name].default == field.default, name
        assert field.description and field.description.lower() in options[name].help.lower(), name


def test_the_defaults_of_the_command_line_build_the_models_defaults() -> None:
    mine = _options(mining_cli.mine_command)
    assert mining_cli.params_from_options(**{n: mine[n].default for n in MINE_FIELDS}) == MiningParams()
    train = _options(simcse_cli.train_command)
    assert simcse_cli.train_config_from_options(**{n: train[n].default for n in TRAIN_FIELDS}) == TrainConfig()
    # What the command line cannot spell as None.
    off = mining_cli.params_from_options(unsupervised_range_min=0, relative_margin=-1.0, max_score=2.0)
    assert (off.unsupervised_range_min, off.relative_margin, off.max_score) == (None, None, None)


def test_a_changed_model_default_is_the_command_lines_default() -> None:
    """One source of truth: the options read the fields when the CLI module loads."""
    code = ("from mining.params import MiningParams\n"
            "from simcse.train_config import TrainConfig\n"
            "MiningParams.model_fields['range_max'].default = 77\n"
            "TrainConfig.model_fields['lr'].default = 0.5\n"
            "import inspect, mining.cli, simcse.cli\n"
            "print(inspect.signature(mining.cli.mine_command).parameters['range_max'].default,\n"
            "      inspect.signature(simcse.cli.train_command).parameters['lr'].default.default)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["77", "0.5"]


@pytest.mark.parametrize("args, expected", [
    # --quiet: mine's log handler would otherwise hold this test's captured stderr after it is closed.
    (["mine", "--quiet", "--sampling", "best"], "mining option sampling: unknown 'best'; expected one of top, random"),
    (["mine", "--quiet", "--range-min", "9", "--range-max", "3"],
     "mining option range_min=9: must be smaller than range_max=3"),
    (["train", "--unsup", "corpus.txt", "--precision", "fp16"],
     "--precision 'fp16': unknown 'fp16' (did you mean 'bf16'?); expected one of auto, fp32, bf16"),
    (["train", "--unsup", "corpus.txt", "--lr", "0"], "--lr 0.0: input should be greater than 0"),
    (["train", "--unsup", "corpus.txt", "--steps", "0"], "--steps 0: input should be greater than or equal to 1"),
])
def test_a_bad_setting_on_the_command_line_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 args: list[str], expected: str) -> None:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert not out.exists()
