"""Loading what a domain team hands over (corpus, pairs, NLI triplets) into one validated mining corpus.

The result is a pool of unique sentences (every text of every input, each once, with a stable id and an
optional domain label) plus anchor rows that point into the pool: corpus sentences without a pair are
unsupervised anchors whose positive is the sentence itself, pair rows have their positive, NLI rows also
carry their labeled contradiction. Everything is validated here, before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataio.errors import InputError
from dataio.eval_sets import LABEL_HELP, parse_label
from dataio.hashing import hash_strings
from dataio.tables import INPUT_COLUMNS, Table, read_columns

log = logging.getLogger(__name__)

UNSUPERVISED, PAIR, NLI, MINED = 0, 1, 2, 3
# MINED: an unsupervised row whose positive a judge mined from the corpus (mining.judge), set per round.
KIND_NAMES = {UNSUPERVISED: "unsupervised", PAIR: "pair", NLI: "nli", MINED: "mined"}
# Why a triplet's positive is what it is: the `positive_source` column of the triplets (dataio.triplets).
POSITIVE_SOURCES = {UNSUPERVISED: "anchor", PAIR: "pair", NLI: "nli", MINED: "mined"}


def text_id(text: str) -> str:
    """Stable id of a sentence: the first 16 hex digits of its SHA-1, so ids never depend on file order."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CorpusSource:
    """One corpus file; `domain` labels every row when the file has no domain column."""

    path: Path
    text_column: str | None = None
    id_column: str | None = None
    domain_column: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class PairSource:
    """One file of (anchor, positive) pairs. A `label` column (or the one `label_column` names) marks each
    row 1 (a paraphrase: kept) or 0 (not one: dropped and counted), since every kept pair is trained on as
    a positive."""

    path: Path
    anchor_column: str | None = None
    positive_column: str | None = None
    domain: str | None = None
    label_column: str | None = None


@dataclass(frozen=True)
class NliSource:
    """One file of NLI triplets (anchor, entailment positive, contradiction negative)."""

    path: Path
    anchor_column: str | None = None
    positive_column: str | None = None
    negative_column: str | None = None
    domain: str | None = None


