"""New data: what a run saw, and how much of it the model it started from had not seen.

A training input file (each file of a corpus folder on its own) is known by its **key**: the sha256 of its
bytes with how it is read (corpus, pairs or NLI; column map; domain label). A row is known by its **id**, taken
from its content, never its position, so a row moved to another file or line is not new:

    corpus sentence   s<text_id(text)>                 (mining.corpus.text_id: 16 hex digits of the SHA-1)
    pair              p<text_id(anchor \\0 positive)>
    NLI triplet       n<text_id(anchor \\0 positive \\0 negative)>

A registered version carries what its line has seen: its parent's files and rows plus those of the run that made
it, as the artifacts `data_seen/data_seen.json` (file keys and their rows) and `data_seen/data_seen.parquet` (row
ids, one column `id`) of its MLflow run. A run compares its inputs with what its starting version has seen:
a file whose key was seen holds nothing new and is not read again; the others are read and their rows' ids
looked up among the seen ids. The run writes the same two files into its folder (`<run>/data_seen.json`, with
per-file and total counts of new rows, and `<run>/data_seen.parquet`), and `models register` attaches them to
the version it registers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataio.atomic import atomic_path
from dataio.errors import InputError
from dataio.table_files import table_files
from flows.run.config import RunConfig
from flows.run.fingerprint import combine, file_fingerprint
from flows.run.rundir import RunDir, write_json
from mining.corpus import CorpusSource, NliSource, PairSource, load_corpus, text_id

SEEN_JSON = "data_seen.json"
SEEN_IDS = "data_seen.parquet"
ARTIFACT_DIR = "data_seen"
KINDS = ("corpus", "pairs", "nli")
# The files the built-in corpus is built into (flows.run.demo_data), in <run>/data.
BUILTIN_FILES = {"corpus": ("corpus.jsonl", {"text": "text", "id": "id", "domain": "domain"}),
                 "pairs": ("pairs.jsonl", {})}


@dataclass(frozen=True)
class InputFile:
    """One training input file and how the run reads it."""

    kind: str  # corpus | pairs | nli
    path: Path | None  # None: a built-in corpus not built yet
    columns: dict[str, str]
    domain: str | None
    builtin_key: str | None = None  # the built-in corpus: known by its settings, not by bytes built at run time

    @property
    def key(self) -> str:
        if self.builtin_key is not None:
            return self.builtin_key
        assert self.path is not None
        return combine("input-file-v1", self.kind, file_fingerprint(self.path), self.columns, self.domain)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path is not None else None, "kind": self.kind, "key": self.key}


def input_files(config: RunConfig, run: RunDir | None = None) -> list[InputFile]:
    """The run's training input files, a folder's files one by one in sorted order (as
    `flows.run.inputs.prepare_inputs` reads them); optional files that are absent are left out."""
    if config.data.builtin:
        key = combine("builtin", config.data.builtin, config.data.builtin_max_sentences, config.seed)
        out = []
        for kind, (name, columns) in BUILTIN_FILES.items():
            path = run.data / name if run is not None and (run.data / name).is_file() else None
            out.append(InputFile(kind, path, columns, None, builtin_key=f"{key}-{kind}"))
        return out
    files: list[InputFile] = []
    for kind in KINDS:
        entry = getattr(config.data, kind)
        if entry is None or (entry.optional and not entry.path.exists()):
            continue
        columns = entry.columns.model_dump()
        files.extend(InputFile(kind, path, columns, entry.domain_label) for path in table_files(entry.path))
    return files


def settings_key(config: RunConfig) -> str:
    """The settings that decide what a run computes from its starting model (not which model that is, nor
    where the run is written, tracked or registered)."""
    dumped = config.computed_settings()
    dumped["model"].pop("name_or_path", None)
    return combine("settings-v1", dumped)


def inputs_key(files: list[InputFile]) -> str:
    return combine("inputs-v1", sorted(f.key for f in files))


def row_ids(f: InputFile) -> list[str]:
    """The distinct ids of a file's rows, read as the run reads them (mining.corpus; bad rows stop here too)."""
    if f.path is None:
        return []
    c = f.columns
    try:
        if f.kind == "corpus":
            loaded = load_corpus([CorpusSource(f.path, text_column=c.get("text"), id_column=c.get("id"),
                                               domain_column=c.get("domain"), domain=f.domain)])
            return sorted({"s" + text_id(t) for t in loaded.texts})
        if f.kind == "pairs":
            loaded = load_corpus(pairs=[PairSource(f.path, anchor_column=c.get("anchor"),
                                                   positive_column=c.get("positive"), label_column=c.get("label"),
                                                   domain=f.domain)])
        else:
            loaded = load_corpus(nli=[NliSource(f.path, anchor_column=c.get("anchor"),
                                                positive_column=c.get("positive"), negative_column=c.get("negative"),
                                                domain=f.domain)])
    except InputError as err:
        if str(err).startswith(("no usable text", "no anchors")) or ": no usable text" in str(err):
            return []  # a file with no rows (a header only): nothing new in it; the run reads it the same way
        raise
    texts = loaded.texts
    prefix = "p" if f.kind == "pairs" else "n"
    ids = set()
    for a, p, n in zip(loaded.anchor.tolist(), loaded.positive.tolist(), loaded.negative.tolist()):
        parts = [texts[a], texts[p]] + ([texts[n] if n >= 0 else ""] if f.kind == "nli" else [])
        ids.add(prefix + text_id("\0".join(parts)))
    return sorted(ids)


