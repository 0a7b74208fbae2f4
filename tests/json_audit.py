"""Stringly-typed values in a command's `--json` output: a boolean or a number written as a string (issue 26, item
4: `promoted` was the string "true" in `run --json`). The tests of each `--json` output pass it through `stringly`.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity)", re.IGNORECASE)
_BOOLEAN = {"true", "false", "yes", "no", "none", "null"}


def stringly(value: Any, allow: tuple[str, ...] = (), where: str = "$") -> list[str]:
    """Where `value` (parsed JSON) holds a string that reads as a boolean, null or a number, as `$.a.b[0]: 'true'`;
    keys named in `allow` (values that are strings by nature: environment variables, sentences) are skipped."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in allow:
                found += stringly(item, allow, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += stringly(item, allow, f"{where}[{i}]")
    elif isinstance(value, str) and (value.strip().lower() in _BOOLEAN or _NUMBER.fullmatch(value.strip())):
        found.append(f"{where}: {value!r}")
    return found
