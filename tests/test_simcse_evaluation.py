"""Evaluation metrics against brute-force definitions, the JSON shape, and one encode per sentence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dataio.errors import InputError
from simcse.evaluation import (
    SimCSEEvaluator,
    alignment,
    average_precision_x100,
    evaluate,
    metric_value,
    primary_score,
    spearman_x100,
    uniformity,
)


class TableEncoder:
    """A fake encoder with fixed vectors per sentence, counting what it is asked to encode."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls: list[list[str]] = []
        self.keywords: list[dict] = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.calls.append(list(texts))
        self.keywords.append({"batch_size": batch_size, **kwargs})
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_alignment_and_uniformity_match_their_definitions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    expected_align = np.mean([np.sum((_unit(a) - _unit(b)) ** 2) for a, b in zip(x, y)])
    assert alignment(x, y) == pytest.approx(expected_align, rel=1e-5)
    pts = rng.normal(size=(9, 4))
    pairs = [np.exp(-2 * np.sum((_unit(a) - _unit(b)) ** 2)) for a, b in itertools.combinations(pts, 2)]
    assert uniformity(pts) == pytest.approx(math.log(np.mean(pairs)), rel=1e-9)
    assert uniformity(pts, chunk=2) == pytest.approx(uniformity(pts), rel=1e-12)
    # collapsed embeddings are maximally non-uniform (log 1 = 0), spread ones are negative
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-9)
    assert uniformity(np.eye(4)) == pytest.approx(-4.0)


def test_spearman_and_average_precision():
    assert spearman_x100(np.array([0.1, 0.5, 0.3, 0.9]), [1, 3, 2, 4]) == pytest.approx(100.0)
    assert spearman_x100(np.array([0.9, 0.5, 0.3, 0.1]), [1, 2, 3, 4]) == pytest.approx(-100.0)
    assert average_precision_x100(np.array([0.9, 0.8, 0.1, 0.05]), [1, 1, 0, 0]) == pytest.approx(100.0)
    # ranks 1 and 3 relevant: AP = (1/1 + 2/3) / 2
    assert average_precision_x100(np.array([0.9, 0.8, 0.7, 0.1]), [1, 0, 1, 0]) == pytest.approx(250 / 3)


def _write(path, header, rows):
    path.write_text(header + "\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n", encoding="utf-8")
    return path


def test_evaluate_shape_positives_and_one_encode_per_sentence(tmp_path):
    vec = {"a": [1, 0, 0], "a2": [0.9, 0.1, 0], "b": [0, 1, 0], "b2": [0.5, 0.5, 0], "c": [0, 0, 1],
           "c2": [-1, 0, 0.2]}
    sts = _write(tmp_path / "dev.tsv", "sentence1\tsentence2\tscore",
                 [("a", "a2", 5.0), ("b", "b2", 3.0), ("c", "c2", 0.0), ("a", "b", 1.0)])
    pairs = _write(tmp_path / "twitter.tsv", "sentence1\tsentence2\tlabel", [("a", "a2", 1), ("c", "c2", 0)])
    enc = TableEncoder(vec)
    result = evaluate(enc, [sts], [pairs])
    assert set(result) == {"sts", "pairs", "alignment", "uniformity"}
    assert list(result["sts"]) == ["dev"] and list(result["pairs"]) == ["twitter"]
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted(vec)  # each unique sentence once
    cos = [float(_unit(vec[s1]) @ _unit(vec[s2])) for s1, s2 in [("a", "a2"), ("b", "b2"), ("c", "c2"), ("a", "b")]]
    assert result["sts"]["dev"] == pytest.approx(spearman_x100(np.array(cos), [5.0, 3.0, 0.0, 1.0]))
    assert result["pairs"]["twitter"] == pytest.approx(100.0)
    # positives: scores in the top 20% of the 0-5 range (>= 4.0): only (a, a2)
    assert result["alignment"] == pytest.approx(float(np.sum((_unit(vec["a"]) - _unit(vec["a2"])) ** 2)), rel=1e-5)
    # uniformity over the STS sentences only
    sts_sentences = ["a", "a2", "b", "b2", "c", "c2"]
    assert result["uniformity"] == pytest.approx(uniformity(np.array([vec[s] for s in sts_sentences])), rel=1e-6)


def test_pairs_only_use_label_one_as_positives(tmp_path):
    vec = {"a": [1, 0], "a2": [1, 0.2], "c": [0, 1], "c2": [-1, 0]}
    pairs = _write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel", [("a", "a2", 1), ("c", "c2", 0)])
    result = evaluate(TableEncoder(vec), [], [pairs])
    assert result["sts"] == {} and result["alignment"] == pytest.approx(alignment(np.array([vec["a"]]),
                                                                                   np.array([vec["a2"]])))