# ------------------------------------------------------------------------------------- what a line saw
@dataclass
class Seen:
    """What a version's line has seen: file key -> {path, kind, rows}, and a loader of the row ids."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0
    load_ids: Callable[[], Any] | None = None  # -> pyarrow string array
    _ids: Any = None

    def ids(self) -> Any:
        if self._ids is None:
            self._ids = self.load_ids() if self.load_ids is not None else pa.array([], pa.string())
        return self._ids


def read_ids(path: Path) -> Any:
    return pq.read_table(path, columns=["id"]).column("id").combine_chunks()


def write_ids(path: Path, ids: Any) -> None:
    """Row ids, sorted, as one Parquet column `id` (written whole or not at all)."""

    table = pa.table({"id": pa.array(ids, pa.string())}).sort_by("id")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def seen_of_version(registry: Any, version: Any) -> Seen:
    """What `version` (flows.registry.versions.Version) has seen; nothing for a version registered without a
    record (the
    model a registry starts from, a run registered from an older version of this package)."""
    if not version.run_id:
        return Seen()
    client = registry.client
    names = {info.path.rsplit("/", 1)[-1] for info in client.list_artifacts(version.run_id, ARTIFACT_DIR)}
    if SEEN_JSON not in names:
        return Seen()
    with tempfile.TemporaryDirectory(prefix="simcse-seen-") as tmp:
        local = Path(client.download_artifacts(version.run_id, f"{ARTIFACT_DIR}/{SEEN_JSON}", tmp))
        record = json.loads(local.read_text(encoding="utf-8"))

    def load() -> Any:
        with tempfile.TemporaryDirectory(prefix="simcse-seen-") as tmp:
            return read_ids(Path(client.download_artifacts(version.run_id, f"{ARTIFACT_DIR}/{SEEN_IDS}", tmp)))

    seen = record.get("seen") or {}
    return Seen(files=seen.get("files") or {}, rows=int(seen.get("rows") or 0), load_ids=load)


# ------------------------------------------------------------------------------------------- a survey
@dataclass
class Survey:
    """The run's inputs against what its starting version has seen."""

    files: list[dict[str, Any]]  # per file: path, kind, key, status (seen | new | changed), rows, new_rows
    new_rows: int
    inputs_key: str
    keys: list[str]
    new_ids: Any = None  # pyarrow string array: ids no earlier version saw (None: every file was seen)
    read_ids: Any = None  # ids of the files read (not seen before)

    @property
    def rows(self) -> int:
        return sum(int(f["rows"] or 0) for f in self.files)

    @property
    def all_files_seen(self) -> bool:
        return all(f["status"] == "seen" for f in self.files)

    def names(self, status: str) -> list[str]:
        return [f["path"] for f in self.files if f["status"] == status]

    def describe(self) -> str:
        new, changed = self.names("new"), self.names("changed")
        parts = [f"{len(self.files)} input files, {self.rows} rows; {self.new_rows} rows new"]
        if new:
            parts.append(f"new files: {', '.join(Path(p).name for p in new[:5])}{' ...' if len(new) > 5 else ''}")
        if changed:
            parts.append(f"changed files: {', '.join(Path(p).name for p in changed[:5])}"
                         f"{' ...' if len(changed) > 5 else ''}")
        return "; ".join(parts)


