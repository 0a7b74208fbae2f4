"""`simcse-curriculum init`: a team's files in, a commented run config out that runs as is.

What each file is (its role, its columns, a corpus's domain column, the dev metric among several evaluation files)
is `flows.rounds.input_files`' guess, with its rules. Each such choice is printed with how to change it, and
written as a comment beside the key it sets. The config names every column it reads, lists the bands the inputs
allow and sizes batch and steps from the data; it is validated (`flows.rounds.validate.check_run`) as the file it
will be, before it is written (no message names a temporary file), and an existing file is never overwritten
without `--force`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dataio.atomic import atomic_write_text
from dataio.errors import InputError, InputErrors, did_you_mean
from dataio.table_files import table_files
from dataio.tables import read_header
from flows.rounds.input_files import FileRole, choose_dev_metric, describe_file, parse_columns
from flows.rounds.validate import check_run
from flows.run.config import config_from_text


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
    for choice in f.choices:
        if choice.what != "dev metric":
            lines.append(f"{indent}# {choice.line()}")
    lines.append(f"{indent}# licence: CC-BY-4.0   # the data's licence, named in the model cards")
    return lines


def _quote(value: str) -> str:
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


def _teacher_lines(teacher: str | None, found: bool, on_when_found: bool = False) -> list[str]:
    """The config's teacher: on when the team named one (--teacher); one found beside the config is on where it
    was measured to help (`on_when_found`: an unlabeled corpus), else offered commented out."""
    why = ("a stronger frozen encoder that judges every mined pair "
           "(docs/mining.md#the-judge-mined-positives-and-a-teacher)")
    if teacher and not found:
        return [f"teacher:   # {why}", f"  path: {_quote(teacher)}"]
    if teacher and on_when_found:
        return [f"teacher:   # found {teacher}: {why}; it encodes the corpus once per run (cached). Without it: "
                "delete these two lines and mining.params' mined_positives, positive_mutual and positive_min_score",
                f"  path: {_quote(teacher)}"]
    if teacher:
        return [f"# teacher:   # found {teacher}: {why}; uncomment to use it",
                f"#   path: {_quote(teacher)}"]
    hint = ["# teacher: {path: models/all-mpnet-base-v2}   # a stronger judge of mined pairs, offline: pip install "
            "'simcse-curriculum[teacher]'; simcse-curriculum teacher install --out models/all-mpnet-base-v2"]
    if on_when_found:  # where it helps, say how much and what else to set
        hint.append("# with it, also set mining.params mined_positives: true, positive_mutual: true, "
                    "positive_min_score: 0.8 (+0.41 AP over in-batch alone on Twitter, docs/results.md)")
    return hint


# An unlabeled corpus alone: the judge experiment's answer (docs/results.md), as configs/domain_unlabeled.yaml (with a
# teacher) and configs/domain_no_teacher.yaml (without) ship it. Nearest neighbours as negatives, and a curriculum
# over them, did worse than plain in-batch SimCSE there: a domain corpus's neighbours are often paraphrases.
def _unlabeled_lines(teacher: str | None) -> list[str]:
    """The method of a run on an unlabeled corpus: in-batch negatives, the word-deletion view as the positive, and
    with a teacher its confident mutual nearest neighbour as the positive instead."""
    params = ("{mined_positives: true, positive_mutual: true, positive_min_score: 0.8, similarity_sample: 1024}"
              if teacher else "{similarity_sample: 1024}")
    return ["negatives: in_batch   # a corpus's nearest neighbours are often paraphrases: as negatives they hurt "
            "(docs/results.md)",
            "positive_view: word_deletion   # a text's positive: itself with 20 % of its words deleted",
            "word_deletion: 0.2",
            "mining:",
            "  bands: [random]   # in-batch negatives read no mined one; the band statistics come from a sample",
            f"  params: {params}"
            + ("   # the teacher's mutual nearest neighbour above cosine 0.8 is the positive instead (21 % of "
               "tweets in the judge experiment, its winner)" if teacher else ""),
            "curriculum:",
            "  mode: static",
            "  static: {weights: {random: 1.0}}",
            "training: {lr: 1.0e-5, temperature: 0.1}   # the judge experiment's settings for an unlabeled corpus "
            "(docs/results.md)"]


# NLI triplets alone: the curriculum experiment's answer for labeled NLI data (docs/results.md): the order of the
# negatives made no difference, and the curriculum did worse than the SimCSE recipe on the tuned start; as
# configs/nli_supervised.yaml ships it.
def _nli_recipe_lines() -> list[str]:
    """The method of a run on NLI triplets alone: supervised SimCSE, the contradiction as the hard negative."""
    return ["mining:",
            "  bands: [nli_contradiction]   # the labeled contradiction as the hard negative: the SimCSE recipe",
            "  params: {similarity_sample: 1024}   # it needs no vector: the band statistics come from a sample",
            "curriculum:   # the curriculum over mined bands did worse than this recipe on NLI (docs/results.md)",
            "  mode: static",
            "  static: {weights: {nli_contradiction: 1.0}}",
            "training: {lr: 5.0e-5}   # the curriculum experiment's learning rate for NLI (docs/experiment.md)"]


# Labeled data otherwise (training pairs, or NLI beside a corpus): the banded curriculum, not measured as such.
def _curriculum_lines(by_role: Mapping[str, list[FileRole]], corpus: FileRole | None, has_domain: bool) -> list[str]:
    """The method of a run on labeled data that no experiment measured as such: every band the inputs allow,
    paced from easy to hard."""
    bands = ["random", "in_domain"] + (["nli_contradiction"] if by_role.get("nli") else []) + ["nearest_neighbour"]
    domain_note = (f"the {corpus.columns['domain']!r} column's {corpus.domains} labels" if has_domain and corpus
                   else "k-means clusters (no domain column)")
    return ["mining:",
            f"  bands: [{', '.join(bands)}]",
            f"  # random: any other sentence; in_domain: the same domain ({domain_note})"
            + ("; nli_contradiction: the labeled contradiction" if by_role.get("nli") else "")
            + "; nearest_neighbour: the most similar other sentence (the hardest)",
            "curriculum:",
            "  pacing: root   # from easy to hard bands, competence 1 (every band) on the last round",
            "  total: auto    # = the run's last round, whatever `rounds` is",
            "  # unit: step   # competence grows every step instead of every round: needed to reach the hard bands "
            "with rounds: 1",
            "training: {}     # lr, temperature, ... (docs/simcse.md)"]


def _one_file_per_role(by_role: Mapping[str, list[FileRole]]) -> None:
    """A run reads one corpus, one pairs and one NLI file: several files of one of these roles are either a
    misread role or a corpus split in parts; the error says which files, why each was read so, and both fixes."""
    for role in ("corpus", "pairs", "nli"):
        found = by_role.get(role, [])
        if len(found) > 1:
            each = "; ".join(f"{f.path}: {f.why}" for f in found)
            raise InputError(f"{len(found)} files read as {role} files ({each}). A run reads one {role} file: if "
                             f"some are not {role} files, give their roles as ROLE=PATH (corpus=, pairs=, nli=, "
                             f"sts=, eval-pairs=) or name their columns with --columns; if they are parts of one "
                             f"{role}, put them in one folder and give the folder (its files are read in sorted "
                             f"order, with the same columns)")


def _eval_lines(files: list[FileRole], by_role: dict[str, list[FileRole]], base: Path,
                dev_metric: str | None) -> list[str]:
    """The config's `eval:` section: each evaluation file by kind, and the dev metric with why it was chosen (a
    commented example where no evaluation file was given)."""
    out: list[str] = []
    evals = [(f, "sts") for f in by_role.get("sts", [])] + [(f, "pairs") for f in by_role.get("eval-pairs", [])]
    if evals:
        dev_metric = dev_metric or choose_dev_metric(files)
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
        dev_choice = next((c for f in files for c in f.choices if c.what == "dev metric"), None)
        out.append(f"  dev_metric: {dev_metric}   # picks the model to use (the best round by it)")
        if dev_choice is not None:
            out.append(f"  # {dev_choice.line()}")
    else:
        out += ["# eval:   # no evaluation file: add one to pick the best round",
                "#   pairs: [dev_pairs.csv]   # sentence1, sentence2, label (0/1)"]
    return out


def render_config(files: list[FileRole], config_path: Path, output_dir: str, model: str, anchors: int,
                  teacher: str | None = None, teacher_found: bool = False, dev_metric: str | None = None) -> str:
    """The commented YAML text of the config; `dev_metric`: the metric `choose_dev_metric` chose (default: chosen
    here)."""
    base = config_path.parent
    by_role: dict[str, list[FileRole]] = {}
    for f in files:
        by_role.setdefault(f.role, []).append(f)
    _one_file_per_role(by_role)
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
           "# Paths are relative to this file. Every key: docs/flows.md#configs. The guesses init made (columns, "
           "domain, dev metric) are",
           "# commented where they are set, with how to change them.",
           f"output_dir: {_quote(output_dir)}   # the run folder; everything the run writes stays inside it",
           "seed: 0",
           "rounds: 3   # each round: mine negatives with the current model, then train on them (one round, as a "
           "nightly run: set curriculum.unit: step)",
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
    out += _eval_lines(files, by_role, base, dev_metric)
    unlabeled = corpus is not None and not by_role.get("pairs") and not by_role.get("nli")
    if unlabeled:
        method = _unlabeled_lines(teacher)
    elif by_role.get("nli") and corpus is None and not by_role.get("pairs"):
        method = _nli_recipe_lines()
    else:
        method = _curriculum_lines(by_role, corpus, has_domain)
    # A teacher found beside the config is on only where it was measured to help: an unlabeled corpus.
    out += method + _teacher_lines(teacher, teacher_found, on_when_found=unlabeled) + [""]
    return "\n".join(out)


def _check_given_columns(given: Sequence[tuple[str, str]], files: Sequence[FileRole],
                         headers: Mapping[Path, list[str]]) -> None:
    """Every column `--columns` names is a column of some file given (else the closest name among them), read
    by the file's role."""
    every = list(dict.fromkeys(h for header in headers.values() for h in header))
    for key, column in given:
        if not any(column in header for header in headers.values()):
            raise InputError(f"--columns {key}={column}: no file given has a column {column!r}"
                             f"{did_you_mean(column, every)}; their columns: {', '.join(every)}")
    for key, column in given:
        used = any(column in f.columns.values() for f in files)
        if not used:
            holders = [str(p) for p, header in headers.items() if column in header]
            raise InputError(f"--columns {key}={column}: the column is in {', '.join(holders)}, whose role takes no "
                             f"{key!r} column; give the file's role as ROLE=PATH")


