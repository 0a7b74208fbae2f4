"""`simcse-curriculum init`: a team's files in, a commented run config out that runs as is.

Each file's role (corpus, training pairs, NLI triplets, STS or labeled evaluation pairs) comes from its
columns, read with the project's table reader (`dataio.tables.read_header`, `read_table`), or from a
`ROLE=PATH` prefix when the columns cannot tell (labeled pairs are evaluation pairs when the file name says
dev/eval/test/valid, else training pairs whose label-0 rows are dropped). Columns are recognised by name
first: a canonical name or one of its aliases in `dataio.tables.COLUMN_ALIASES` (the table every loader
reads), then a few names only this guess knows. A corpus's text column is the one so named, else the
longest text column; an id column has unique values; a domain column is a short text column with few
distinct values. The config names every column it reads, lists the bands the
inputs allow and sizes batch and steps from the data; it is validated (`flows.validate.check_run`) before
it is written, and an existing file is never overwritten without `--force`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataio.errors import InputError
from dataio.tables import COLUMN_ALIASES

ROLES = ("corpus", "pairs", "nli", "sts", "eval-pairs")


def _names(column: str, *guesses: str) -> tuple[str, ...]:
    """The names a column is looked for under, in order: its canonical name and the aliases every loader reads
    it under (`dataio.tables.COLUMN_ALIASES`, the one table), then `guesses`, names only `init` recognises
    (the config it writes then names such a column, so the loaders need not know it)."""
    return tuple(dict.fromkeys((column, *COLUMN_ALIASES.get(column, ()), *guesses)))


TEXT_NAMES = _names("text", "tweet", "content", "body", "message", "title", "question")
DOMAIN_NAMES = _names("domain", "topic", "category", "source", "subject", "label", "class")
ID_NAMES = _names("id", "uid", "doc_id", "sentence_id", "tweet_id")
FIRST_NAMES = _names("anchor", "sentence1", "text1", "text_a", "question1", "s1")
SECOND_NAMES = _names("positive", "sentence2", "text2", "text_b", "question2", "s2")
NEGATIVE_NAMES = _names("negative")
SCORE_NAMES = _names("score", "similarity", "sim", "relatedness", "gold")
LABEL_NAMES = _names("label", "labels", "is_paraphrase", "is_duplicate", "paraphrase")
EVAL_WORDS = {"dev", "eval", "evaluation", "test", "valid", "validation", "val", "holdout"}


@dataclass
class FileRole:
    """One input file and what the config reads from it."""

    path: Path
    role: str  # one of ROLES
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> the file's column
    rows: int = 0
    why: str = ""
    domains: int = 0  # distinct values of the domain column (corpus)


def _split(arg: str) -> tuple[str | None, Path]:
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


def _pick(header: Sequence[str], names: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    lowered = {h.lower(): h for h in header if h not in exclude}
    return next((lowered[n] for n in names if n in lowered), None)


def _profile(path: Path) -> tuple[list[str], dict[str, list[Any]], int]:
    """The file's columns and values (the table reader's own reading)."""
    from dataio.tables import read_header, read_table

    header = read_header(path)
    if not header:  # .txt: one sentence a line
        table = read_table(path, ["text"])
        return ["text"], {"text": table.columns["text"]}, len(table)
    table = read_table(path, [], optional=header)
    return header, {h: table.columns.get(h, []) for h in header}, len(table)


def _text_columns(header: Sequence[str], values: dict[str, list[Any]]) -> list[str]:
    return [h for h in header if values[h] and not all(_is_number(v) for v in values[h] if v not in (None, ""))]


def _mean_length(values: list[Any]) -> float:
    texts = [str(v) for v in values if v not in (None, "")]
    return sum(len(t) for t in texts) / len(texts) if texts else 0.0


def _binary(values: list[Any]) -> bool:
    return {float(v) for v in values if v not in (None, "") and _is_number(v)} <= {0.0, 1.0}


def _looks_like_eval(path: Path) -> bool:
    return bool(EVAL_WORDS & set(re.split(r"[^a-z]+", path.stem.lower())))


def describe_file(arg: str) -> FileRole:
    """The role and column map of one `PATH` or `ROLE=PATH` argument."""
    role, path = _split(arg)
    if not path.exists():
        raise InputError("no such file; check the path", path=path)
    header, values, rows = _profile(path)
    texts = _text_columns(header, values)
    numeric = [h for h in header if h not in texts]
    first, second = _pick(texts, FIRST_NAMES), _pick(texts, SECOND_NAMES)
    negative = _pick(texts, NEGATIVE_NAMES)
    score = _pick(numeric, SCORE_NAMES)
    label = _pick(numeric, LABEL_NAMES)
    if (first is None or second is None) and len(texts) == 2 and (score or label or role in ("pairs", "sts",
                                                                                              "eval-pairs")):
        first, second = texts  # two text columns with other names
    if role is None:
        if first and second and negative:
            role, why = "nli", f"columns {first}, {second}, {negative}"
        elif first and second and score and not _binary(values[score]):
            role, why = "sts", f"a graded {score!r} column"
        elif first and second and label and _binary(values[label]):
            role = "eval-pairs" if _looks_like_eval(path) else "pairs"
            why = (f"0/1 {label!r} column, and the file name says evaluation" if role == "eval-pairs" else
                   f"0/1 {label!r} column: rows labeled 0 are dropped, pairs are trained on as positives; to "
                   f"evaluate on it instead give eval-pairs={path}")
        elif first and second and not numeric:
            role, why = "pairs", f"two text columns {first}, {second}"
        else:
            role, why = "corpus", "one text per row"
    else:
        why = "given"
    found = FileRole(path=path, role=role, rows=rows, why=why)
    if role == "corpus":
        _corpus_columns(found, header, values, texts)
    else:
        wanted = {"pairs": ("anchor", "positive"), "nli": ("anchor", "positive", "negative"),
                  "sts": ("sentence1", "sentence2"), "eval-pairs": ("sentence1", "sentence2")}[role]
        chosen = [first, second, negative][: len(wanted)]
        if any(c is None for c in chosen):
            raise InputError(f"cannot tell the {', '.join(wanted)} columns of this {role} file from its columns "
                             f"{header}; rename them to {', '.join(wanted)}", path=path)
        found.columns = dict(zip(wanted, chosen))  # type: ignore[arg-type]
        extra = {"sts": ("score", score or _pick(numeric, SCORE_NAMES + LABEL_NAMES)),
                 "eval-pairs": ("label", label), "pairs": ("label", label if label and _binary(values[label])
                                                           else None)}.get(role)
        if extra is not None:
            if extra[1] is None and role != "pairs":
                raise InputError(f"no {extra[0]} column found among {header} for this {role} file; rename it to "
                                 f"{extra[0]}", path=path)
            if extra[1] is not None:
                found.columns[extra[0]] = extra[1]
    return found


def _corpus_columns(found: FileRole, header: Sequence[str], values: dict[str, list[Any]], texts: list[str]) -> None:
    if not texts:
        raise InputError(f"no text column among {list(header)}", path=found.path)
    text = _pick(texts, TEXT_NAMES) or max(texts, key=lambda h: _mean_length(values[h]))
    found.columns["text"] = text
    rows = max(1, found.rows)
    ident = _pick(header, ID_NAMES, exclude=[text]) or next(
        (h for h in header if h != text and h.lower().endswith("_id")), None)
    if ident is not None and len({str(v) for v in values[ident]}) == len(values[ident]):
        found.columns["id"] = ident
    others = [h for h in texts if h not in (text, found.columns.get("id"))]
    candidates = [h for h in others if 2 <= len({str(v) for v in values[h] if v not in (None, "")})
                  <= max(2, min(100, rows // 2)) and _mean_length(values[h]) < 40]
    domain = _pick(candidates, DOMAIN_NAMES) or (candidates[0] if candidates else None)
    if domain is not None:
        found.columns["domain"] = domain
        found.domains = len({str(v) for v in values[domain] if v not in (None, "")})


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def _entry(f: FileRole, base: Path, canonical: Sequence[str], indent: str) -> list[str]:
    lines = [f"{indent}path: {_quote(_rel(f.path, base))}"]
    renames = {k: v for k, v in f.columns.items() if k != v}
    kept = {k: v for k, v in f.columns.items() if k == v}
    if renames:
        lines.append(f"{indent}columns: {{{', '.join(f'{k}: {_quote(v)}' for k, v in renames.items())}}}"
                     + (f"   # also read as named: {', '.join(kept)}" if kept else ""))
    else:
        lines.append(f"{indent}# columns: {', '.join(canonical)} (read under these names)")
    lines.append(f"{indent}# licence: CC-BY-4.0   # the data's licence, named in the model cards")
    return lines


def _quote(value: str) -> str:
    import yaml

    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


# Where `init` looks for a teacher a team installed with `simcse-curriculum teacher install` (relative to the config).
TEACHER_PLACES = ("models/all-mpnet-base-v2", "teacher")


def find_teacher(base: Path) -> str | None:
    """A teacher folder beside the config (`TEACHER_PLACES`), as the config would name it; None when none."""
    for place in TEACHER_PLACES:
        if (base / place / "modules.json").is_file():
            return f"./{place}"
    return None


def _teacher_lines(teacher: str | None, found: bool) -> list[str]:
    """The config's teacher: on when the team named one (--teacher), offered commented out when one was found."""
    why = ("a stronger frozen encoder that judges every mined pair "
           "(docs/mining.md#the-judge-mined-positives-and-a-teacher)")
    if teacher and not found:
        return [f"teacher:   # {why}", f"  path: {_quote(teacher)}"]
    if teacher:
        return [f"# teacher:   # found {teacher}: {why}; uncomment to use it",
                f"#   path: {_quote(teacher)}"]
    return ["# teacher: {path: models/all-mpnet-base-v2}   # a stronger judge of mined pairs, offline: pip install "
            "'simcse-curriculum[teacher]'; simcse-curriculum teacher install --out models/all-mpnet-base-v2"]


