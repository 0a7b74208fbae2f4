"""Errors for what a user can fix, shared by every package, and reading a JSON file into a pydantic model.

`UserError` is the one type the command line turns into a one-line message and exit code 2 (flows/cli.py):
bad input files (`InputError`), a damaged or incomplete triplet folder (`TripletDataError`), and the
curriculum's own kinds (`curriculum.errors`). Each message says what is wrong, where (file, line, column or
key) and what to do, on one line, and is raised before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError


class UserError(ValueError):
    """Something the user can fix: a one-line message naming where the problem is and what to do."""


class InputError(UserError):
    """Bad user input: the message names the file, line (or row) and column, and what to do.

    Raised before anything is written, so a failed run leaves no partial output.
    """

    def __init__(self, message: str, *, path: object | None = None, line: int | None = None,
                 row: int | None = None, column: str | None = None) -> None:
        where = []
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        head = str(path) if path is not None else ""
        if where:
            head = f"{head}: {', '.join(where)}" if head else ", ".join(where)
        one_line = " ".join(str(message).split())
        super().__init__(f"{head}: {one_line}" if head else one_line)
        self.path, self.line, self.row, self.column = path, line, row, column


class TripletDataError(UserError):
    """A triplet folder cannot be read as the contract says (`dataio.triplets`); the message names the file."""


Model = TypeVar("Model", bound=BaseModel)


def load_json_model(path: Path, model: type[Model], error: type[UserError], hint: str) -> Model:
    """Read `path` as JSON and validate it with pydantic `model`; a one-line `error` naming the file and key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not valid JSON ({err}); {hint}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise error(f"{path}: key '{key}': {first['msg']}; {hint}") from None