def _not_written(exc: InputError, out: Path) -> InputError:
    """A problem of the config init was about to write (its lines are that config's), saying it was not written."""
    note = f" (found checking the config init would write as {out}; nothing was written)"
    problems = getattr(exc, "problems", None)
    if problems:
        return InputErrors([InputError(p + note) for p in problems])
    return InputError(str(exc) + note)


def scaffold(args: Sequence[str], out: Path, *, output_dir: str | None = None, model: str = "all-MiniLM-L6-v2",
             force: bool = False, teacher: str | None = None,
             columns: Sequence[str] | Mapping[str, str] = ()) -> tuple[Path, list[FileRole], Any]:
    """Write the config for `args` (`PATH` or `ROLE=PATH`) to `out` after checking that it runs; returns the
    path, the files' roles (with the choices made, `FileRole.choices`) and the check (`flows.rounds.validate.RunCheck`).
    `teacher`: a teacher folder the run uses; without it, one found beside the config (`find_teacher`) is
    offered, commented out. `columns`: `--columns` values (`parse_columns`) or a column map."""

    out = Path(out)
    if out.exists() and not force:
        raise InputError("the config file exists; pick another --out or give --force to overwrite it", path=out)
    if not args:
        raise InputError("no files given: name the team's corpus, pairs and evaluation files")
    given = list(columns.items()) if isinstance(columns, Mapping) else parse_columns(columns)
    files = [describe_file(a, given) for a in args]
    if given:
        _check_given_columns(given, files, {f.path: read_header(table_files(f.path)[0]) for f in files})
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
    dev_metric = choose_dev_metric(files)
    # Checked as the file `out` will be (its folder resolves the paths, errors name it), before it exists: first
    # with the smallest batch, to learn the anchors the loaders keep (empty, duplicate and label-0 rows dropped);
    # then sized from them and checked again, as it will run.
    try:
        text = render_config(files, out, output_dir, model, 2, teacher, found, dev_metric)
        anchors = check_run(config_from_text(text, out)).corpus.n_anchor_rows
        text = render_config(files, out, output_dir, model, anchors, teacher, found, dev_metric)
        check = check_run(config_from_text(text, out))
    except InputError as exc:
        raise _not_written(exc, out) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out, files, check