def test_same_stem_in_two_folders_keeps_both(tmp_path):
    rows = [("a", "b", 1.0), ("a", "c", 2.0), ("b", "c", 3.0)]
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    f1 = _write(tmp_path / "x" / "dev.tsv", "sentence1\tsentence2\tscore", rows)
    f2 = _write(tmp_path / "y" / "dev.tsv", "sentence1\tsentence2\tscore", rows)
    result = evaluate(TableEncoder({"a": [1, 0], "b": [0, 1], "c": [1, 1]}), [f1, f2])
    assert sorted(result["sts"]) == ["x/dev", "y/dev"]


VECTORS = {"a": [1, 0], "b": [0, 1], "c": [1, 1], "d": [-1, 1]}


def _files(tmp_path):
    """Two STS files whose Spearmans differ (100 and -100) and one labeled-pair file (AP 100)."""
    up = _write(tmp_path / "up.tsv", "sentence1\tsentence2\tscore", [("a", "b", 1.0), ("a", "c", 4.0)])
    down = _write(tmp_path / "down.tsv", "sentence1\tsentence2\tscore", [("a", "b", 4.0), ("a", "c", 1.0)])
    pairs = _write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel", [("a", "c", 1), ("a", "d", 0)])
    return up, down, pairs


def test_the_primary_metric_is_the_first_file_unless_named(tmp_path):
    """STS only, pairs only, both: the score is the first file's (STS before pairs), or the one named."""
    up, down, pairs = _files(tmp_path)
    enc = TableEncoder(VECTORS)
    for sts, pair_files, primary, score in (([up, down], [], "sts/up", 100.0), ([], [pairs], "pairs/p", 100.0),
                                            ([down, up], [pairs], "sts/down", -100.0)):
        evaluator = SimCSEEvaluator(sts, pair_files)
        assert evaluator.primary_metric == primary and evaluator.greater_is_better is True
        assert primary_score(evaluator, evaluator(enc)) == pytest.approx(score)
    named = {"pairs/p": 100.0, "sts/down": -100.0, "sts_mean": 0.0, "pairs_mean": 100.0}
    for name, score in named.items():
        evaluator = SimCSEEvaluator([up, down], [pairs], primary_metric=name)
        assert evaluator.primary_metric == name
        assert primary_score(evaluator, evaluator(enc)) == pytest.approx(score, abs=1e-9)
    with pytest.raises(InputError, match=r"'sts/dev' names no evaluation file; the files give sts/up, sts/down, "
                                         r"pairs/p, sts_mean, pairs_mean"):
        SimCSEEvaluator([up, down], [pairs], primary_metric="sts/dev")
    with pytest.raises(InputError, match="pairs_mean"):
        SimCSEEvaluator([up], primary_metric="pairs_mean")


def test_the_evaluator_reads_its_files_once_and_encodes_each_sentence_once_per_call(tmp_path):
    up, down, pairs = _files(tmp_path)
    evaluator = SimCSEEvaluator([up, down], [pairs], batch_size=7)
    for f in (up, down, pairs):
        f.unlink()  # read at construction: the calls need no file
    enc = TableEncoder(VECTORS)
    first, second = evaluator(enc), evaluator(enc)
    assert first == second and set(first) == {"sts", "pairs", "alignment", "uniformity"}
    assert [sorted(c) for c in enc.calls] == [sorted(VECTORS)] * 2
    # sentence-transformers' keyword names, which SimCSEEncoder and SentenceTransformer both take
    assert enc.keywords == [{"batch_size": 7, "show_progress_bar": False}] * 2


def test_an_evaluator_without_files_has_no_score(tmp_path):
    evaluator = SimCSEEvaluator()
    result = evaluator(TableEncoder({}))
    assert evaluator.primary_metric is None and result["sts"] == {} and result["pairs"] == {}
    with pytest.raises(ValueError, match="primary_metric"):
        primary_score(evaluator, result)


def test_metric_value_reads_nested_flat_and_mean_names():
    result = {"sts": {"dev": 80.0, "test": 70.0}, "pairs": {"p": float("nan")}, "alignment": 0.3, "uniformity": None}
    assert metric_value(result, "sts/test") == 70.0 and metric_value(result, "sts_mean") == 75.0
    assert math.isnan(metric_value(result, "pairs/p")) and math.isnan(metric_value(result, "pairs_mean"))
    assert metric_value(result, "alignment") == 0.3 and metric_value(result, "uniformity") is None
    assert metric_value(result, "sts/none") is None and metric_value(None, "sts/dev") is None
    # a sentence-transformers evaluator's flat result, and its rule for a bare number
    flat = {"sts-dev_spearman_cosine": np.float32(0.5)}

    class STLike:
        primary_metric = "sts-dev_spearman_cosine"

    assert primary_score(STLike(), flat) == 0.5 and primary_score(None, 3) == 3.0
    with pytest.raises(ValueError, match="has no 'sts-dev_spearman_cosine'"):
        primary_score(STLike(), {"other": 1.0})


def test_bad_sts_score_names_line_and_column(tmp_path):
    sts = _write(tmp_path / "d.tsv", "sentence1\tsentence2\tscore", [("a", "b", 1.0), ("a", "c", "high")])
    with pytest.raises(InputError, match=r"d\.tsv: line 3, column 'score': 'high' is not a number"):
        evaluate(TableEncoder({}), [sts])