def render_config(files: list[FileRole], config_path: Path, output_dir: str, model: str, anchors: int,
                  teacher: str | None = None, teacher_found: bool = False) -> str:
    """The commented YAML text of the config."""
    base = config_path.parent
    by_role: dict[str, list[FileRole]] = {}
    for f in files:
        by_role.setdefault(f.role, []).append(f)
    for role in ("corpus", "pairs", "nli"):
        if len(by_role.get(role, [])) > 1:
            raise InputError(f"{len(by_role[role])} {role} files ({', '.join(str(f.path) for f in by_role[role])});"
                             f" a run takes one: merge them into one file")
    if not any(r in by_role for r in ("corpus", "pairs", "nli")):
        raise InputError("no training input among the files: give a corpus (one text per row), pairs or NLI "
                         "triplets")
    batch = 32 if anchors >= 64 else max(2, anchors // 2)
    steps = min(200, max(10, math.ceil(anchors / batch)))
    corpus = by_role.get("corpus", [None])[0]
    has_domain = corpus is not None and "domain" in corpus.columns
    out = [f"# A curriculum run written by `simcse-curriculum init` from {len(files)} file(s). It runs as is:",
           f"#   simcse-curriculum run {config_path.name} --dry-run    # checks every file, estimates time and disk",
           f"#   simcse-curriculum run {config_path.name}",
           "# Paths are relative to this file. Every key: docs/flows.md#configs.",
           f"output_dir: {_quote(output_dir)}   # the run folder; everything the run writes stays inside it",
           "seed: 0",
           "rounds: 3   # each round: mine negatives with the current model, then train on them",
           f"steps_per_round: {steps}   # about one pass over the {anchors} anchors a round (10 to 200)",
           f"batch_size: {batch}" + ("" if batch == 32 else f"   # half the {anchors} anchors: a batch never "
                                     f"repeats a sentence"),
           "model:",
           f"  name_or_path: {_quote(model)}",
           "  max_length: 32   # tokens per sentence in training",
           "data:"]
    if corpus is not None:
        out.append(f"  corpus:   # {corpus.rows} rows; {corpus.why}")
        out += _entry(corpus, base, ("text", "id", "domain"), "    ")
        if not has_domain:
            out.append("    # domain_label: my-team   # one domain label for every row (no domain column was found)")
    for role, key, canonical in (("pairs", "pairs", ("anchor", "positive", "label")),
                                 ("nli", "nli", ("anchor", "positive", "negative"))):
        for f in by_role.get(role, []):
            out.append(f"  {key}:   # {f.rows} rows; {f.why}")
            out += _entry(f, base, canonical, "    ")
    evals = [(f, "sts") for f in by_role.get("sts", [])] + [(f, "pairs") for f in by_role.get("eval-pairs", [])]
    if evals:
        out.append("eval:   # scored before training and after every round")
        for kind in ("sts", "pairs"):
            chosen = [f for f, k in evals if k == kind]
            if not chosen:
                continue
            what = "Spearman x 100 of cosine similarity" if kind == "sts" else "average precision of cosine similarity"
            out.append(f"  {kind}:   # {what}")
            for f in chosen:
                canonical = ("sentence1", "sentence2", "score" if kind == "sts" else "label")
                entry = _entry(f, base, canonical, "      ")
                out.append("    - " + entry[0].strip())
                out += entry[1:]
        dev_kind = "pairs" if by_role.get("eval-pairs") else "sts"
        dev = (by_role.get("eval-pairs") or by_role["sts"])[0]
        out.append(f"  dev_metric: {dev_kind}/{dev.path.stem}   # picks the model to use (the best round by it)")
    else:
        out += ["# eval:   # no evaluation file: add one to pick the best round",
                "#   pairs: [dev_pairs.csv]   # sentence1, sentence2, label (0/1)"]
    bands = ["random", "in_domain"] + (["nli_contradiction"] if by_role.get("nli") else []) + ["nearest_neighbour"]
    domain_note = (f"the {corpus.columns['domain']!r} column's {corpus.domains} labels" if has_domain and corpus
                   else "k-means clusters (no domain column)")
    out += ["mining:",
            f"  bands: [{', '.join(bands)}]",
            f"  # random: any other sentence; in_domain: the same domain ({domain_note})"
            + ("; nli_contradiction: the labeled contradiction" if by_role.get("nli") else "")
            + "; nearest_neighbour: the most similar other sentence (the hardest)",
            "curriculum:",
            "  pacing: root   # from easy to hard bands, competence 1 (every band) on the last round",
            "  total: auto    # = the run's last round, whatever `rounds` is",
            "training: {}     # lr, temperature, ... (docs/simcse.md)"]
    out += _teacher_lines(teacher, teacher_found) + [""]
    return "\n".join(out)


def scaffold(args: Sequence[str], out: Path, *, output_dir: str | None = None, model: str = "all-MiniLM-L6-v2",
             force: bool = False, teacher: str | None = None) -> tuple[Path, list[FileRole], Any]:
    """Write the config for `args` (`PATH` or `ROLE=PATH`) to `out` after checking that it runs; returns the
    path, the files' roles and the check (`flows.validate.RunCheck`). `teacher`: a teacher folder the run uses;
    without it, one found beside the config (`find_teacher`) is offered, commented out."""
    from dataio.atomic import atomic_path
    from flows.config import load_config
    from flows.validate import check_run

    out = Path(out)
    if out.exists() and not force:
        raise InputError("the config file exists; pick another --out or give --force to overwrite it", path=out)
    if not args:
        raise InputError("no files given: name the team's corpus, pairs and evaluation files")
    files = [describe_file(a) for a in args]
    output_dir = output_dir or f"runs/{out.stem}"
    if Path(model).exists():  # a model folder: named relative to the config, like every other path in it
        model = _rel(Path(model), out.parent)
        model = model if model.startswith((".", "/")) else f"./{model}"
    found = teacher is None
    if teacher is not None:
        teacher = _rel(Path(teacher), out.parent)
        teacher = teacher if teacher.startswith((".", "/")) else f"./{teacher}"
    else:
        teacher = find_teacher(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # checked under a temporary name beside `out`, so paths resolve the same
        # First with the smallest batch, to learn the anchors the loaders keep (empty, duplicate and label-0
        # rows dropped); then sized from them and checked again, as it will run.
        tmp.write_text(render_config(files, out, output_dir, model, 2, teacher, found), encoding="utf-8")
        anchors = check_run(load_config(tmp)).corpus.n_anchor_rows
        tmp.write_text(render_config(files, out, output_dir, model, anchors, teacher, found), encoding="utf-8")
        check = check_run(load_config(tmp))
    return out, files, check
