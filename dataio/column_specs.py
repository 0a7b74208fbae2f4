"""Which file column each canonical column is read from, decided before a file is read: the column maps a command
line gives (`--columns KEY=COLUMN`, as a config's `columns:`), and the header-only check `validate` runs on every
input (`check_columns`, deciding as `dataio.tables.read_columns` does).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dataio.errors import InputError, did_you_mean
from dataio.tables import COLUMN_ALIASES, INPUT_COLUMNS, read_header, resolve_columns


def parse_column_specs(specs: Sequence[str], keys: Sequence[str], option: str = "--columns") -> list[tuple[str, str]]:
    """(key, file column) pairs from command-line values, written as a config's `columns:`: `KEY=COLUMN[,...]` or a
    YAML flow mapping `{KEY: COLUMN, ...}`, repeatable. A key may come more than once (`sentence1=q1` for one
    file, `sentence1=headline_1` for another: `column_maps` gives each file the entries whose column it has); a
    key not in `keys` is an error naming the closest."""
    import yaml

    out: list[tuple[str, str]] = []
    for spec in specs:
        text = spec.strip()
        if text.startswith("{"):
            try:
                mapping = yaml.safe_load(text)
            except yaml.YAMLError:
                mapping = None
            if not isinstance(mapping, dict):
                raise InputError(f"{option} {spec!r}: not a mapping; write KEY=COLUMN[,KEY=COLUMN...] or "
                                 f"{{KEY: COLUMN, ...}}")
            pairs = [(str(k), str(v)) for k, v in mapping.items()]
        else:
            pairs = []
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, value = part.partition("=")
                if not sep or not key.strip() or not value.strip():
                    raise InputError(f"{option} {spec!r}: {part!r} is not KEY=COLUMN (e.g. text=headline)")
                pairs.append((key.strip(), value.strip()))
        for key, value in pairs:
            if key not in keys:
                raise InputError(f"{option}: unknown key {key!r}{did_you_mean(key, keys)}; the keys are those of a "
                                 f"config's columns: {', '.join(keys)}")
            if (key, value) not in out:
                out.append((key, value))
    return out


def columns_for(header: Sequence[str], given: Sequence[tuple[str, str]], keys: Iterable[str] | None = None,
                where: object = None, option: str = "--columns") -> dict[str, str]:
    """The column map of one file from a command's (key, column) pairs: those whose column the file has (and
    whose key is in `keys`); two columns of the file given for one key are an error naming the file."""
    keys = None if keys is None else set(keys)
    out: dict[str, str] = {}
    for key, column in given:
        if column in header and (keys is None or key in keys):
            if key in out and out[key] != column:
                raise InputError(f"{option}: {key}={out[key]} and {key}={column} both name columns of this file; "
                                 f"give one", path=where)
            out[key] = column
    return out


def column_maps(files: Sequence[str | os.PathLike], kind: str, given: Sequence[tuple[str, str]]) \
        -> list[dict[str, str]]:
    """The column map of each file of `kind` (`INPUT_COLUMNS`) from a command's (key, column) pairs
    (`parse_column_specs`): the pairs of that kind's keys whose column the file has, so one `--columns
    sentence1=q1` serves every file holding `q1`."""
    keys = set(INPUT_COLUMNS[kind][0]) | set(INPUT_COLUMNS[kind][1])
    return [columns_for(read_header(f), given, keys, where=f) for f in files]


def unused_columns(given: Sequence[tuple[str, str]], used: Sequence[Mapping[str, str]],
                   files: Sequence[str | os.PathLike], option: str = "--columns") -> None:
    """InputError for the first (key, column) pair no file's map took, naming the closest column of the files."""
    taken = {(k, v) for m in used for k, v in m.items()}
    every = list(dict.fromkeys(h for f in files for h in read_header(f)))
    for key, column in given:
        if (key, column) not in taken:
            where = (f"no file given has a column {column!r}{did_you_mean(column, every)}" if column not in every
                     else f"no file that takes a {key!r} column has the column {column!r}")
            raise InputError(f"{option} {key}={column}: {where}; the files' columns: {', '.join(every)}")


def check_columns(path: str | os.PathLike, kind: str,
                  columns: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The file column each column of an input of `kind` (`INPUT_COLUMNS`) is read from, decided from the header
    alone, as `read_columns` decides it; a column `columns` names is required, as its loader requires it. The
    check `validate` runs on every input before reading any, so that every column problem is reported at once;
    InputError as the loader would raise it."""
    canonical, optional = INPUT_COLUMNS[kind]
    path = Path(path)
    header = read_header(path)
    if not header:  # .txt: one unnamed column, read under any name
        return {}
    given = {k: v for k, v in (columns or {}).items() if v}
    required = [*canonical, *(c for c in optional if c in given)]
    rest = [c for c in optional if c not in given]
    names = {c: given.get(c, c) for c in [*required, *rest]}
    aliases = {names[c]: COLUMN_ALIASES.get(c, ()) for c in names if c not in given}
    found = resolve_columns(path, header, [names[c] for c in required], [names[c] for c in rest], aliases)
    return {c: found[names[c]] for c in names if names[c] in found}