@dataclass
class SourceStats:
    """What loading one file did: rows read, empty rows dropped, duplicates collapsed."""

    path: str
    kind: str
    rows: int = 0
    kept: int = 0
    empty: int = 0
    duplicates: int = 0
    missing_negative: int = 0
    label_0: int = 0  # pairs labeled 0 (not paraphrases): never positives

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MiningCorpus:
    """The validated inputs of one mining run.

    `texts[i]`, `ids[i]`, `domains[i]` describe pool sentence i. Anchor rows are parallel arrays of pool
    indices: `anchor`, `positive` (== `anchor` for unsupervised rows), `negative` (labeled contradiction or
    -1) and `kind` (UNSUPERVISED, PAIR, NLI; MINED once `mining.judge` gave an unsupervised row a positive).
    """

    texts: list[str]
    ids: list[str]
    domains: list[str | None]
    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    kind: np.ndarray
    sources: list[SourceStats] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_anchor_rows(self) -> int:
        return int(self.anchor.shape[0])

    @property
    def source_paths(self) -> list[str]:
        return [s.path for s in self.sources]

    def has_nli(self) -> bool:
        return bool((self.negative >= 0).any())

    def fingerprint(self) -> str:
        """SHA-256 over the pool (texts, ids, domains) and anchor rows: equal inputs give equal fingerprints."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"mining-corpus-v1\0")
            for t, i, d in zip(self.texts, self.ids, self.domains):
                h.update(t.encode("utf-8"))
                h.update(b"\0")
                h.update(i.encode("utf-8"))
                h.update(b"\0")
                h.update((d or "").encode("utf-8"))
                h.update(b"\1")
            for arr in (self.anchor, self.positive, self.negative, self.kind):
                h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def pool_fingerprint(self) -> str:
        """SHA-256 of the pool texts alone (in order): what the embeddings depend on."""
        h = hashlib.sha256(b"mining-pool-v1\0")
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        kinds = {KIND_NAMES[k]: int((self.kind == k).sum()) for k in KIND_NAMES
                 if k != MINED or (self.kind == MINED).any()}  # "mined" only where a judge mined positives
        labels = sorted({d for d in self.domains if d})
        return {"pool": len(self.texts), "anchor_rows": kinds, "domains": labels,
                "sources": [s.as_dict() for s in self.sources]}


PathLike = str | os.PathLike


def _as_source(item: Any, cls: type, kind: str) -> Any:
    if isinstance(item, cls):
        return item
    if isinstance(item, (str, os.PathLike)):
        return cls(Path(item))
    raise TypeError(f"{kind} inputs must be paths or {cls.__name__}, got {type(item).__name__}")


def _pair_label(table: Table, index: int, column: str, value: Any) -> int:
    """A pair's label as 0 or 1 (yes/no, true/false too: `dataio.eval_sets.parse_label`); anything else stops the
    load naming the line."""
    label = parse_label(value)
    if label is None:
        raise table.error(index, column, f"label {value!r} is not {LABEL_HELP}; a pairs file's label marks a "
                                         f"paraphrase (1, trained on as a positive) or not (0, dropped)")
    return label


def _cell_text(table: Table, index: int, column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if isinstance(value, (float, np.floating)) and np.isnan(value):  # NaN from pandas-written files
            return ""
        return str(value).strip()
    raise table.error(index, column, f"expected text, found {type(value).__name__}; store this column as strings")


class _PoolBuilder:
    """Assigns each distinct text one pool index and id; collects domains."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.texts: list[str] = []
        self.ids: list[str] = []
        self.domains: list[str | None] = []
        # Only ids given in an id column can clash (content-hash ids are unique per text), so only they are
        # tracked, with where they were first seen for the error message: a 1M-line corpus without ids
        # pays nothing for this check.
        self.given: dict[str, tuple[int, str]] = {}

    def add(self, text: str, given_id: str | None, domain: str | None, where: str | None = None,
            table: Table | None = None, index: int = 0, id_column: str | None = None) -> tuple[int, bool]:
        """(pool index, newly added)."""
        existing = self.index.get(text)
        if existing is not None:
            if domain and not self.domains[existing]:
                self.domains[existing] = domain
            return existing, False
        pos = len(self.texts)
        if given_id:
            owner = self.given.get(given_id)
            if owner is not None:
                message = (f"id {given_id!r} is already used for a different text ({owner[1]}); ids must be unique "
                           f"per text: fix the id or drop the id column to use content-hash ids")
                raise table.error(index, id_column, message) if table is not None else InputError(message)
            self.given[given_id] = (pos, where or "")
        self.index[text] = pos
        self.texts.append(text)
        self.ids.append(given_id or text_id(text))
        self.domains.append(domain or None)
        return pos, True

    def check_ids(self) -> None:
        """A given id equal to another text's content-hash id would make two texts share an id."""
        if not self.given:
            return
        given_pos = {pos for pos, _ in self.given.values()}
        hashed = {ident for pos, ident in enumerate(self.ids) if pos not in given_pos}
        clash = next((i for i, (_pos, _w) in self.given.items() if i in hashed), None)
        if clash is not None:
            raise InputError(f"id {clash!r} ({self.given[clash][1]}) equals the content-hash id of another text; "
                             f"choose ids that do not look like 16-hex-digit hashes")


