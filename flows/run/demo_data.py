"""The built-in demo corpus: sentences from the Python standard library's docstrings, built offline.

Why docstrings: every Python install has them (no download, PSF licence, redistributable), they have a
natural domain label (the top-level module) for the in-domain band, and a docstring's first and second
sentences are a natural (anchor, positive) pair: the same function described twice.

The sources are parsed with `ast`, never imported (importing the whole standard library runs code:
`antigravity` opens a browser). Everything is deterministic for a given Python version, which is
recorded in the manifest.

Evaluation is honest rather than STS-like (no graded human scores exist for these sentences): labeled
pairs from held-out docstrings, whose sentences never appear in the corpus or the training pairs:
- label 1: a held-out docstring's first and second sentences;
- label 0: its first sentence with the second sentence of another held-out docstring, once from another
  module (easy) and once from the same module where one exists (hard, in-domain).
Average precision of cosine similarity over these pairs measures what training on the pairs should teach.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import random
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from dataio.atomic import atomic_write_json, atomic_write_text

_log = logging.getLogger("flows")

DEMO_VERSION = 1
# Packages skipped: tests and demos (code samples, not prose), GUI and codec tables (repetitive), and the
# two modules that have side effects when imported (not imported here, skipped anyway for clarity).
_SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "ensurepip",
         "venv", "__pycache__", "encodings", "pydoc_data", "tkinter", "this", "antigravity"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_MIN_WORDS, _MAX_WORDS = 4, 40


@dataclass(frozen=True)
class DemoData:
    """Paths of the files the demo run reads, and their sizes."""

    folder: Path
    corpus: Path  # jsonl: id, text, domain
    pairs: Path  # jsonl: anchor, positive (training pairs)
    eval_pairs: Path  # tsv: sentence1, sentence2, label
    sentences: int
    train_pairs: int
    eval_rows: int


def _stdlib_sources(root: Path) -> list[tuple[str, Path]]:
    """(top-level module, source file) for the pure-Python standard library, sorted."""
    found: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.startswith(("_", "config-")) or name in _SKIP:
            continue
        if entry.suffix == ".py" and entry.is_file():
            if entry.stem not in _SKIP:
                found.append((entry.stem, entry))
        elif entry.is_dir() and (entry / "__init__.py").exists():
            for dirpath, dirnames, filenames in os.walk(entry):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP)
                for filename in sorted(filenames):
                    if filename.endswith(".py"):
                        found.append((name, Path(dirpath) / filename))
    return found


def _sentences(docstring: str) -> list[str]:
    """The first paragraph's sentences; the rest is usually argument lists and examples."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    return [s for s in _SENTENCE_END.split(paragraph) if s]


def _usable(sentence: str) -> bool:
    words = sentence.split()
    return (_MIN_WORDS <= len(words) <= _MAX_WORDS and sentence.endswith(".") and ">>>" not in sentence
            and sum(ch.isalpha() for ch in sentence) >= 0.6 * len(sentence))


def collect_docstrings(root: Path | None = None) -> list[tuple[str, list[str]]]:
    """(module, usable sentences in order) for every docstring with at least one usable sentence."""
    return list(_collect(Path(root or sysconfig.get_paths()["stdlib"])))


