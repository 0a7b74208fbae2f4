"""Evaluation: STS Spearman, alignment and uniformity, average precision on labeled pairs; the evaluator
that names which of them is the score.

- STS: Spearman correlation (x100) between the cosine similarity of each pair and its gold score.
- Alignment and uniformity (Wang & Isola 2020, as in SimCSE's Figure 2), on L2-normalised embeddings:
  alignment = E_(x,y)~pos ||f(x) - f(y)||^2 over positive pairs; uniformity = log E_(x,y) e^{-2 ||f(x) - f(y)||^2}
  over all pairs of distinct sentences (t = 2). Lower is better for both. As in SimCSE, the positive pairs
  are the STS pairs scored in the top 20% of their scale (score >= 4.0 on STS-B's 0-5), the sentences are
  all sentences of the STS files (of the labeled-pair files, with label-1 pairs as positives, when no STS
  file is given).
- Labeled pairs: average precision (x100, scikit-learn) of the cosine similarity against 0/1 labels.
Every unique sentence is encoded once, whatever the number of files it appears in.

`SimCSEEvaluator` is the one place that decides which number is "the score" (the trainer's best checkpoint,
the flows' dev metric, the bench's dev curve): its `primary_metric` and `greater_is_better`, named as in
sentence-transformers' evaluators, and `metric_value`, which reads any metric out of a result.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dataio.errors import InputError, closest
from dataio.eval_sets import LabeledPairs, StsData, read_labeled_pairs, read_sts
from dataio.table_files import table_stem

POSITIVE_SHARE_OF_SCALE = 0.2  # positive pairs: the top 20% of the score scale (>= 4.0 of 0-5)


# The mean over every file of a kind, as a metric name (a file's own metric is `<kind>/<stem>`).
MEAN_METRICS = {"sts_mean": "sts", "pairs_mean": "pairs"}
METRIC_NAME = r"(sts|pairs)/[^/]+"  # one file's score: the names a run's config, gate and tracking use


class Encoder(Protocol):
    """What evaluation needs of a model: sentence-transformers' `encode` keywords (`SimCSEEncoder` and
    `SentenceTransformer` both take them)."""

    def encode(self, texts: list[str], batch_size: int = ..., show_progress_bar: bool = ...,
               **kwargs: Any) -> np.ndarray: ...


def _normalise(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spearman_x100(cosines: np.ndarray, scores: Sequence[float]) -> float:
    """Spearman correlation x100 between predicted similarities and gold scores."""
    from scipy.stats import spearmanr

    value = spearmanr(cosines, scores).statistic
    return float(value) * 100 if np.isfinite(value) else float("nan")


def alignment(x: np.ndarray, y: np.ndarray, power: float = 2.0) -> float:
    """Mean ||x_i - y_i||^power over positive pairs (rows L2-normalised first)."""
    x, y = _normalise(x, np.float64), _normalise(y, np.float64)
    if len(x) == 0:
        return float("nan")
    return float(np.mean(np.linalg.norm(x - y, axis=1) ** power))


def uniformity(x: np.ndarray, t: float = 2.0, chunk: int = 512) -> float:
    """log of the mean of exp(-t ||x_i - x_j||^2) over all pairs i < j (rows L2-normalised first).

    Computed in chunks with a log-sum-exp, so memory stays O(chunk x n) and nothing underflows.
    """
    import torch

    z = torch.from_numpy(_normalise(x, np.float64))
    n = z.shape[0]
    if n < 2:
        return float("nan")
    parts = []
    for start in range(0, n, chunk):
        block = z[start:start + chunk]
        sq = (2 - 2 * block @ z.T).clamp(min=0)  # ||a - b||^2 for unit vectors
        rows = torch.arange(start, start + block.shape[0]).unsqueeze(1)
        upper = torch.arange(n).unsqueeze(0) > rows
        parts.append(torch.logsumexp((-t * sq)[upper], dim=0))
    pairs = n * (n - 1) / 2
    return float(torch.logsumexp(torch.stack(parts), dim=0) - np.log(pairs))


def average_precision_x100(cosines: np.ndarray, labels: Sequence[int]) -> float:
    """Average precision x100 of similarity-ranked pairs against 0/1 labels (scikit-learn)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(labels), cosines)) * 100


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    stems = [table_stem(p) for p in paths]  # dev.csv.gz -> dev
    out = []
    for p, stem in zip(paths, stems):
        out.append(stem if stems.count(stem) == 1 else f"{p.parent.name}/{stem}")
    return out


