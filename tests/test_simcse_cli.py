"""`simcse-curriculum evaluate` and `train`: output, and bad input => one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from json_audit import stringly

from flows.cli.app import main

STS_ROWS = [("A man plays a guitar.", "A man is playing the guitar.", 4.8),
            ("A dog runs.", "A cat sleeps.", 0.4),
            ("Kids play in the park.", "Children are playing outside.", 3.9),
            ("The market fell.", "Stocks dropped sharply.", 3.2)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread: two threads fighting other load were ~3x slower per step."""


@pytest.fixture()
def files(tmp_path):
    sts = tmp_path / "dev.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in STS_ROWS),
                   encoding="utf-8")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{int(s > 3.5)}\n" for a, b, s in STS_ROWS),
                     encoding="utf-8")
    nli = tmp_path / "nli.csv"
    nli.write_text("sent0,sent1,hard_neg\n" + "".join(f'"{a}","{b}","{c}"\n' for a, b, c in [
        ("A man plays.", "Someone plays.", "Nobody plays."), ("Two dogs run.", "Dogs move.", "Dogs sleep."),
        ("A girl reads.", "A child reads.", "A girl swims."), ("It rains.", "The weather is wet.", "It is dry.")]),
        encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(r[0] for r in STS_ROWS) + "\n" + "\n".join(r[1] for r in STS_ROWS) + "\n",
                      encoding="utf-8")
    return {"sts": sts, "pairs": pairs, "nli": nli, "corpus": corpus, "dir": tmp_path}


def test_evaluate_json_prints_one_object_of_the_issue_shape(tiny, files, capsys):
    code = main(["evaluate", tiny, "--sts", str(files["sts"]), "--pairs", str(files["pairs"]), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert out.count("\n") == 1 and stringly(result) == []
    assert set(result) == {"sts", "pairs", "alignment", "uniformity"}
    assert set(result["sts"]) == {"dev"} and set(result["pairs"]) == {"pairs"}
    assert -100 <= result["sts"]["dev"] <= 100 and 0 <= result["pairs"]["pairs"] <= 100
    assert result["alignment"] >= 0 and result["uniformity"] <= 0


def test_evaluate_table(tiny, files, capsys):
    assert main(["evaluate", tiny, "--sts", str(files["sts"])]) == 0
    out = capsys.readouterr().out
    assert "STS Spearman x100 dev" in out and "uniformity" in out


def test_train_unsup_and_nli_write_sentence_transformers_models(tiny, files, capsys):
    from sentence_transformers import SentenceTransformer

    out = files["dir"] / "unsup"
    assert main(["train", "--model", tiny, "--unsup", str(files["corpus"]), "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--eval-sts", str(files["sts"]), "--eval-every", "1", "--json"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1, "--json: one JSON object on stdout, nothing else"
    summary = json.loads(stdout)
    assert summary["steps"] == 2 and summary["best_step"] in (1, 2)
    SentenceTransformer(summary["model"], device="cpu")
    out2 = files["dir"] / "sup"
    assert main(["train", "--model", tiny, "--nli", str(files["nli"]), "--out", str(out2), "--steps", "1",
                 "--batch-size", "4", "--lr", "1e-4", "--max-length", "16", "--seed", "3",
                 "--data-licence", "CC-BY-SA-4.0"]) == 0
    lines = capsys.readouterr().out.splitlines()  # without --json: lines for a person
    assert lines[0] == f"model: {out2 / 'model'}" and lines[-1].startswith("steps: 1, train accuracy ")
    assert (out2 / "model" / "modules.json").exists() and (out2 / "checkpoint").exists()
    # The model card names the data file, its fingerprint and the licence given.
    from dataio.hashing import sha256_file
    from simcse.model_card import read_card_info

    data = read_card_info(out2 / "model").data[0]
    assert data["licence"] == "CC-BY-SA-4.0" and data["sha256"] == sha256_file(files["nli"])
    assert data["kind"] == "nli" and data["kept"] >= 1
    assert "CC-BY-SA-4.0" in (out2 / "model" / "README.md").read_text(encoding="utf-8")


def _bad(argv, capsys, *, contains: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert contains in err, err
    return err


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tiny, files, capsys):
    d = files["dir"]
    out = d / "out"
    train = ["train", "--model", tiny, "--out", str(out)]
    _bad(train + ["--unsup", str(d / "missing.txt")], capsys, contains="missing.txt: no such file")
    empty = d / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    _bad(train + ["--unsup", str(empty)], capsys, contains="empty.txt")
    latin = d / "latin.txt"
    latin.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    _bad(train + ["--unsup", str(latin)], capsys, contains="latin.txt: line 2")
    wrong = d / "wrong.csv"
    wrong.write_text("premise,hypothesis\na,b\n", encoding="utf-8")
    _bad(train + ["--nli", str(wrong)], capsys, contains="column 'positive'")
    _bad(["train", "--model", str(files["sts"]), "--out", str(out), "--nli", str(files["nli"])], capsys,
         contains="not a model folder")
    _bad(train + ["--nli", str(files["nli"]), "--eval-sts", str(files["pairs"])], capsys, contains="column 'score'")
    _bad(train + ["--nli", str(files["nli"]), "--unsup", str(files["corpus"])], capsys, contains="exactly one")
    assert not out.exists(), "bad input must not create the output folder"

    not_a_model = d / "notamodel"
    not_a_model.mkdir()
    _bad(["evaluate", str(not_a_model), "--sts", str(files["sts"])], capsys, contains="no config.json")
    bad_score = d / "bad_score.tsv"
    bad_score.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\tfive\n", encoding="utf-8")
    _bad(["evaluate", tiny, "--sts", str(bad_score), "--json"], capsys,
         contains="bad_score.tsv: line 3, column 'score'")
    _bad(["evaluate", tiny, "--sts", str(d / "nope.tsv")], capsys, contains="nope.tsv: no such file")
    _bad(["evaluate", tiny], capsys, contains="--sts or --pairs")
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["dev.tsv", "pairs.tsv", "nli.csv", "corpus.txt", "empty.txt", "latin.txt", "wrong.csv", "notamodel",
         "bad_score.tsv"])
