"""Errors raised by the curriculum package.

`curriculum` imports nothing from `simcse`, so it has its own error types; both are `ValueError`
subclasses with one-line messages, so a CLI can turn them into exit code 2 the same way it treats
`simcse.errors.InputError`.
"""

from __future__ import annotations


class CurriculumError(ValueError):
    """Base class: a one-line message that says what is wrong and where."""


class ConfigError(CurriculumError):
    """A curriculum setting is invalid; the message names the key (`curriculum.pacing: ...`)."""


class TripletDataError(CurriculumError):
    """A mined round cannot be read as the triplet contract says; the message names the file."""


class StateError(CurriculumError):
    """A saved curriculum state does not fit the run it is restored into."""


def load_json_model(path, model, error: type[CurriculumError], hint: str):
    """Read `path` as JSON and validate it with pydantic `model`; one-line `error` naming the file and key."""
    import json

    from pydantic import ValidationError

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