def load_corpus(corpus: Iterable[PathLike | CorpusSource] = (), pairs: Iterable[PathLike | PairSource] = (),
                nli: Iterable[PathLike | NliSource] = (), *, unsupervised_anchors: bool = True) -> MiningCorpus:
    """Read and validate every input into one MiningCorpus; InputError (file, line, column) on bad input.

    Empty rows are dropped and counted; repeated texts (corpus) and repeated rows (pairs, NLI) are collapsed
    and counted. Corpus `id` values are kept; other texts get content-hash ids (`text_id`).
    """
    corpus_src = [_as_source(c, CorpusSource, "corpus") for c in _listify(corpus)]
    pair_src = [_as_source(p, PairSource, "pairs") for p in _listify(pairs)]
    nli_src = [_as_source(n, NliSource, "nli") for n in _listify(nli)]
    if not corpus_src and not pair_src and not nli_src:
        raise InputError("no input: give a corpus (--corpus), pairs (--pairs) or NLI triplets (--nli)")

    pool = _PoolBuilder()
    corpus_members: list[int] = []  # pool indices of corpus sentences, first-seen order
    in_corpus: set[int] = set()

    stats = [_read_corpus(src, pool, in_corpus, corpus_members) for src in corpus_src]

    rows: list[tuple[int, int, int, int]] = []  # anchor, positive, negative, kind
    seen_rows: set[tuple[int, int, int]] = set()
    for src in pair_src:
        stats.append(_read_pairs(src, pool, rows, seen_rows))
    for src in nli_src:
        stats.append(_read_nli(src, pool, rows, seen_rows))

    pool.check_ids()
    if not pool.texts:
        names = ", ".join(s.path for s in stats)
        raise InputError(f"no usable text: every row is empty ({names}); check the file and the column names")

    anchored = {r[0] for r in rows}
    unsup = [i for i in corpus_members if i not in anchored] if unsupervised_anchors else []
    all_rows = [(i, i, -1, UNSUPERVISED) for i in unsup] + rows
    if not all_rows:
        raise InputError("no anchors: the corpus sentences are all paired or unsupervised anchors are off; "
                         "give a corpus, pairs or NLI triplets")
    arr = np.asarray(all_rows, dtype=np.int64).reshape(-1, 4)
    out = MiningCorpus(texts=pool.texts, ids=pool.ids, domains=pool.domains, anchor=arr[:, 0].copy(),
                       positive=arr[:, 1].copy(), negative=arr[:, 2].copy(), kind=arr[:, 3].astype(np.int8),
                       sources=stats)
    _log_sources(stats)
    return out


def _read_corpus(src: CorpusSource, pool: _PoolBuilder, in_corpus: set[int], members: list[int]) -> SourceStats:
    """One corpus file into the pool; its new texts join `members` (pool indices, first-seen order)."""
    # A column the user names is read exactly; else its canonical name or an alias (dataio.tables).
    table = read_columns(src.path, *INPUT_COLUMNS["corpus"],
                         {"text": src.text_column, "id": src.id_column, "domain": src.domain_column})
    if src.id_column and "id" not in table.columns:
        raise InputError(f"missing id column {src.id_column!r}", path=src.path, column=src.id_column)
    if src.domain_column and "domain" not in table.columns:
        raise InputError(f"missing domain column {src.domain_column!r}", path=src.path, column=src.domain_column)
    st = SourceStats(str(src.path), "corpus")
    texts = table.columns["text"]
    ids = table.columns.get("id")
    doms = table.columns.get("domain")
    for i, raw in enumerate(texts):
        st.rows += 1
        text = _cell_text(table, i, "text", raw)
        if not text:
            st.empty += 1
            continue
        given = _cell_text(table, i, "id", ids[i]) if ids is not None else None
        if given is not None and "\n" in given:
            raise table.error(i, "id", "an id must not contain a line break")
        dom = (_cell_text(table, i, "domain", doms[i]) if doms is not None else None) or src.domain
        idx, new = pool.add(text, given or None, dom, _where(table, i) if given else None, table, i, "id")
        if not new and idx in in_corpus:
            st.duplicates += 1
            continue
        if given and pool.ids[idx] != given:
            # The text came first from an earlier file without this id; the first id stays.
            log.info("%s: text already has id %s; keeping it over %s", _where(table, i), pool.ids[idx], given)
        in_corpus.add(idx)
        members.append(idx)
        st.kept += 1
    return st


def _add_pair(pool: _PoolBuilder, st: SourceStats, anchor: str | None, positive: str | None,
              domain: str | None) -> tuple[int, int] | None:
    """The pool indices of a row's anchor and positive, added to the pool; None for a row missing either (counted
    as empty)."""
    if not anchor or not positive:
        st.empty += 1
        return None
    return pool.add(anchor, None, domain)[0], pool.add(positive, None, domain)[0]


def _keep_row(rows: list[tuple[int, int, int, int]], seen_rows: set[tuple[int, int, int]], st: SourceStats,
              key: tuple[int, int, int], kind: int) -> None:
    """Add the (anchor, positive, negative) row of `kind` unless an earlier file or row had it (counted)."""
    if key in seen_rows:
        st.duplicates += 1
        return
    seen_rows.add(key)
    rows.append((*key, kind))
    st.kept += 1


