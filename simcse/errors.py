"""Errors the command line turns into a one-line message and exit code 2."""

from __future__ import annotations


class InputError(ValueError):
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
