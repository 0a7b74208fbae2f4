"""A domain team's first hour (issue 12): every input checked before anything is written, `init`, `validate`,
`run --dry-run` with a cost estimate, and inputs that mean one thing (labeled pairs, the domain setting, column
maps, a band the curriculum never reaches).

The team of the issue: a CSV of tweets (`tweet, topic`), 20 labeled pairs of which 18 are labeled 0, and an
evaluation file. The bad-start tests run the command line in a subprocess as a user would (no Prefect
settings of the test session) and time its CPU, which the machine's other load does not inflate.
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from json_audit import stringly

from dataio.errors import InputError
from flows.run.config import load_config

REPO = Path(__file__).resolve().parent.parent
TOPICS = {"sport": ["The match ended {n} to nil after extra time", "Our striker scored {n} goals this season",
                    "Fans waited {n} hours for tickets to the final"],
          "weather": ["Heavy rain expected for {n} days in the north", "Temperatures drop to {n} degrees tonight",
                      "Storm warning issued for {n} coastal towns"],
          "tech": ["The new phone ships with {n} gigabytes of memory", "Update {n} fixes the battery drain bug",
                   "Startup raised {n} million for its chip"]}
POSITIVE_PAIRS = [("Paraphrase source sentence 0", "Another wording of sentence 0"),
                  ("Paraphrase source sentence 1", "Another wording of sentence 1")]
LABEL_0_PAIRS = [(f"Paraphrase source sentence {i}", f"Unrelated text {i * 7}") for i in range(2, 20)]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's folder: tweets.csv, pairs.csv (2 label 1, 18 label 0), dev_pairs.csv, a tiny model."""
    from simcse.testing import build_tiny_model

    root = tmp_path_factory.mktemp("team")
    names = list(TOPICS)
    _write_csv(root / "tweets.csv", ["tweet", "topic"],
               [[TOPICS[names[i % 3]][(i // 3) % 3].format(n=i + 1), names[i % 3]] for i in range(60)])
    _write_csv(root / "pairs.csv", ["sentence1", "sentence2", "label"],
               [[a, b, 1] for a, b in POSITIVE_PAIRS] + [[a, b, 0] for a, b in LABEL_0_PAIRS])
    _write_csv(root / "dev_pairs.csv", ["sentence1", "sentence2", "label"],
               [[f"The match ended {i} to nil", f"Final score was {i} to nil" if i % 2 else f"Rain for {i} days", i % 2]
                for i in range(12)])
    build_tiny_model(root / "tiny-bert", seed=0)
    return root


HAND_WRITTEN = """\
output_dir: runs/{name}
batch_size: 8
model: {{name_or_path: ./tiny-bert, pooling: mean}}
data:
  corpus:
    path: tweets.csv
    columns: {{text: tweet, domain: topic}}
  pairs: pairs.csv
eval:
  pairs: [dev_pairs.csv]
mining:
  bands: [random, in_domain, nearest_neighbour]
"""


def _config(team: Path, name: str, edit: tuple[str, str] | None = None, extra: str = "") -> Path:
    text = HAND_WRITTEN.format(name=name) + extra
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    path = team / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _cli_timed(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """`simcse-curriculum ARGS` in a fresh process as a user runs it; (result, CPU seconds, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, cpu, wall


# ------------------------------------------------------------------------- a bad start leaves no trace

@pytest.mark.parametrize("case, edit, says", [
    ("bad-column", ("text: tweet", "text: twet"),
     ["tweets.csv: column 'twet': missing column 'twet'", "data.corpus.columns"]),
    ("missing-file", ("path: tweets.csv", "path: tweetz.csv"), ["tweetz.csv", "not found"]),
    ("key-typo", ("{text: tweet, domain: topic}", "{txt: tweet, domain: topic}"),
     ["line 7: data.corpus.columns.txt: unknown key (did you mean 'text'?); expected one of text, id, domain"]),
])
def test_a_bad_start_ends_fast_in_one_line_exit_2_and_leaves_no_trace(team: Path, case: str,
                                                                     edit: tuple[str, str], says: list[str]) -> None:
    """Before: 25-28 s, a Prefect traceback, and a folder (config.yaml, base_metrics.json, .prefect/) that then
    refused the corrected config."""
    bad = _config(team, case, edit)
    proc, cpu, wall = _cli_timed(["run", bad.name, "--rounds", "2", "--steps", "2"], team)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
    for part in says:
        assert part in proc.stderr, proc.stderr
    assert cpu < 5.0, f"{case}: {cpu:.1f} s of CPU ({wall:.1f} s wall)"
    assert not (team / "runs" / case).exists(), "a failed start leaves no run folder (nor .prefect/)"

    fixed = _config(team, case)  # the corrected config, same output_dir: never blocked by the failed start
    proc, _, _ = _cli_timed(["validate", fixed.name, "--rounds", "2", "--steps", "2"], team)
    assert proc.returncode == 0 and proc.stdout.startswith(f"config OK: {fixed.name}\n"), proc.stderr
    assert not (team / "runs" / case).exists(), "validate writes nothing"


def test_a_folder_holding_another_run_is_refused_before_prefect_starts(team: Path) -> None:
    from flows.rounds.validate import check_run
    from flows.run.rundir import RunDir

    first = load_config(_config(team, "other-run"))
    RunDir(Path(first.output_dir)).claim(first)
    with pytest.raises(InputError, match=r"different settings \(batch_size\)"):
        check_run(load_config(_config(team, "other-run", ("batch_size: 8", "batch_size: 4"))))
    assert sorted(p.name for p in Path(first.output_dir).iterdir()) == ["config.yaml"]
    assert check_run(first).resumes


# ------------------------------------------------------------------------------------- honest inputs

def test_label_0_pairs_are_dropped_before_training_and_counted(team: Path) -> None:
    from flows.rounds.validate import check_run

    check = check_run(load_config(_config(team, "labels")))
    pairs = next(s for s in check.corpus.sources if s.kind == "pairs")
    assert (pairs.rows, pairs.kept, pairs.label_0) == (20, 2, 18)
    texts = set(check.corpus.texts)
    assert not any(b in texts for _, b in LABEL_0_PAIRS), "a label-0 pair's second sentence is not even in the pool"
    assert any("18 labeled 0 (not paraphrases)" in line for line in check.lines())


def test_the_domain_setting_means_one_thing(team: Path) -> None:
    from flows.rounds.validate import check_run

    with pytest.raises(InputError) as err:
        load_config(_config(team, "domain", ("columns: {text: tweet, domain: topic}",
                                             "columns: {text: tweet}\n    domain: topic")))
    assert "line 8: data.corpus.domain: ambiguous" in str(err.value)
    assert "`columns: {domain: topic}`" in str(err.value) and "`domain_label: topic`" in str(err.value)

    column = check_run(load_config(_config(team, "domain")))
    assert sorted({d for d in column.corpus.domains if d}) == ["sport", "tech", "weather"]
    label = check_run(load_config(_config(team, "domain", ("columns: {text: tweet, domain: topic}",
                                                           "columns: {text: tweet}\n    domain_label: topic"))))
    assert {d for d in label.corpus.domains if d} == {"topic"}
    assert any("domain_label: every row is labeled 'topic', which is also a column" in w for w in label.warnings)


def test_evaluation_files_take_a_typed_column_map(team: Path) -> None:
    """Before, `columns` on an evaluation file was accepted and ignored: the file then failed (or was misread)."""
    from flows.rounds.validate import check_run
    from flows.run.inputs import prepare_inputs, read_eval_sets
    from flows.run.rundir import RunDir

    rows = [[f"text {i}", f"other text {i}", i % 2] for i in range(10)]
    _write_csv(team / "dev_ab.csv", ["a", "b", "is_para"], rows)
    extra = "    - {path: dev_ab.csv, columns: {sentence1: a, sentence2: b, label: is_para}}\n"
    cfg = load_config(_config(team, "evalcols", ("pairs: [dev_pairs.csv]", "pairs:\n    - dev_pairs.csv\n" + extra)))
    assert check_run(cfg).eval_rows == {"pairs/dev_pairs": 12, "pairs/dev_ab": 10}
    _, pairs = read_eval_sets(prepare_inputs(cfg, RunDir(Path(cfg.output_dir))))
    assert pairs[1].sentence1[3] == "text 3" and pairs[1].labels == [i % 2 for i in range(10)]
    with pytest.raises(InputError, match=re.escape("eval.pairs[1].columns.score: unknown key; expected one of "
                                                   "sentence1, sentence2, label")):
        load_config(_config(team, "evalcols", ("pairs: [dev_pairs.csv]",
                                               "pairs: [dev_pairs.csv, {path: dev_ab.csv, columns: {score: y}}]")))


def test_a_band_the_curriculum_never_reaches_is_a_warning_at_validation(team: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `--rounds 2` with curriculum.total 4 reached competence 0.51; nearest_neighbour got 0.00 in both
    rounds, mined and encoded every round, never trained on, and nothing said so."""
    from flows.cli.app import main

    stuck = _config(team, "stuck", extra="curriculum: {total: 4}\n")
    assert main(["validate", str(stuck), "--rounds", "2", "--steps", "2"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: band nearest_neighbour is mined every round but never trained on: competence "
                          "reaches only 0.51"), err
    assert "curriculum.total: auto" in err and err.count("\n") == 1
    assert "round 1: competence 0.51, planned share random 0.64, in_domain 0.36, nearest_neighbour 0.00" in out

    default = _config(team, "reaches")  # curriculum.total: auto, the default: competence 1 on the last round
    assert main(["validate", str(default), "--rounds", "2", "--steps", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert err == "" and summary["warnings"] == [] and stringly(summary) == []
    assert summary["schedule"][1]["competence"] == [1.0, 1.0]
    assert summary["schedule"][1]["share"]["nearest_neighbour"] > 0.3


def test_dry_run_checks_estimates_and_writes_nothing(team: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli.app import main

    cfg = _config(team, "dry")
    assert main(["run", str(cfg), "--dry-run", "--rounds", "2", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config OK: {cfg}\n")
    assert "estimate (an estimate: calibrated on this machine's cpu" in out
    assert "per round: encode 88 sentences (64 pool sentences to mine, 24 to evaluate); train 3 steps of 8 rows" in out
    assert "whole run: 2 rounds, 6 steps, 200 sentences encoded" in out and "time: ~" in out and "disk: ~" in out
    assert main(["run", str(cfg), "--dry-run", "--rounds", "2", "--steps", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert stringly(result) == []
    estimate = result["estimate"]
    assert estimate["pool_sentences"] == 64 and estimate["eval_sentences"] == 24
    assert estimate["sentences_per_step"] == 8 * 3 and estimate["seconds"]["train"] > 0
    assert estimate["disk_bytes"]["models"] == 2 * estimate["calibration"]["model_bytes"] > 0
    assert not (team / "runs" / "dry").exists()
    kept = _config(team, "kept", extra="retention: {keep: 3}\n")
    assert main(["run", str(kept), "--dry-run", "--rounds", "2", "--steps", "3"]) == 0
    assert "note: retention.keep applies to scheduled runs" in capsys.readouterr().err


def test_read_header_reads_only_the_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataio.tables import read_header

    (tmp_path / "a.tsv").write_text("x\ty\n1\t2\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"t": "a"}\n{"t": "b", "d": "c"}\n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["a"], "topic": ["b"]}), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("one\n", encoding="utf-8")
    assert [read_header(tmp_path / n) for n in ("a.tsv", "b.jsonl", "c.parquet", "d.txt")] == [
        ["x", "y"], ["t", "d"], ["text", "topic"], []]
    with pytest.raises(InputError, match="no such file"):
        read_header(tmp_path / "e.csv")


# --------------------------------------------------------------------------- init to a finished run

@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_init_on_a_fresh_csv_to_a_finished_run_and_its_model_card(team: Path, harness: None,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from flows.cli.app import main

    monkeypatch.chdir(team)
    assert main(["init", "tweets.csv", "pairs.csv", "dev_pairs.csv", "--out", "team.yaml", "--model", "tiny-bert"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "wrote team.yaml"
    assert "corpus tweets.csv: text=tweet, domain=topic" in out and "pairs pairs.csv: anchor=sentence1" in out
    assert "eval-pairs dev_pairs.csv" in out
    text = (team / "team.yaml").read_text(encoding="utf-8")
    for line in ("    columns: {text: tweet, domain: topic}", "    columns: {anchor: sentence1, positive: sentence2}",
                 "  dev_metric: pairs/dev_pairs", "  bands: [random, in_domain, nearest_neighbour]",
                 "  name_or_path: ./tiny-bert", "output_dir: runs/team", "batch_size: 31"):
        assert line in text.splitlines() or any(ln.startswith(line + "   #") for ln in text.splitlines()), line
    assert main(["init", "tweets.csv", "--out", "team.yaml"]) == 2, "an existing config is never overwritten"
    capsys.readouterr()

    assert main(["run", "team.yaml", "--rounds", "2", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stringly(result) == []
    run = team / "runs" / "team"
    assert result["rounds_completed"] == [0, 1] and result["run_dir"] == str(run)

    card = (run / "rounds" / "1" / "model" / "README.md").read_text(encoding="utf-8")
    assert f"base_model: {team / 'tiny-bert'}" in card
    assert "**Curriculum round:** 1 of 2" in card
    assert f"| `{team / 'tweets.csv'}` | corpus | 60 | 60 | none |" in card
    assert f"| `{team / 'pairs.csv'}` | pairs | 20 | 2 | label-0 pairs 18 |" in card

    trained_pairs = set()
    for part in run.glob("triplets/round=*/**/*.parquet"):
        table = pq.read_table(part, columns=["anchor", "positive"]).to_pylist()
        trained_pairs |= {(row["anchor"], row["positive"]) for row in table}
    assert set(POSITIVE_PAIRS) <= trained_pairs
    assert not trained_pairs & set(LABEL_0_PAIRS), "a label-0 pair was mined as a positive"