def _read_pairs(src: PairSource, pool: _PoolBuilder, rows: list[tuple[int, int, int, int]],
                seen_rows: set[tuple[int, int, int]]) -> SourceStats:
    """One pairs file into the pool and `rows` (label-0 pairs, empty and repeated rows dropped and counted)."""
    table = read_columns(src.path, *INPUT_COLUMNS["pairs"],
                         {"anchor": src.anchor_column, "positive": src.positive_column, "label": src.label_column})
    if src.label_column and "label" not in table.columns:
        raise InputError(f"missing label column {src.label_column!r}", path=src.path, column=src.label_column)
    st = SourceStats(str(src.path), "pairs")
    cols = [table.columns[c] for c in ("anchor", "positive")]
    labels = table.columns.get("label")
    for i, (a_raw, p_raw) in enumerate(zip(*cols)):
        st.rows += 1
        if labels is not None and _pair_label(table, i, "label", labels[i]) == 0:
            st.label_0 += 1
            continue
        pair = _add_pair(pool, st, _cell_text(table, i, "anchor", a_raw), _cell_text(table, i, "positive", p_raw),
                         src.domain)
        if pair is not None:
            _keep_row(rows, seen_rows, st, (*pair, -1), PAIR)
    if labels is not None and st.label_0 and st.label_0 == st.rows:
        raise InputError(f"all {st.rows} pairs are labeled 0 (not paraphrases); a pairs file trains on its "
                         f"positives (label 1): give pairs that mean the same", path=src.path,
                         column=table.renamed.get("label", "label"))
    return st


def _read_nli(src: NliSource, pool: _PoolBuilder, rows: list[tuple[int, int, int, int]],
              seen_rows: set[tuple[int, int, int]]) -> SourceStats:
    """One NLI file into the pool and `rows` (a row without a negative is kept and counted)."""
    table = read_columns(src.path, *INPUT_COLUMNS["nli"],
                         columns={"anchor": src.anchor_column, "positive": src.positive_column,
                                  "negative": src.negative_column})
    st = SourceStats(str(src.path), "nli")
    cols = [table.columns[c] for c in ("anchor", "positive", "negative")]
    for i, (a_raw, p_raw, n_raw) in enumerate(zip(*cols)):
        st.rows += 1
        a = _cell_text(table, i, "anchor", a_raw)
        p = _cell_text(table, i, "positive", p_raw)
        n = _cell_text(table, i, "negative", n_raw)
        pair = _add_pair(pool, st, a, p, src.domain)
        if pair is None:
            continue
        ai, pi = pair
        ni = -1
        if n:
            ni, _ = pool.add(n, None, src.domain)
        else:
            st.missing_negative += 1
        _keep_row(rows, seen_rows, st, (ai, pi, ni), NLI)
    return st


def _log_sources(stats: list[SourceStats]) -> None:
    """One line per file that lost rows: how many were read, kept, dropped and why."""
    for st in stats:
        if st.empty or st.duplicates or st.missing_negative or st.label_0:
            log.info("%s: %d rows, %d kept, %d empty dropped, %d duplicates collapsed%s%s", st.path, st.rows, st.kept,
                     st.empty, st.duplicates,
                     f", {st.missing_negative} without a negative" if st.missing_negative else "",
                     f", {st.label_0} labeled 0 (not paraphrases) dropped" if st.label_0 else "")


def _where(table: Table, i: int) -> str:
    return f"{table.path}:{table.location_kind} {table.locations[i]}"


def _listify(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike, CorpusSource, PairSource, NliSource)):
        return [x]
    return list(x)


def check_size(corpus: MiningCorpus, num_negatives: int) -> None:
    """A pool too small for the requested negatives is an input error, raised before anything is written."""
    need = num_negatives + 2
    if len(corpus) < need:
        where = ", ".join(corpus.source_paths) or "the inputs"
        raise InputError(f"{where}: only {len(corpus)} distinct sentences, fewer than the {need} needed for "
                         f"{num_negatives} negative(s) per anchor (anchor + positive + negatives); add sentences or "
                         f"lower --num-negatives")


def domain_labels(corpus: MiningCorpus) -> list[str]:
    return sorted({d for d in corpus.domains if d})


def normalized_keys(texts: Sequence[str]) -> np.ndarray:
    """64-bit keys of case- and whitespace-normalised texts: the 'same text' guard compares these."""
    return hash_strings(" ".join(t.casefold().split()) for t in texts)