@functools.lru_cache(maxsize=2)
def _collect(root: Path) -> tuple[tuple[str, list[str]], ...]:
    """Parsing ~400 files takes seconds; one parse per process is enough."""
    out: list[tuple[str, list[str]]] = []
    for module, path in _stdlib_sources(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately broken or not UTF-8; they are not prose anyway
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                sentences = _sentences(doc)
                # A pair only counts when the first two sentences are both usable, so keep the order.
                usable = [s for s in sentences if _usable(s)]
                if usable:
                    out.append((module, sentences if all(map(_usable, sentences[:2])) else usable))
    return tuple(out)


def _sid(module: str, text: str) -> str:
    return f"{module}:{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def build_demo_data(folder: str | os.PathLike, *, max_sentences: int = 3000, eval_docstrings: int = 150,
                    seed: int = 0, stdlib_root: str | os.PathLike | None = None) -> DemoData:
    """Write the demo corpus, training pairs and evaluation pairs into `folder` (reused when present).

    The files are rebuilt only when the manifest's settings differ, so a resumed demo run reads the very
    same corpus. Building them (seconds of parsing) is logged first.
    """
    folder = Path(folder)
    settings = {"version": DEMO_VERSION, "max_sentences": max_sentences, "eval_docstrings": eval_docstrings,
                "seed": seed, "python": sys.version.split()[0]}
    manifest_path = folder / "manifest.json"
    paths = (folder / "corpus.jsonl", folder / "pairs.jsonl", folder / "eval_pairs.tsv")
    if manifest_path.exists() and all(p.exists() for p in paths):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("settings") == settings:
            return DemoData(folder, *paths, manifest["sentences"], manifest["train_pairs"], manifest["eval_rows"])

    _log.info("building the built-in corpus from the docstrings of Python's standard library into %s", folder)
    docs = collect_docstrings(Path(stdlib_root) if stdlib_root else None)
    rng = random.Random(seed)
    paired = [(m, s) for m, s in docs if len(s) >= 2 and _usable(s[0]) and _usable(s[1])]
    rng.shuffle(paired)
    held_out = paired[:eval_docstrings]
    held_text = {t for _, s in held_out for t in s}

    # Evaluation pairs (see the module docstring for what each label means).
    rows: list[tuple[str, str, int]] = []
    for i, (module, sents) in enumerate(held_out):
        rows.append((sents[0], sents[1], 1))
        others = [j for j, (m, _) in enumerate(held_out) if j != i and m != module]
        same = [j for j, (m, _) in enumerate(held_out) if j != i and m == module]
        for pool in (others, same):
            if pool:
                j = pool[rng.randrange(len(pool))]
                if held_out[j][1][1] != sents[1]:
                    rows.append((sents[0], held_out[j][1][1], 0))

    # Corpus: every usable sentence not held out, first occurrence wins (exact duplicates collapsed).
    corpus: dict[str, tuple[str, str]] = {}
    for module, sents in docs:
        for text in sents:
            if _usable(text) and text not in held_text and text not in corpus:
                corpus[text] = (_sid(module, text), module)
    train_pairs = [(s[0], s[1]) for m, s in paired[eval_docstrings:] if s[0] != s[1]
                   and s[0] in corpus and s[1] in corpus][: max_sentences // 4]  # pairs take <= half the corpus
    keep = {t for pair in train_pairs for t in pair}
    rest = [t for t in corpus if t not in keep]
    rng.shuffle(rest)
    chosen = keep | set(rest[: max(0, max_sentences - len(keep))])
    corpus_rows = [{"id": corpus[t][0], "text": t, "domain": corpus[t][1]} for t in corpus if t in chosen]

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[0], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus_rows))
    atomic_write_text(paths[1], "".join(json.dumps({"anchor": a, "positive": p}, ensure_ascii=False) + "\n"
                                        for a, p in train_pairs))
    tsv = ["sentence1\tsentence2\tlabel"] + [f"{_tsv(a)}\t{_tsv(b)}\t{y}" for a, b, y in rows]
    atomic_write_text(paths[2], "\n".join(tsv) + "\n")
    atomic_write_json(manifest_path, {
        "settings": settings, "source": "Python standard library docstrings (PSF licence), parsed with ast",
        "sentences": len(corpus_rows), "train_pairs": len(train_pairs), "eval_rows": len(rows),
        "domains": len({r["domain"] for r in corpus_rows}),
    })
    return DemoData(folder, *paths, len(corpus_rows), len(train_pairs), len(rows))


def _tsv(text: str) -> str:
    """Quote a TSV cell the way the csv module reads it back (tabs and quotes are rare in docstrings)."""
    text = text.replace("\t", " ")
    return '"' + text.replace('"', '""') + '"' if '"' in text else text
