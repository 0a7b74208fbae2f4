"""How a delimited table file is split: a `.tsv` by tabs; a `.csv` by the delimiter an Excel `sep=X` first line
names, else the one sniffed from its first lines (`csv.Sniffer`, checked against the header, with a fallback
that parses the sample by each candidate delimiter). `dataio.tables` reads the rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

from dataio.table_files import read_text

# Delimiters a `.csv` file is sniffed for, in the order a tie is broken (Excel writes `;` where `,` is the
# decimal separator; `|` and tabs come from database exports).
CSV_DELIMITERS = (",", ";", "\t", "|")

def one_column_hint(available: Sequence[str]) -> str:
    """When the header was read as one column holding a delimiter: the delimiter it was most likely meant to
    be split by (a file named .tsv holding `;`-separated values, say)."""
    if len(available) != 1:
        return ""
    found = [d for d in CSV_DELIMITERS if d in available[0]]
    if not found:
        return ""
    shown = "tab" if found[0] == "\t" else repr(found[0])
    return (f" (the header was read as one column; its values look delimited by {shown}: name the file .csv, whose "
            f"delimiter is detected, or re-export it with the delimiter its name says)")


_EXCEL_SEP = re.compile(r"sep=(.)\r?")


def delimited_text(path: Path, kind: str, text: str | None = None) -> tuple[str, str, int]:
    """(the text to parse, its delimiter, lines skipped before the header): a `.tsv` is tab-delimited; a `.csv`
    says its delimiter in an Excel `sep=X` first line, else it is sniffed (`sniff_delimiter`). `text`: the
    file's text (or its head), when read already."""
    text = read_text(path) if text is None else text
    if kind == ".tsv":
        return text, "\t", 0
    first, _, rest = text.partition("\n")
    excel = _EXCEL_SEP.fullmatch(first)
    if excel is not None:
        return rest, excel.group(1), 1
    return text, sniff_delimiter(text), 0


def sniff_delimiter(text: str, sample_lines: int = 50) -> str:
    """The delimiter of CSV `text`: one of `CSV_DELIMITERS`, `,` when the header holds none of them (one column).

    `csv.Sniffer` guesses from the first lines; its guess is kept when it splits the header into two or more
    columns and every sampled row into as many fields. When it cannot decide (a quoted field holding the
    delimiter, a field holding commas, as in an Excel `;` export of headlines) the delimiter is the one that
    parses the sampled rows (with `csv`'s quoting rules) into the header's number of fields most often, and
    the most columns among those."""
    head = text[: 1 << 16]  # the sample's lines are in the first 64 KB unless they are very long
    sample = "".join(itertools.islice(io.StringIO(head if head.count("\n") > sample_lines else text, newline=""),
                                      sample_lines + 1))

    def widths(delimiter: str) -> list[int]:
        try:
            return [len(row) for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if row]
        except csv.Error:
            return []

    def fit(delimiter: str) -> tuple[float, int]:
        rows = widths(delimiter)
        if not rows or rows[0] < 2:
            return 0.0, 0
        body = rows[1:-1] if len(rows) > 2 else rows[1:]  # the last sampled line may be cut mid-record
        return (sum(w == rows[0] for w in body) / len(body) if body else 1.0), rows[0]

    try:
        guess = csv.Sniffer().sniff(sample, delimiters="".join(CSV_DELIMITERS)).delimiter
    except csv.Error:
        guess = None
    if guess is not None and fit(guess)[0] == 1.0:
        return guess
    scored = [(fit(d), -i, d) for i, d in enumerate(CSV_DELIMITERS)]
    (share, width), _, best = max(scored)
    return best if width >= 2 and share > 0.5 else ","