def metric_names(sts: Sequence[StsData], pairs: Sequence[LabeledPairs] = ()) -> list[str]:
    """The per-file metric names of an evaluation, in order: `sts/<stem>` for each STS file, then
    `pairs/<stem>` for each labeled-pair file (`<folder>/<stem>` where two files share a stem)."""
    return file_metric_names([d.path for d in sts], [d.path for d in pairs])


def file_metric_names(sts: Sequence[str | os.PathLike], pairs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """`metric_names` of evaluation files by their paths (before they are read: `init` names the dev metric)."""
    return ([f"sts/{stem}" for stem in _unique_stems([Path(p) for p in sts])]
            + [f"pairs/{stem}" for stem in _unique_stems([Path(p) for p in pairs])])


def closest_metric(name: str, names: Sequence[str]) -> str:
    """` (did you mean 'sts/dev_sts'?)` when `name`'s file stem is close to another metric's (compared without the
    `sts/` or `pairs/` every name shares, so `sts/dev` is not taken for `sts/down`), else ""."""
    stems = {n.split("/", 1)[-1]: n for n in names}
    found = closest(name.split("/", 1)[-1], stems)
    return f" (did you mean {stems[found]!r}?)" if found is not None else ""


def metric_value(result: Mapping[str, Any] | None, name: str) -> float | None:
    """Metric `name` of an evaluation result; None when the result has no such metric (NaN stays NaN).

    Names: `sts/<stem>`, `pairs/<stem>` (one file's score), `sts_mean`, `pairs_mean` (the mean over the files
    of that kind), and any top-level number of the result (`alignment`, `uniformity`, or the keys of a
    sentence-transformers evaluator's flat result).
    """
    if not result or not name:
        return None
    value = result.get(name)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if name in MEAN_METRICS:
        values = [float("nan") if v is None else float(v) for v in (result.get(MEAN_METRICS[name]) or {}).values()]
        return float(np.mean(values)) if values else None
    kind, slash, stem = name.partition("/")
    if slash and kind in ("sts", "pairs"):
        value = (result.get(kind) or {}).get(stem)
        return None if value is None else float(value)
    return None


def check_metric_name(value: str | None) -> str | None:
    """`value` when it is `sts/<file stem>` or `pairs/<file stem>` (or None); ValueError otherwise."""
    if value is not None and not re.fullmatch(METRIC_NAME, value):
        raise ValueError(f"expected 'sts/<file stem>' or 'pairs/<file stem>', got {value!r}")
    return value


def flat_metrics(evaluation: Mapping[str, Any] | None) -> dict[str, float]:
    """Every score of an evaluation under one name each: `sts/<stem>`, `pairs/<stem>`, `alignment`, `uniformity`
    (NaN and None left out)."""
    out: dict[str, float] = {}
    for kind in ("sts", "pairs"):
        for stem, value in ((evaluation or {}).get(kind) or {}).items():
            if value is not None and math.isfinite(float(value)):
                out[f"{kind}/{stem}"] = float(value)
    for name in ("alignment", "uniformity"):
        value = (evaluation or {}).get(name)
        if value is not None and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def primary_score(evaluator: Any, result: float | Mapping[str, Any]) -> float:
    """The score of `evaluator`'s `result`, by sentence-transformers' rule: a number is the score itself; a
    mapping's score is its metric named `evaluator.primary_metric`. Whether higher is better is
    `getattr(evaluator, "greater_is_better", True)`."""
    if not isinstance(result, Mapping):
        return float(result)
    name = getattr(evaluator, "primary_metric", None)
    if not name:
        raise ValueError("an evaluator that returns a mapping needs a `primary_metric` naming its score "
                         "(an evaluator without evaluation files has none)")
    value = metric_value(result, name)
    if value is None:
        raise ValueError(f"the evaluator's result has no {name!r}, its primary_metric")
    return value


def evaluate(encoder: Encoder, sts_files: Sequence[str | os.PathLike] = (),
             pair_files: Sequence[str | os.PathLike] = (), *, batch_size: int = 256,
             show_progress_bar: bool = False) -> dict[str, Any]:
    """`{"sts": {stem: spearman_x100}, "pairs": {stem: ap_x100}, "alignment": float, "uniformity": float}`.

    All files are read and validated before anything is encoded (bad input raises InputError).
    """
    sts = [read_sts(f) for f in sts_files]
    pairs = [read_labeled_pairs(f) for f in pair_files]
    return evaluate_data(encoder, sts, pairs, batch_size=batch_size, show_progress_bar=show_progress_bar)


def evaluate_data(encoder: Encoder, sts: Sequence[StsData], pairs: Sequence[LabeledPairs] = (), *,
                  batch_size: int = 256, show_progress_bar: bool = False) -> dict[str, Any]:
    """`evaluate` on already-read files (so a training loop reads its dev set once)."""
    sentences: dict[str, int] = {}
    for data in [*sts, *pairs]:
        for s in [*data.sentence1, *data.sentence2]:
            sentences.setdefault(s, len(sentences))
    texts = list(sentences)
    emb = (_normalise(encoder.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar))
           if texts else np.zeros((0, 1), np.float32))

    def rows(data: StsData | LabeledPairs) -> tuple[np.ndarray, np.ndarray]:
        return (emb[[sentences[s] for s in data.sentence1]], emb[[sentences[s] for s in data.sentence2]])

    result: dict[str, Any] = {"sts": {}, "pairs": {}, "alignment": None, "uniformity": None}
    pos_a, pos_b, pool = [], [], set()
    for name, data in zip(_unique_stems([d.path for d in sts]), sts):
        a, b = rows(data)
        result["sts"][name] = spearman_x100(np.sum(a * b, axis=1), data.scores)
        scores = np.asarray(data.scores)
        low, high = float(scores.min()), float(scores.max())
        positive = scores >= high - POSITIVE_SHARE_OF_SCALE * (high - low)
        if high - low > 0:
            pos_a.append(a[positive])
            pos_b.append(b[positive])
        pool.update(sentences[s] for s in [*data.sentence1, *data.sentence2])
    for name, data in zip(_unique_stems([d.path for d in pairs]), pairs):
        a, b = rows(data)
        result["pairs"][name] = average_precision_x100(np.sum(a * b, axis=1), data.labels)
        if not sts:
            positive = np.asarray(data.labels) == 1
            pos_a.append(a[positive])
            pos_b.append(b[positive])
            pool.update(sentences[s] for s in [*data.sentence1, *data.sentence2])
    if pos_a:
        result["alignment"] = alignment(np.concatenate(pos_a), np.concatenate(pos_b))
    if len(pool) >= 2:
        result["uniformity"] = uniformity(emb[sorted(pool)])
    return result


