"""Reading the tables users hand over: txt, csv, tsv, jsonl, json, parquet and saved Hugging Face datasets.

One reader for every input the project takes (training corpora, NLI triplets, STS and labeled-pair files,
mining corpora, excluded pairs), so every bad file gets the same kind of error: one line naming the file, the
line (or row) and the column, raised before anything is written.

Files as teams export them: a `.csv` may be delimited by `,`, `;`, a tab or `|` (sniffed from its first lines
with `csv.Sniffer`, checked against the header; an Excel `sep=;` first line is honoured: `dataio.csv_dialect`),
start with a UTF-8 BOM and end its lines with CRLF; the text formats may be gzipped (`.csv.gz`, `.tsv.gz`,
`.jsonl.gz`, `.json.gz`, `.txt.gz`); a `.json` file is a list of records (one object per row; JSON Lines under a
`.json` name are read as such).

Which files a path names (a folder of tables, symbolic-link loops), a format by its name, and a file's bytes read
within the line-length limit are `dataio.table_files`; the evaluation files (STS, labeled pairs) are read by
`dataio.eval_sets`; command-line column maps (`--columns KEY=COLUMN`) and the header-only column check `validate`
runs are `dataio.column_specs`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataio.csv_dialect import delimited_text, one_column_hint
from dataio.errors import InputError, did_you_mean
from dataio.table_files import (
    COMPRESSED,
    DELIMITED,
    MAX_LINE_BYTES,
    RECORD_SUFFIXES,
    SUPPORTED,
    TEXT_SUFFIXES,
    check_exists,
    check_line_lengths,
    is_hf_dataset,
    read_text,
    table_format,
)

csv.field_size_limit(MAX_LINE_BYTES)  # a quoted field spread over many short lines: the same limit

# The other names each canonical column is read under when the file has no column of the canonical name
# (SimCSE's, NLI's and sentence-transformers' conventions), tried in this order. One table for every loader
# (training, mining, flows), so a file one command reads, the others read too. A column named by the user
# (`columns:` in a config, `--text-column` and the like) is read exactly, without these.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("sentence", "sent0", "anchor", "sentence1"),
    "anchor": ("sent0", "premise", "sentence1", "query"),
    "positive": ("sent1", "entailment", "sentence2"),
    "negative": ("hard_neg", "contradiction"),
}


# The columns of each kind of input (required, optional), by canonical name: what its loader reads
# (mining.corpus.load_corpus, read_sts, read_labeled_pairs) and what `validate` checks every file for first.
INPUT_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "corpus": (("text",), ("id", "domain")),
    "pairs": (("anchor", "positive"), ("label",)),
    "nli": (("anchor", "positive", "negative"), ()),
    "sts": (("sentence1", "sentence2", "score"), ()),
    "labeled_pairs": (("sentence1", "sentence2", "label"), ()),
}


def accepted_names(column: str) -> str:
    """`'anchor, else sent0, premise, sentence1 or query'`: the names `column` is read under, for help texts."""
    others = COLUMN_ALIASES.get(column, ())
    if not others:
        return column
    tail = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} or {others[-1]}"
    return f"{column}, else {tail}"


def data_dir() -> Path:
    """The shared data folder: $SIMCSE_DATA_DIR, else `../shared/data` beside the repository."""
    env = os.environ.get("SIMCSE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass
class Table:
    """Columns read from one file, with each row's source location kept for later error messages."""

    path: Path
    columns: dict[str, list[Any]]
    locations: list[int]  # 1-based line (text formats) or row (parquet / HF datasets) of each row
    location_kind: str = "line"
    renamed: dict[str, str] = field(default_factory=dict)  # canonical name -> name found in the file

    def __len__(self) -> int:
        return len(self.locations)

    def error(self, index: int, column: str | None, message: str) -> InputError:
        """An InputError pointing at row `index` (0-based) of this table."""
        loc = self.locations[index]
        col = self.renamed.get(column, column) if column else None
        if self.location_kind == "line":
            return InputError(message, path=self.path, line=loc, column=col)
        return InputError(message, path=self.path, row=loc, column=col)


