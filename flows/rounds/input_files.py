"""What a team's files are, for `simcse-curriculum init` (`flows.rounds.scaffold` writes the config from it).

Each file's role (corpus, training pairs, NLI triplets, STS or labeled evaluation pairs) comes from its
columns, read with the project's table reader (`dataio.tables.read_header`, `read_table`: every format and
delimiter the loaders read), from a `ROLE=PATH` prefix, or from the column map given with `--columns`
(`text=headline,domain=desk`: the keys of a config's `columns:`). Columns are recognised by name first (a
canonical name or one of its aliases in `dataio.tables.COLUMN_ALIASES`, then a few names only this guess
knows), then by what they hold, so a team's own names work too:

- a *label* column holds only 0/1, yes/no or true/false (`dataio.eval_sets.parse_label`); a *score* column
  numbers with more than two values (on an STS-like scale, -1 to 5, unless it is named like a score);
- a *sentence* column is text, mostly with spaces between words, mostly distinct, not URLs;
- two sentence columns and a label are labeled pairs (evaluation pairs when the file name says
  dev/eval/test/valid, else training pairs whose label-0 rows are dropped); two and a score are an STS file;
- anything else is a corpus: its text column the one so named, else the longest sentence column; an id
  column has unique values; its domain column is chosen among the short text columns with few distinct
  values by how they split the corpus: the entropy of the split (more groups, more evenly filled), so a topic
  column with five even desks wins over a publisher column where one publisher has most rows, whatever the
  names (a name like topic/desk/section weighs a little for, source/publisher/author a little against).

With several evaluation files the dev metric (the one that picks the round to use) is the file whose texts
are most like the training texts (the share of its words that occur in them), so an in-domain STS file wins
over out-of-domain labeled pairs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataio.column_specs import columns_for, parse_column_specs
from dataio.errors import InputError
from dataio.eval_sets import parse_label
from dataio.table_files import table_files, table_stem
from dataio.tables import COLUMN_ALIASES, read_header, read_table
from flows.run.config_sections import CorpusColumns, LabeledPairColumns, NliColumns, PairColumns, StsColumns
from simcse.evaluation import file_metric_names

ROLES = ("corpus", "pairs", "nli", "sts", "eval-pairs")


def _names(column: str, *guesses: str) -> tuple[str, ...]:
    """The names a column is looked for under, in order: its canonical name and the aliases every loader reads
    it under (`dataio.tables.COLUMN_ALIASES`, the one table), then `guesses`, names only `init` recognises
    (the config it writes then names such a column, so the loaders need not know it)."""
    return tuple(dict.fromkeys((column, *COLUMN_ALIASES.get(column, ()), *guesses)))


TEXT_NAMES = _names("text", "tweet", "content", "body", "message", "title", "headline", "question")
ID_NAMES = _names("id", "uid", "doc_id", "sentence_id", "tweet_id")
FIRST_NAMES = _names("anchor", "sentence1", "text1", "text_a", "question1", "s1")
SECOND_NAMES = _names("positive", "sentence2", "text2", "text_b", "question2", "s2")
NEGATIVE_NAMES = _names("negative")
SCORE_NAMES = _names("score", "similarity", "sim", "relatedness", "gold")
LABEL_NAMES = _names("label", "labels", "is_paraphrase", "is_duplicate", "paraphrase")
EVAL_WORDS = {"dev", "eval", "evaluation", "test", "valid", "validation", "val", "holdout"}
# Names that weigh a little for (topics) and against (where a text came from) a column as the domain; the
# numbers decide (`_domain_choices`).
TOPIC_WORDS = {"domain", "topic", "topics", "category", "categories", "desk", "section", "subject", "genre",
               "theme", "themes", "tag", "tags", "class", "label", "rubric", "beat", "vertical"}
SOURCE_WORDS = {"source", "sources", "publisher", "author", "authors", "outlet", "site", "website", "feed",
                "agency", "channel", "lang", "language", "country", "user", "username", "account", "provider"}
NAME_WEIGHT = 1.25  # a topic-like name's score x 1.25, a source-like name's / 1.25
# Words too common to tell one domain's texts from another's (for the dev set's overlap with the corpus).
STOPWORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been being it
its this that these those he she they we you i his her their our your not no do does did has have had will would
can could should may might than then there here what which who whom how when where why all any each more most
some such only own same so too very just also into over after before about up down out off again""".split())