class SimCSEEvaluator:
    """The evaluator of the trainer, the flows and the bench: STS and labeled-pair files, read once; each call
    encodes every distinct sentence once and returns `evaluate`'s result.

    Named as sentence-transformers' evaluators are: `primary_metric` is the metric that is the score (the
    best checkpoint, a run's dev metric), `greater_is_better` says which way is better (always here:
    Spearman and average precision), and `primary_score(evaluator, result)` reads the score.
    `primary_metric`: a name from `metric_names` (`sts/<stem>`, `pairs/<stem>`), or `sts_mean` /
    `pairs_mean` (the mean over those files); by default the first file's (STS files before pair files);
    None only when there is no file. A name that matches no file raises InputError.
    """

    greater_is_better: bool = True

    def __init__(self, sts_files: Sequence[str | os.PathLike | StsData] = (),
                 pair_files: Sequence[str | os.PathLike | LabeledPairs] = (), *, primary_metric: str | None = None,
                 batch_size: int = 256, show_progress_bar: bool = False) -> None:
        self.sts = [f if isinstance(f, StsData) else read_sts(f) for f in sts_files]
        self.pairs = [f if isinstance(f, LabeledPairs) else read_labeled_pairs(f) for f in pair_files]
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.metric_names = metric_names(self.sts, self.pairs)
        means = [name for name, kind in MEAN_METRICS.items() if (self.sts if kind == "sts" else self.pairs)]
        if primary_metric is None:
            primary_metric = self.metric_names[0] if self.metric_names else None
        elif primary_metric not in self.metric_names + means:
            raise InputError(f"the dev metric {primary_metric!r} names no evaluation file"
                             f"{closest_metric(primary_metric, self.metric_names + means)}; the files give "
                             f"{', '.join(self.metric_names + means) or 'none'}")
        self.primary_metric: str | None = primary_metric

    def __call__(self, encoder: Encoder) -> dict[str, Any]:
        return evaluate_data(encoder, self.sts, self.pairs, batch_size=self.batch_size,
                             show_progress_bar=self.show_progress_bar)