def resolve_columns(path: Path, available: Sequence[str], wanted: Sequence[str], optional: Sequence[str],
                     aliases: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Map each canonical column to the name it has in the file (exact name first, then aliases)."""
    aliases = aliases or {}
    found: dict[str, str] = {}
    for name in list(wanted) + list(optional):
        for candidate in [name, *aliases.get(name, ())]:
            if candidate in available:
                found[name] = candidate
                break
        else:
            if name in wanted:
                accepted = " or ".join(repr(c) for c in [name, *aliases.get(name, ())])
                raise InputError(f"missing column {accepted}{did_you_mean(name, available)}; the file has "
                                 f"{list(available)}{one_column_hint(available)}; name the file's column for it: "
                                 f"`columns:` in a config, --columns on init and evaluate, --*-column on mine",
                                 path=path, column=name)
    return found


def read_table(path: str | os.PathLike, columns: Sequence[str], optional: Sequence[str] = (),
               aliases: Mapping[str, Sequence[str]] | None = None) -> Table:
    """Read the named columns of a table file; values stay as read (str for text formats).

    `.txt` files are one value per line for the first requested column (blank lines kept as "", so callers
    can count what they drop). `aliases` maps a canonical name to alternative names, e.g.
    `{"anchor": ["sent0"]}`; the returned columns use the canonical names.
    """
    path = Path(path)
    check_exists(path)
    if is_hf_dataset(path):
        return _read_hf(path, columns, optional, aliases)
    if path.is_dir():
        raise InputError(f"a folder that is not a saved Hugging Face dataset; expected {SUPPORTED}", path=path)
    kind = table_format(path)
    if kind in TEXT_SUFFIXES:
        if len(columns) != 1:
            raise InputError(f"a .txt file holds one column, but {list(columns)} are needed; use .csv, .tsv, "
                             f".jsonl, .json or .parquet with those columns", path=path)
        lines = read_text(path).splitlines()
        if not lines:
            raise InputError("the file is empty", path=path)
        return Table(path, {columns[0]: [ln.strip() for ln in lines]}, list(range(1, len(lines) + 1)))
    if kind in DELIMITED:
        return _read_delimited(path, kind, columns, optional, aliases)
    if kind == ".jsonl":
        return _records_table(path, *_jsonl_records(path), columns, optional, aliases)
    if kind == ".json":
        return _records_table(path, *_json_records(path), columns, optional, aliases)
    if kind == ".parquet":
        return _read_parquet(path, columns, optional, aliases)
    raise InputError(f"unsupported file type '{path.suffix}'; expected {SUPPORTED}", path=path)


def _read_delimited(path: Path, kind: str, columns: Sequence[str], optional: Sequence[str],
                    aliases: Mapping[str, Sequence[str]] | None) -> Table:
    text, delimiter, skipped = delimited_text(path, kind)
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the file is empty; expected a header line", path=path, line=1 + skipped) from None
    except csv.Error as exc:
        raise InputError(f"malformed header ({exc}); delimiter {shown}", path=path, line=1 + skipped) from None
    header = [h.strip() for h in header]
    found = resolve_columns(path, header, columns, optional, aliases)
    index = {name: header.index(src) for name, src in found.items()}
    out: dict[str, list[Any]] = {name: [] for name in found}
    locations: list[int] = []
    start = reader.line_num + 1
    try:
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                start = reader.line_num + 1
                continue
            if len(row) < len(header):
                raise InputError(f"{len(row)} fields where the header has {len(header)}; check the quoting and "
                                 f"the delimiter ({shown})", path=path, line=start + skipped,
                                 column=header[len(row)])
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                hint = (" (a file of one sentence a line reads as is when named .txt)" if len(header) == 1 else "")
                raise InputError(f"{len(row)} fields where the header has {len(header)}: a field holds the delimiter "
                                 f"({shown}) unquoted; quote that field{hint}", path=path, line=start + skipped)
            for name, i in index.items():
                out[name].append(row[i])
            locations.append(start + skipped)
            start = reader.line_num + 1
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):  # a quoted field over many lines (each within the limit)
            raise InputError(f"a field over the {MAX_LINE_BYTES:,}-character limit of a field; a row is a sentence "
                             f"or a short passage: check the quoting (an unclosed quote runs to the end of the file), "
                             f"or shorten the text", path=path, line=reader.line_num + skipped) from None
        raise InputError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc}); delimiter {shown}",
                         path=path, line=reader.line_num + skipped) from None
    return Table(path, out, locations, "line", {k: v for k, v in found.items() if k != v})


def _json_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSON Lines file; bad JSON names its line."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg}); each line must be one JSON object", path=path,
                             line=n) from None


def _jsonl_records(path: Path) -> tuple[list[dict], list[int], str]:
    rows: list[dict] = []
    locations: list[int] = []
    for n, obj in _json_lines(path, read_text(path).splitlines()):
        if not isinstance(obj, dict):
            raise InputError("each line must be one JSON object", path=path, line=n)
        rows.append(obj)
        locations.append(n)
    return rows, locations, "line"


def _json_records(path: Path) -> tuple[list[dict], list[int], str]:
    """A `.json` file: a list of records (`[{"text": ...}, ...]`, pandas' `to_json(orient="records")`), each
    record a row (errors name `row N`); JSON Lines saved under a `.json` name are read as JSON Lines."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):  # one object per line: JSON Lines
            return _jsonl_records(path)
        raise InputError(f"not valid JSON ({exc.msg}); a .json table is a list of records "
                         f"([{{\"text\": ...}}, ...])", path=path, line=exc.lineno) from None
    if isinstance(data, dict):  # {"data": [...]} and the like: one key holding the records
        lists = [k for k, v in data.items() if isinstance(v, list)]
        hint = f"; the records look to be under {lists[0]!r}: save that list alone" if len(lists) == 1 else ""
        raise InputError(f"a JSON object, not a list of records{hint} (pandas: to_json(orient='records')); a "
                         f"file that is not data goes outside table folders, or gets a name starting with '_'",
                         path=path)
    if not isinstance(data, list):
        raise InputError("not a list of records; a .json table is [{\"text\": ...}, ...]", path=path)
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise InputError(f"each record must be a JSON object, found {type(obj).__name__}", path=path, row=i)
    return data, list(range(1, len(data) + 1)), "row"


def _records_table(path: Path, rows: list[dict], locations: list[int], kind: str, columns: Sequence[str],
                   optional: Sequence[str], aliases: Mapping[str, Sequence[str]] | None) -> Table:
    """A table of JSON records (JSON Lines or a .json list)."""
    if not rows:
        raise InputError("the file has no JSON records", path=path)
    keys: list[str] = list(dict.fromkeys(k for r in rows[:1000] for k in r))
    found = resolve_columns(path, keys, columns, optional, aliases)
    out: dict[str, list[Any]] = {name: [] for name in found}
    for obj, n in zip(rows, locations):
        for name, src in found.items():
            if src not in obj:
                if name in columns:
                    raise (InputError("missing field", path=path, line=n, column=src) if kind == "line" else
                           InputError("missing field", path=path, row=n, column=src))
                out[name].append(None)
            else:
                out[name].append(obj[src])
    return Table(path, out, locations, kind, {k: v for k, v in found.items() if k != v})


def _read_parquet(path: Path, columns: Sequence[str], optional: Sequence[str],
                  aliases: Mapping[str, Sequence[str]] | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # the types pyarrow raises for a file that is not Parquet
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
    found = resolve_columns(path, schema.names, columns, optional, aliases)
    table = pq.read_table(path, columns=list(dict.fromkeys(found.values())))
    out = {name: table.column(src).to_pylist() for name, src in found.items()}
    return Table(path, out, list(range(1, table.num_rows + 1)), "row",
                 {k: v for k, v in found.items() if k != v})


def _read_hf(path: Path, columns: Sequence[str], optional: Sequence[str],
             aliases: Mapping[str, Sequence[str]] | None) -> Table:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    found = resolve_columns(path, ds.column_names, columns, optional, aliases)
    out = {name: list(ds[src]) for name, src in found.items()}
    return Table(path, out, list(range(1, len(ds) + 1)), "row", {k: v for k, v in found.items() if k != v})


def read_header(path: str | os.PathLike) -> list[str]:
    """The column names of a table file, without reading its rows where the format allows (`.txt`: none, it
    holds one unnamed column; a gzipped or `.json` file is read whole).

    For tools that look at a file before deciding how to read it (`simcse-curriculum init`, the checks of
    `validate`); the rows are then read with `read_table`, so the same file gets the same errors.
    """
    path = Path(path)
    check_exists(path)
    if is_hf_dataset(path):
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train" if "train" in ds else next(iter(ds))]
        return list(ds.column_names)
    if path.is_dir():
        raise InputError(f"a folder that is not a saved Hugging Face dataset; expected {SUPPORTED}", path=path)
    kind = table_format(path)
    if kind in TEXT_SUFFIXES:
        return []
    if kind in DELIMITED or kind == ".jsonl":
        check_line_lengths(path)  # as `read_table` will: the header or a record could be one giant line
    if kind in DELIMITED:
        return _delimited_header(path, kind)
    if kind == ".jsonl" and not path.name.lower().endswith(COMPRESSED):
        keys: dict[str, None] = {}
        with path.open(encoding="utf-8-sig") as handle:
            for n, obj in _json_lines(path, handle):
                if isinstance(obj, dict):
                    keys.update(dict.fromkeys(obj))
                if n >= 1000:
                    break
        return list(keys)
    if kind in RECORD_SUFFIXES:
        rows = (_jsonl_records(path) if kind == ".jsonl" else _json_records(path))[0]
        return list(dict.fromkeys(k for r in rows[:1000] for k in r))
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
            raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
    raise InputError(f"unsupported file type '{path.suffix}'; expected {SUPPORTED}", path=path)


def _head_text(path: Path, limit: int = 1 << 20) -> str:
    """The first `limit` bytes of a text table (decompressed), cut after their last whole line and decoded; the
    whole file's decoding error (with its line) when those bytes are not UTF-8."""
    opener = gzip.open if path.name.lower().endswith(COMPRESSED) else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read(limit)
    except (OSError, EOFError, zlib.error):
        return read_text(path)  # raises the gzip error, naming the file
    if len(data) == limit and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return read_text(path)  # raises with the line of the first bad byte


def _delimited_header(path: Path, kind: str) -> list[str]:
    text, delimiter, skipped = delimited_text(path, kind, _head_text(path))
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), None)
    except csv.Error as exc:
        raise InputError(f"malformed header ({exc})", path=path, line=1 + skipped) from None
    if not header:
        raise InputError("the file is empty; expected a header line", path=path, line=1 + skipped)
    return [h.strip() for h in header]


def read_columns(path: str | os.PathLike, canonical: Sequence[str], optional: Sequence[str] = (),
                 columns: Mapping[str, str | None] | None = None) -> Table:
    """`read_table` of canonical columns (required, then `optional`): each is read from the file column
    `columns` names for it, exactly, else under its canonical name or one of its `COLUMN_ALIASES`.

    The table uses the canonical names; its errors name the file's columns.
    """
    given = {k: v for k, v in (columns or {}).items() if v}
    unknown = sorted(set(given) - set(canonical) - set(optional))
    if unknown:
        raise ValueError(f"unknown column keys {unknown}; expected some of {[*canonical, *optional]}")
    names = {c: given.get(c, c) for c in [*canonical, *optional]}
    aliases = {c: COLUMN_ALIASES.get(c, ()) for c in names if c not in given}
    table = read_table(path, [names[c] for c in canonical], optional=[names[c] for c in optional], aliases=aliases)
    if given:
        table.columns = {c: table.columns[n] for c, n in names.items() if n in table.columns}
        table.renamed.update({c: n for c, n in given.items() if c != n})
    return table
