"""The table files a path names, and reading one's bytes safely: formats by name, folders of tables, symbolic-link
loops, and the longest line a file may hold (checked as the file is read, so a giant line costs no more memory than
a short one). `dataio.tables` reads the rows.
"""

from __future__ import annotations

import errno
import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from dataio.errors import InputError

TEXT_SUFFIXES = {".txt"}
DELIMITED = {".csv": ",", ".tsv": "\t"}
RECORD_SUFFIXES = {".jsonl", ".json"}
COMPRESSED = ".gz"
SUPPORTED = (".txt, .csv (delimited by , ; tab or |), .tsv, .jsonl, .json (a list of records), each optionally "
             "gzipped (.csv.gz), .parquet or a saved Hugging Face dataset folder")

# The longest line (and CSV field) an input file may hold. A row is a sentence or a short passage, and the
# encoder reads only its first `max_length` tokens; but a line is read whole, then tokenized whole, and one
# line of 50 MB in a corpus took gigabytes of memory before anything was refused. Lines are measured as the
# file is read (in chunks: memory stays bounded whatever the line), and one over the limit
# is refused in one line naming the file and the line. 1,000,000 bytes is thousands of times a sentence.
MAX_LINE_BYTES = 1_000_000
_SCAN_CHUNK = 1 << 20


def table_format(path: str | os.PathLike) -> str | None:
    """The format of a table file by its name: `.csv`, `.tsv`, `.jsonl`, `.json`, `.txt`, `.parquet` (a gzipped
    text format, `x.csv.gz`, gives its inner format); None for any other name."""
    name = Path(path).name.lower()
    if name.endswith(COMPRESSED):
        inner = Path(name[: -len(COMPRESSED)]).suffix
        return inner if inner in TEXT_SUFFIXES | set(DELIMITED) | RECORD_SUFFIXES else None
    suffix = Path(name).suffix
    return suffix if suffix in TABLE_SUFFIXES else None


def table_stem(path: str | os.PathLike) -> str:
    """A table file's name without its format suffixes: `dev.csv.gz` -> `dev`, `dev.tsv` -> `dev` (a metric's
    `sts/<stem>`, a deployment's data tag)."""
    path = Path(path)
    name = path.name
    if name.lower().endswith(COMPRESSED) and table_format(path) is not None:
        name = name[: -len(COMPRESSED)]
    return Path(name).stem if name != path.name or table_format(path) is not None else path.stem


class _LineLengths:
    """The lines of a file fed chunk by chunk (each at most `limit` bytes): the first longer than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.line, self.length, self.long_line = limit, 1, 0, None  # the current line and its bytes

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once a line over the limit is complete (nothing after it matters)."""
        first = chunk.find(b"\n")
        if first < 0:
            self.length += len(chunk)
            if self.length > self.limit and self.long_line is None:
                self.long_line = self.line
            return False
        self.length += first
        if self.length > self.limit or self.long_line is not None:
            return True  # the long line ends here: `length` is all of it
        self.line += chunk.count(b"\n")
        self.length = len(chunk) - chunk.rfind(b"\n") - 1
        return False

    def check(self, path: str | os.PathLike) -> None:
        if self.length > self.limit:
            raise InputError(f"{self.length:,} bytes, over the {self.limit:,}-byte limit of a line; a row is a "
                             f"sentence or a short passage (the encoder reads only its first max_length tokens): "
                             f"shorten or split the text, or remove the line", path=path,
                             line=self.long_line or self.line)