def survey(files: list[InputFile], seen: Seen) -> Survey:
    """Which files and rows of `files` are new to `seen`; files whose key was seen are not read."""

    seen_paths = {rec.get("path") for rec in seen.files.values()}
    records: list[dict[str, Any]] = []
    per_file: list[tuple[dict[str, Any], Any]] = []
    for f in files:
        key = f.key
        record = {**f.describe(), "rows": None, "new_rows": 0}
        if key in seen.files:
            record.update(status="seen", rows=seen.files[key].get("rows"))
        else:
            ids = pa.array(row_ids(f), pa.string())
            record.update(status="changed" if record["path"] in seen_paths else "new", rows=len(ids))
            per_file.append((record, ids))
        records.append(record)
    new_ids = read = None
    new_count = 0
    if per_file:
        read = pc.unique(pa.concat_arrays([ids for _, ids in per_file]))
        known = seen.ids()
        new_ids = read.filter(pc.invert(pc.is_in(read, value_set=known))) if len(known) else read
        new_count = len(new_ids)
        for record, ids in per_file:
            record["new_rows"] = int(pc.sum(pc.is_in(ids, value_set=new_ids)).as_py() or 0) if len(ids) else 0
    return Survey(records, new_count, inputs_key(files), [f.key for f in files], new_ids, read)


def write_survey(run: RunDir, result: Survey, seen: Seen, parent: int | None, config: RunConfig) -> dict[str, Any]:
    """`<run>/data_seen.json` and `<run>/data_seen.parquet`: the run's inputs, what was new, and what the run's
    model has seen (its starting version's line plus this run's inputs)."""

    files = dict(seen.files)
    for record in result.files:
        files[record["key"]] = {"path": record["path"], "kind": record["kind"], "rows": record["rows"]}
    known = seen.ids()
    union = known if result.read_ids is None else pc.unique(pa.concat_arrays([known, result.read_ids]))
    write_ids(run.root / SEEN_IDS, union)
    record = {"parent_version": parent, "files": result.files, "rows": result.rows, "new_rows": result.new_rows,
              "new_files": result.names("new"), "changed_files": result.names("changed"),
              "inputs_key": result.inputs_key, "settings_key": settings_key(config),
              "seen": {"files": files, "rows": len(union)}, "seen_ids": SEEN_IDS}
    write_json(run.root / SEEN_JSON, record)
    return record


def read_record(run: RunDir) -> dict[str, Any] | None:
    path = run.root / SEEN_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def attach_to_run(client: Any, run_id: str, run: RunDir) -> dict[str, str]:
    """Log the run's record as artifacts of an MLflow run (a registered version's); returns the version's tags."""
    record = read_record(run)
    if record is None or not (run.root / SEEN_IDS).is_file():
        return {}
    client.log_artifact(run_id, str(run.root / SEEN_JSON), ARTIFACT_DIR)
    client.log_artifact(run_id, str(run.root / SEEN_IDS), ARTIFACT_DIR)
    return {"data_rows": str(record.get("rows")), "data_new_rows": str(record.get("new_rows")),
            "data_files": str(len(record.get("files") or [])), "inputs_key": str(record.get("inputs_key")),
            "settings_key": str(record.get("settings_key"))}
