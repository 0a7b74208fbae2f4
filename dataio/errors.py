"""Errors for what a user can fix, shared by every package; reading a JSON file into a pydantic model, and
one line for a pydantic validation error (`describe_validation_error`).

`UserError` is the one type the command line turns into a one-line message and exit code 2 (flows/cli/app.py):
bad input files (`InputError`), a damaged or incomplete triplet folder (`TripletDataError`), and the
curriculum's own kinds (`curriculum.errors`). Each message says what is wrong, where (file, line, column or
key) and what to do, on one line, and is raised before anything is written.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

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


class InputErrors(InputError):
    """Several problems found at once (every key of a config pydantic rejects, every input file that is
    missing): one line each, each naming its file, line and key. `problems` holds the lines; the first
    problem's file and line are the error's own."""

    def __init__(self, problems: list[InputError]) -> None:
        if not problems:
            raise ValueError("InputErrors needs at least one problem")
        self.problems = [str(p) for p in problems]
        first = problems[0]
        UserError.__init__(self, "\n".join(self.problems))
        self.path, self.line, self.row, self.column = first.path, first.line, first.row, first.column

    @staticmethod
    def of(problems: list[InputError]) -> InputError:
        """The one problem itself, or all of them."""
        return problems[0] if len(problems) == 1 else InputErrors(problems)


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


def describe_validation_error(err: ValidationError, prefix: str = "",
                              model: type[BaseModel] | None = None) -> tuple[str, str]:
    """(dotted key, what is wrong) of a pydantic error's first problem, naming how many more there are.

    Shared by the settings models of every package and flows' YAML config, which looks the key up to name
    the file's line.
    """
    errors = err.errors(include_url=False)
    key, message = describe_validation_errors(err, prefix, model)[0]
    if len(errors) > 1:
        others = ", ".join(_key(e["loc"], prefix) for e in errors[1:4])
        more = "" if len(errors) <= 4 else ", ..."
        message += f" (and {len(errors) - 1} more: {others}{more})"
    return key, " ".join(message.split())


def describe_validation_errors(err: ValidationError, prefix: str = "",
                               model: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """(dotted key, what is wrong) of every problem of a pydantic error, in pydantic's order, each with the
    closest key or value when one was likely meant (`unknown key (did you mean 'text'?)`)."""
    return [(_key(e["loc"], prefix), " ".join(_describe(e, model).split())) for e in err.errors(include_url=False)]


def _key(loc: tuple, prefix: str) -> str:
    key = prefix
    for part in loc:
        if part == "[key]" or (isinstance(part, str) and part.startswith(("function-", "tagged-union"))):
            continue  # pydantic's names for validators and unions, not keys a user wrote
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        closest = _closest(error["input"], choices)
        return f"unknown {_short(error['input'])}{closest}; expected one of {', '.join(choices)}"
    if kind == "extra_forbidden":
        fields = _fields_at(model, loc[:-1]) if model is not None else None
        return "unknown key" + (f"{_closest(loc[-1], fields)}; expected one of {', '.join(fields)}" if fields else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    message = str(error["msg"])
    return f"{message[:1].lower() + message[1:]} (got {_short(error['input'])})"


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The one of `choices` closest to `name` when it is close enough to have been meant (difflib's ratio of at
    least 0.6, case-insensitive), else None."""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'tweet'?)"` when `name` is close to one of `choices` (`closest`), else ""."""
    found = closest(name, choices)
    return f" (did you mean {found!r}?)" if found is not None else ""


def _closest(given: Any, choices: list[str]) -> str:
    return did_you_mean(given, choices) if isinstance(given, str) else ""


def _fields_at(model: Any, loc: tuple) -> list[str] | None:
    """Field names of the model reached by following `loc` from `model` (None if it leads elsewhere)."""
    current: Any = model
    for part in loc:
        current = _unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, Mapping):
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _unwrap_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [name for name, f in current.model_fields.items() if not f.exclude]
    return None


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