@dataclass
class Column:
    """What one column holds (its non-empty values), for the guesses."""

    name: str
    values: list[Any]
    rows: int

    def __post_init__(self) -> None:
        texts = [str(v).strip() for v in self.values]
        self.distinct = len(set(texts))
        self.labels = bool(texts) and all(parse_label(v) is not None for v in self.values)
        self.numeric = bool(texts) and all(_is_number(v) for v in self.values)
        self.mean_length = sum(len(t) for t in texts) / len(texts) if texts else 0.0
        self.spaced = sum(" " in t for t in texts) / len(texts) if texts else 0.0
        self.urls = bool(texts) and sum(t.startswith(("http://", "https://", "www.")) for t in texts) > len(texts) / 2
        self.lettered = bool(texts) and sum(bool(re.search(r"[^\W\d_]", t)) for t in texts) > len(texts) / 2

    @property
    def text(self) -> bool:
        """Text (not numbers, not 0/1 labels)."""
        return bool(self.values) and not self.numeric and not self.labels

    @property
    def sentence(self) -> bool:
        """Running text: mostly words with spaces, mostly distinct, not URLs."""
        return self.text and self.spaced >= 0.5 and not self.urls and self.distinct > max(2, 0.3 * len(self.values))

    @property
    def score(self) -> bool:
        """Numbers with more than two values (not 0/1 labels)."""
        return self.numeric and not self.labels and self.distinct > 2

    @property
    def category(self) -> bool:
        """A short text label with few distinct values (a domain candidate)."""
        return (self.text and self.lettered and not self.urls and self.mean_length < 40
                and 2 <= self.distinct <= max(2, min(100, self.rows // 2)))

    def split(self) -> tuple[float, float]:
        """(entropy of the split of the rows by this column's values in nats, evenness: entropy / log(values));
        rows without a value count as one more group, so a column empty on most rows splits little."""
        counts = Counter(str(v).strip() for v in self.values)
        empty = self.rows - len(self.values)
        sizes = list(counts.values()) + ([empty] if empty > 0 else [])
        total = sum(sizes)
        entropy = -sum(n / total * math.log(n / total) for n in sizes if n)
        return entropy, entropy / math.log(len(counts)) if len(counts) > 1 else 0.0


@dataclass
class Choice:
    """A guess `init` made that a team may want otherwise: what was chosen and why, and how to change it."""

    what: str  # "domain", "dev metric", "text"
    chosen: str
    why: str
    change: str  # the config line (or argument) that picks another

    def line(self) -> str:
        change = f". {self.change[:1].upper()}{self.change[1:]}" if self.change else ""
        return f"{self.what}: {self.chosen}, {self.why}{change}"


@dataclass
class FileRole:
    """One input file and what the config reads from it."""

    path: Path
    role: str  # one of ROLES
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> the file's column
    rows: int = 0
    why: str = ""
    domains: int = 0  # distinct values of the domain column (corpus)
    choices: list[Choice] = field(default_factory=list)
    texts: list[str] = field(default_factory=list, repr=False)  # the sentences read (to compare files' domains)


def _split_arg(arg: str) -> tuple[str | None, Path]:
    role, sep, rest = arg.partition("=")
    if sep and role in ROLES:
        return role, Path(rest)
    return None, Path(arg)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return not (isinstance(value, float) and math.isnan(value))
    try:
        float(str(value).strip())
    except ValueError:
        return False
    return True


def _pick(header: Sequence[str], names: Sequence[str], exclude: Sequence[str | None] = ()) -> str | None:
    lowered = {h.lower(): h for h in header if h not in exclude}
    return next((lowered[n] for n in names if n in lowered), None)


def _profile(path: Path) -> tuple[list[str], dict[str, Column], int]:
    """The file's (or a folder's files') columns and what they hold: the table reader's own reading."""
    files = table_files(path)
    header = read_header(files[0])
    if not header:  # .txt: one sentence a line
        values = [v for f in files for v in read_table(f, ["text"]).columns["text"]]
        kept = [v for v in values if v not in (None, "")]
        return ["text"], {"text": Column("text", kept, len(values))}, len(values)
    columns: dict[str, list[Any]] = {h: [] for h in header}
    rows = 0
    for f in files:
        table = read_table(f, [], optional=header)
        for h in header:
            columns[h] += table.columns.get(h, [None] * len(table))
        rows += len(table)
    return header, {h: Column(h, [v for v in vs if v is not None and str(v).strip() != ""], rows)
                    for h, vs in columns.items()}, rows


def _looks_like_eval(path: Path) -> bool:
    return bool(EVAL_WORDS & set(re.split(r"[^a-z]+", table_stem(path).lower())))


def role_keys() -> dict[str, tuple[str, ...]]:
    """The column-map keys of each role: a config's `columns:` keys for that kind of input (flows.run.config)."""

    models = {"corpus": CorpusColumns, "pairs": PairColumns, "nli": NliColumns, "sts": StsColumns,
              "eval-pairs": LabeledPairColumns}
    return {role: tuple(model.model_fields) for role, model in models.items()}


# A key of another role's map that means the same column here (sentence1 of a pairs file is its anchor).
_SAME_COLUMN = {"anchor": "sentence1", "positive": "sentence2", "sentence1": "anchor", "sentence2": "positive"}


def parse_columns(specs: Sequence[str]) -> list[tuple[str, str]]:
    """`--columns` values (`text=headline,domain=desk`, or `{text: headline}`; repeatable) as (key, column) pairs
    (`dataio.column_specs.parse_column_specs`), the keys those of a config's `columns:` for any kind of input."""
    return parse_column_specs(specs, sorted({k for keys in role_keys().values() for k in keys}))


def _given_for(role: str, given: Mapping[str, str]) -> dict[str, str]:
    """The part of a column map that applies to a file of `role` (sentence1 read as a pairs file's anchor)."""
    keys = role_keys()[role]
    out = {k: v for k, v in given.items() if k in keys}
    for k, v in given.items():
        if k not in keys and _SAME_COLUMN.get(k) in keys:
            out.setdefault(_SAME_COLUMN[k], v)
    return out


def _label_kind(column: Column) -> str:
    return "yes/no" if any(not _is_number(v) for v in column.values) else "0/1"


def _id_like(column: Column) -> bool:
    name = column.name.lower()
    return name in ID_NAMES or name.endswith("_id")


def _similar_lengths(a: Column, b: Column) -> bool:
    """Two sentence columns of comparable length, as the two sides of a pair are (a headline and its summary
    are not)."""
    short, long = sorted((a.mean_length, b.mean_length))
    return short > 0 and long / short <= 2.5


def describe_file(arg: str, columns: Sequence[tuple[str, str]] | Mapping[str, str] = ()) -> FileRole:
    """The role and column map of one `PATH` or `ROLE=PATH` argument; `columns`: the (key, column) pairs given
    with `--columns` (those naming a column of this file fix that column, and say what the file is)."""
    role, path = _split_arg(arg)
    if not path.exists():
        raise InputError("no such file; check the path", path=path)
    header, cols, rows = _profile(path)
    given = columns_for(header, list(columns.items()) if isinstance(columns, Mapping) else columns, where=path)
    texts = [h for h in header if cols[h].text]
    sentences = [h for h in texts if cols[h].sentence]
    first = given.get("anchor") or given.get("sentence1") or _pick(texts, FIRST_NAMES)
    second = given.get("positive") or given.get("sentence2") or _pick(texts, SECOND_NAMES, exclude=[first])
    negative = given.get("negative") or _pick(texts, NEGATIVE_NAMES, exclude=[first, second])
    scores = [h for h in header if cols[h].score and not _id_like(cols[h])]
    score = given.get("score") or _pick(scores, SCORE_NAMES) or next(
        (h for h in scores if all(-1.0 <= float(v) <= 5.0 for v in cols[h].values)), None)
    labels = [h for h in header if cols[h].labels and h not in given.values()]
    label = given.get("label") or _pick(labels, LABEL_NAMES) or (labels[0] if len(labels) == 1 else None)
    if first is None or second is None:  # two sentence columns of a team's own names, beside a label or score
        spare = [h for h in sentences if h not in (first, second, negative)]
        if role in ("pairs", "sts", "eval-pairs") and len(spare) < 2 and len(texts) == 2:
            spare = list(texts)
        if (score or label or role in ("pairs", "sts", "eval-pairs")) and len(spare) >= 2 and \
                (role is not None or _similar_lengths(cols[spare[0]], cols[spare[1]])):
            first, second = first or spare[0], second or next(h for h in spare if h != (first or spare[0]))
    corpus_keys = {"text", "id", "domain"} & set(given)
    if role is not None:
        why = "given"
    elif corpus_keys:
        role, why = "corpus", f"--columns {', '.join(sorted(corpus_keys))}"
    elif first and second and negative:
        role, why = "nli", f"columns {first}, {second}, {negative}"
    elif first and second and score:
        role, why = "sts", f"a graded {score!r} column"
    elif first and second and label:
        kind = _label_kind(cols[label])
        role = "eval-pairs" if _looks_like_eval(path) else "pairs"
        why = (f"{kind} {label!r} column, and the file name says evaluation" if role == "eval-pairs" else
               f"{kind} {label!r} column: rows labeled {kind.split('/')[1]} are dropped, pairs are trained on as "
               f"positives; to evaluate on it instead give eval-pairs={path}")
    elif first and second and not any(cols[h].numeric for h in header):
        role, why = "pairs", f"two text columns {first}, {second}"
    else:
        role, why = "corpus", "one text per row"
        if len(sentences) >= 2 and scores and score is None:
            low, high = (f(float(v) for v in cols[scores[0]].values) for f in (min, max))
            why += (f" (its numbers {scores[0]!r}, {low:g} to {high:g}, are not on an STS scale, -1 to 5: if they "
                    f"score the similarity of {sentences[0]!r} and {sentences[1]!r}, give --columns "
                    f"score={scores[0]} or sts={path})")
        elif len(sentences) >= 2:
            why += (f" (its text columns {', '.join(sentences[:3])} have no label or score beside them, or differ "
                    f"in length as a text and its summary do; if it holds pairs, give pairs={path}, sts={path} or "
                    f"eval-pairs={path})")
    found = FileRole(path=path, role=role, rows=rows, why=why)
    if role == "corpus":
        _corpus_columns(found, header, cols, _given_for("corpus", given))
        found.texts = [str(v) for v in cols[found.columns["text"]].values[:20_000]] \
            if found.columns["text"] in cols else []
        return found
    wanted = {"pairs": ("anchor", "positive"), "nli": ("anchor", "positive", "negative"),
              "sts": ("sentence1", "sentence2"), "eval-pairs": ("sentence1", "sentence2")}[role]
    chosen = [first, second, negative][: len(wanted)]
    if any(c is None for c in chosen):
        raise InputError(f"cannot tell the {', '.join(wanted)} columns of this {role} file from its columns "
                         f"{header}; name them: --columns {','.join(f'{w}=COLUMN' for w in wanted)}", path=path)
    found.columns = dict(zip(wanted, chosen))  # type: ignore[arg-type]
    extra = {"sts": ("score", score or _pick([h for h in header if cols[h].numeric], SCORE_NAMES + LABEL_NAMES)
                     or (scores[0] if len(scores) == 1 else None)),
             "eval-pairs": ("label", label),
             "pairs": ("label", given.get("label") or (label if label and cols[label].labels else None))}.get(role)
    if extra is not None:
        if extra[1] is None and role != "pairs":
            raise InputError(f"no {extra[0]} column found among {header} for this {role} file; name it: "
                             f"--columns {extra[0]}=COLUMN", path=path)
        if extra[1] is not None:
            found.columns[extra[0]] = extra[1]
    found.texts = [str(v) for c in chosen[:2] for v in cols[c].values[:10_000]]  # type: ignore[index]
    return found


def _domain_choices(cols: Mapping[str, Column], exclude: Sequence[str | None]) -> list[tuple[float, Column]]:
    """The corpus's domain candidates, best first: (score, column). The score is the entropy of the split the
    column makes (more groups, and more evenly filled, score higher: the in_domain band draws a negative from
    the anchor's group, so a group holding most of the corpus is hardly a domain), weighed a little by the
    column's name (`TOPIC_WORDS`, `SOURCE_WORDS`)."""
    scored = []
    for column in cols.values():
        if column.name in exclude or not column.category:
            continue
        entropy, _ = column.split()
        words = set(re.split(r"[^a-z]+", column.name.lower()))
        weight = NAME_WEIGHT if words & TOPIC_WORDS else 1 / NAME_WEIGHT if words & SOURCE_WORDS else 1.0
        scored.append((entropy * weight, column))
    return sorted(scored, key=lambda s: -s[0])


def _describe_split(column: Column) -> str:
    _, evenness = column.split()
    return f"{column.distinct} values, evenness {evenness:.2f}"


def _corpus_columns(found: FileRole, header: Sequence[str], cols: Mapping[str, Column],
                    given: Mapping[str, str]) -> None:
    texts = [h for h in header if cols[h].text]
    if not texts and "text" not in given:
        raise InputError(f"no text column among {list(header)}", path=found.path)
    sentences = [h for h in texts if cols[h].sentence]
    named = _pick(texts, TEXT_NAMES)
    text = given.get("text") or named or max(sentences or texts, key=lambda h: cols[h].mean_length)
    found.columns["text"] = text
    others = [h for h in sentences if h != text]
    if others:
        why = ("given with --columns" if "text" in given else "named like a text column" if text == named
               else "the longest running text")
        found.choices.append(Choice("text", f"column {text!r}", why,
                                    f"to read {others[0]!r} instead: data.corpus.columns.text: {others[0]}"))
    ident = given.get("id") or _pick(header, ID_NAMES, exclude=[text]) or next(
        (h for h in header if h != text and h.lower().endswith("_id")), None)
    if ident is not None and ("id" in given or (ident in cols and cols[ident].distinct == found.rows
                                                and len(cols[ident].values) == found.rows)):
        found.columns["id"] = ident
    if "domain" in given:
        found.columns["domain"] = given["domain"]
        found.domains = cols[given["domain"]].distinct
        found.choices.append(Choice("domain", f"column {given['domain']!r}", "given with --columns", ""))
        return
    ranked = _domain_choices(cols, [text, found.columns.get("id")])
    if not ranked:
        return
    best = ranked[0][1]
    found.columns["domain"] = best.name
    found.domains = best.distinct
    rivals = [c for _, c in ranked[1:3]]
    why = f"{_describe_split(best)} over the {found.rows} rows"
    if rivals:
        why += " (" + "; ".join(f"{c.name}: {_describe_split(c)}" for c in rivals) + ")"
    why += "; the in_domain band draws each anchor's negative from its group"
    change = (f"to use {rivals[0].name!r} instead: data.corpus.columns.domain: {rivals[0].name}" if rivals else
              "to label every row the same instead: data.corpus.domain_label: my-team")
    found.choices.append(Choice("domain", f"column {best.name!r}", why, change))


_WORD = re.compile(r"[^\W\d_]+")


def _words(texts: Sequence[str]) -> list[str]:
    return [w for t in texts for w in _WORD.findall(t.lower()) if len(w) > 2 and w not in STOPWORDS]


def eval_metric_names(files: Sequence[FileRole]) -> dict[int, str]:
    """The metric name (`sts/<stem>`, `pairs/<stem>`) of each evaluation file, by its index in `files`, as the
    evaluation names it (`simcse.evaluation.file_metric_names`)."""
    sts = [i for i, f in enumerate(files) if f.role == "sts"]
    pairs = [i for i, f in enumerate(files) if f.role == "eval-pairs"]
    names = file_metric_names([files[i].path for i in sts], [files[i].path for i in pairs])
    return dict(zip(sts + pairs, names))


def choose_dev_metric(files: Sequence[FileRole]) -> str | None:
    """The dev metric of the config: the evaluation file whose texts are most like the training texts (the share
    of its words, stopwords left out, that occur in the corpus, pairs and NLI files), ties going to labeled pairs,
    then the first given. The choice, with the others' shares, is added to that file's `choices`."""
    names = eval_metric_names(files)
    if not names:
        return None
    if len(names) == 1:
        return next(iter(names.values()))
    vocabulary = set(_words([t for f in files if f.role in ("corpus", "pairs", "nli") for t in f.texts]))
    shares = {}
    for i in names:
        words = _words(files[i].texts)
        shares[i] = sum(w in vocabulary for w in words) / len(words) if words else 0.0
    order = sorted(names, key=lambda i: (-round(shares[i], 2), files[i].role != "eval-pairs", i))
    best, rivals = order[0], order[1:]
    why = (f"{shares[best]:.0%} of its words occur in the training texts ("
           + "; ".join(f"{names[i]}: {shares[i]:.0%}" for i in rivals)
           + "): the most in-domain evaluation file picks the round to use")
    files[best].choices.append(Choice("dev metric", names[best], why,
                                      f"to use {names[rivals[0]]} instead: eval.dev_metric: {names[rivals[0]]}"))
    return names[best]