def _chunks(path: str | os.PathLike, limit: int) -> Iterator[bytes]:
    """The file's bytes (decompressed for a .gz name) in chunks of at most `limit` bytes (and of 1 MiB)."""
    opener = gzip.open if Path(path).name.lower().endswith(COMPRESSED) else open
    size = max(1, min(_SCAN_CHUNK, limit))  # a line that starts and ends inside one chunk is within limit
    with opener(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def check_line_lengths(path: str | os.PathLike, limit: int | None = None) -> None:
    """InputError naming the first line of `path` (decompressed, for a .gz name) longer than `limit` bytes (default
    `MAX_LINE_BYTES`), its length and the limit; the file is read in chunks, so a giant line costs no more memory
    than a short one. A file that cannot be decompressed is left to the reader, which names the problem."""
    lengths = _LineLengths(MAX_LINE_BYTES if limit is None else limit)
    try:
        for chunk in _chunks(path, lengths.limit):
            if lengths.feed(chunk):
                break
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return
    lengths.check(path)


def _read_bytes(path: Path) -> bytearray:
    """The file's bytes, decompressed when its name ends in .gz, read once: its lines' lengths are checked as it is
    read, so a giant line is refused when it is complete, before the rest of the file is read."""
    lengths, data = _LineLengths(MAX_LINE_BYTES), bytearray()  # grown in place: one copy of the file in memory
    try:
        for chunk in _chunks(path, MAX_LINE_BYTES):
            if lengths.feed(chunk):
                break
            if lengths.long_line is None:  # a line over the limit is only measured to its end, not kept
                data += chunk
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        if not path.name.lower().endswith(COMPRESSED) or isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise InputError(f"not a readable gzip file ({exc}); re-compress it with gzip, or drop the .gz from its "
                         f"name if it is not compressed", path=path) from None
    lengths.check(path)
    return data


def read_text(path: Path) -> str:
    data = _read_bytes(path)  # a giant line is refused as it is read, not loaded
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"bytes that are not UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8",
                         path=path, line=line) from None
    return text.removeprefix("\ufeff")


def symlink_loop(path: str | os.PathLike) -> bool:
    """True when `path` cannot be followed because its symbolic links lead back to themselves (ELOOP)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


SKIP_LINK = "remove the link, or rename it to start with '_' so it is not read"


def check_exists(path: Path) -> None:
    if not path.exists():
        if symlink_loop(path):  # exists() is False for a loop too: say what it is, not "no such file"
            raise InputError("a symbolic link loop (its links lead back to themselves); point the link at the file or "
                             "folder meant", path=path)
        raise InputError("no such file or folder; check the path", path=path)


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()
                              or (path / "dataset_dict.json").exists())


TABLE_SUFFIXES = TEXT_SUFFIXES | set(DELIMITED) | RECORD_SUFFIXES | {".parquet"}


def is_table_folder(path: str | os.PathLike) -> bool:
    """A folder of table files (a corpus that grows between runs), as opposed to one file or a saved dataset."""
    path = Path(path)
    return path.is_dir() and not is_hf_dataset(path)


def table_files(path: str | os.PathLike) -> list[Path]:
    """The tables a path names: the file itself, or every table file under a folder in sorted order (by path
    relative to the folder, so `2026-01/a.csv` comes before `2026-02/a.csv`); a saved Hugging Face dataset
    (the folder or one inside) counts as one table.

    Names starting with `.` or `_` are not data (as in pyarrow / Hive datasets: `_SUCCESS`, `.part` files being
    written). Any other file that is not a table stops the read, naming it, rather than being skipped unseen."""
    path = Path(path)
    check_exists(path)
    if not is_table_folder(path):
        return [path]
    found: list[Path] = []

    def walk(folder: Path, above: dict[tuple[int, int], Path]) -> None:
        # `above`: the folders this one is inside (by device and inode), so a link back to one of them is named
        # once as a loop instead of being followed until the kernel gives up (40 nested names).
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            if child.name.startswith((".", "_")):
                continue
            if child.is_symlink() and symlink_loop(child):
                raise InputError(f"in the table folder {path}: a symbolic link loop (its links lead back to "
                                 f"themselves); {SKIP_LINK}", path=child)
            if child.is_dir():
                info = child.stat()
                key = (info.st_dev, info.st_ino)
                if key in above:
                    raise InputError(f"in the table folder {path}: a symbolic link loop (it leads back to "
                                     f"{above[key]}, a folder it is in); {SKIP_LINK}", path=child)
                found.append(child) if is_hf_dataset(child) else walk(child, {**above, key: child})
            elif table_format(child) is not None:
                found.append(child)
            else:
                raise InputError(f"in the table folder {path}: not a table file (expected {SUPPORTED}); move it out "
                                 f"of the folder, or rename it to start with '_' so it is not read", path=child)

    top = path.stat()
    walk(path, {(top.st_dev, top.st_ino): path})
    if not found:
        raise InputError(f"a folder with no table files in it (expected {SUPPORTED}); add the data files",
                         path=path)
    return sorted(found, key=lambda p: p.relative_to(path).as_posix())
