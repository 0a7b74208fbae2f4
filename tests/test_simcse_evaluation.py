"""Evaluation metrics against brute-force definitions, the JSON shape, and one encode per sentence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simcse.evaluation import (
    DevEvaluator,
    alignment,
    average_precision_x100,
    evaluate,
    spearman_x100,
    uniformity,
)


class TableEncoder:
    """A fake encoder with fixed vectors per sentence, counting what it is asked to encode."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.calls.append(list(texts))
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


def test_dev_evaluator_scores_the_mean_sts(tmp_path):
    sts = _write(tmp_path / "d.tsv", "sentence1\tsentence2\tscore", [("a", "b", 1.0), ("a", "c", 4.0)])
    out = DevEvaluator([sts])(TableEncoder({"a": [1, 0], "b": [0, 1], "c": [1, 1]}))
    assert out["score"] == pytest.approx(out["sts"]["d"]) == pytest.approx(100.0)


def test_bad_sts_score_names_line_and_column(tmp_path):
    from dataio.errors import InputError

    sts = _write(tmp_path / "d.tsv", "sentence1\tsentence2\tscore", [("a", "b", 1.0), ("a", "c", "high")])
    with pytest.raises(InputError, match=r"d\.tsv: line 3, column 'score': 'high' is not a number"):
        evaluate(TableEncoder({}), [sts])
