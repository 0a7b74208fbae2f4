"""Files as teams have them (issue 26): CSV delimited by `;`, a tab or `|` (an Excel export with a BOM and CRLF
line endings among them), gzipped text tables, `.json` lists of records, and yes/no labels, read by the one table
reader every loader uses (`dataio.tables`), with errors that say what to do."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dataio.errors import InputError
from dataio.tables import (
    parse_label,
    read_header,
    read_labeled_pairs,
    read_sts,
    read_table,
    sniff_delimiter,
    table_files,
    table_stem,
)

HEADLINES = [("Markets fall, investors worry about rates", "economy"),
             ('Storm "Ada"; coast braces for wind', "weather"),
             ("Cup final goes to extra time", "sport"),
             ("Parliament passes budget, 301 votes to 250", "politics")]


def _excel_semicolon(path: Path) -> Path:
    """What Excel writes for "CSV UTF-8" in a locale whose list separator is `;`: a BOM, CRLF, `;` between
    fields, fields holding `;` or quotes quoted."""
    lines = ["id;headline;desk;source"]
    for i, (text, desk) in enumerate(HEADLINES):
        cell = '"' + text.replace('"', '""') + '"' if (";" in text or '"' in text) else text
        lines.append(f"{i};{cell};{desk};Reuters")
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_a_csv_is_read_with_the_delimiter_it_was_written_with(tmp_path: Path, delimiter: str) -> None:
    import csv

    path = tmp_path / "headlines.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["headline", "desk"])
        writer.writerows(HEADLINES)
    assert read_header(path) == ["headline", "desk"]
    table = read_table(path, ["headline", "desk"])
    assert table.columns == {"headline": [h for h, _ in HEADLINES], "desk": [d for _, d in HEADLINES]}
    assert table.locations == [2, 3, 4, 5]


def test_an_excel_semicolon_export_with_bom_and_crlf_is_not_one_column(tmp_path: Path) -> None:
    """Before: the whole header was one column 'id;headline;desk;source', and the file a one-column corpus."""
    path = _excel_semicolon(tmp_path / "export.csv")
    assert read_header(path) == ["id", "headline", "desk", "source"]
    table = read_table(path, ["headline"], ["desk"])
    assert table.columns["headline"] == [h for h, _ in HEADLINES]
    assert table.columns["desk"] == [d for _, d in HEADLINES]
    assert table.locations == [2, 3, 4, 5]


def test_an_excel_sep_line_names_the_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"sep=;\r\na;b\r\n1,5;2\r\n3,25;4\r\n")  # commas are decimal commas here
    table = read_table(path, ["a", "b"])
    assert table.columns == {"a": ["1,5", "3,25"], "b": ["2", "4"]} and table.locations == [3, 4]
    assert read_header(path) == ["a", "b"]


def test_the_sniffer_keeps_comma_for_one_column_and_for_quoted_delimiters() -> None:
    assert sniff_delimiter("text\nhello world\nfoo bar\n") == ","
    assert sniff_delimiter('a,b\n"x; y",z\n"p; q",r\n') == ","
    assert sniff_delimiter('a;b\n"x, y";z\n"p, q";r\n') == ";"


def test_an_unquoted_delimiter_in_a_field_is_an_error_not_a_cut_text(tmp_path: Path) -> None:
    """A one-column CSV of sentences with commas used to keep each sentence up to its first comma."""
    path = tmp_path / "sentences.csv"
    path.write_text("text\nHello, world\nplain line\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"sentences\.csv: line 2: 2 fields where the header has 1: a field holds "
                                         r"the delimiter \(','\) unquoted; quote that field \(a file of one sentence "
                                         r"a line reads as is when named \.txt\)"):
        read_table(path, ["text"])


def test_a_header_read_as_one_column_says_which_delimiter_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "export.tsv"  # `;`-separated under a .tsv name
    path.write_text("headline;desk\na b;c\n", encoding="utf-8")
    with pytest.raises(InputError, match="the header was read as one column; its values look delimited by ';'"):
        read_table(path, ["headline"])


def test_gzipped_tables_read_like_the_plain_ones(tmp_path: Path) -> None:
    (tmp_path / "corpus.csv.gz").write_bytes(gzip.compress("\ufeffheadline;desk\r\na b;c\r\n".encode()))
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(b'{"headline": "a b", "desk": "c"}\n'))
    (tmp_path / "corpus.tsv.gz").write_bytes(gzip.compress(b"headline\tdesk\na b\tc\n"))
    (tmp_path / "corpus.txt.gz").write_bytes(gzip.compress(b"a b\n"))
    for name in ("corpus.csv.gz", "corpus.jsonl.gz", "corpus.tsv.gz"):
        assert read_header(tmp_path / name) == ["headline", "desk"], name
        assert read_table(tmp_path / name, ["headline", "desk"]).columns == {"headline": ["a b"], "desk": ["c"]}
    assert read_table(tmp_path / "corpus.txt.gz", ["text"]).columns == {"text": ["a b"]}
    assert [p.name for p in table_files(tmp_path)] == ["corpus.csv.gz", "corpus.jsonl.gz", "corpus.tsv.gz",
                                                       "corpus.txt.gz"]
    assert table_stem(tmp_path / "dev.csv.gz") == "dev" and table_stem(tmp_path / "dev.tsv") == "dev"
    (tmp_path / "broken.csv.gz").write_bytes(b"headline,desk\n")
    with pytest.raises(InputError, match=r"broken\.csv\.gz: not a readable gzip file"):
        read_table(tmp_path / "broken.csv.gz", ["headline"])


def test_a_json_file_is_a_list_of_records(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([{"q1": "a b", "q2": "c d", "dup": 1}, {"q1": "e f", "q2": "g h", "dup": 0}]))
    assert read_header(path) == ["q1", "q2", "dup"]
    pairs = read_labeled_pairs(path, {"sentence1": "q1", "sentence2": "q2", "label": "dup"})
    assert pairs.sentence1 == ["a b", "e f"] and pairs.labels == [1, 0]
    path.write_text(json.dumps([{"q1": "a b", "q2": "c d", "dup": 1}, {"q1": "e f", "dup": 0}]))
    with pytest.raises(InputError, match=r"dev\.json: row 2, column 'q2': missing field"):
        read_table(path, ["q1", "q2"])
    path.write_text(json.dumps({"data": [{"q1": "a"}]}))
    with pytest.raises(InputError, match="a JSON object, not a list of records; the records look to be under 'data'"):
        read_table(path, ["q1"])
    path.write_text('{"q1": "a b"}\n{"q1": "c d"}\n')  # JSON Lines saved as .json
    assert read_table(path, ["q1"]).columns == {"q1": ["a b", "c d"]}


def test_yes_no_labels_and_their_errors(tmp_path: Path) -> None:
    assert [parse_label(v) for v in ("yes", "No", " TRUE ", "false", "y", "n", "1", "0.0", 1, 0.0, True)] == \
        [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert [parse_label(v) for v in ("maybe", "2", 0.5, None, float("nan"))] == [None] * 5
    path = tmp_path / "pairs.csv"
    path.write_text("a|b|same\nx y|z w|yes\np q|r s|perhaps\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"pairs\.csv: line 3, column 'same': label 'perhaps' is not 0 or 1 "
                                         r"\(yes/no and true/false are read as 1/0\)"):
        read_labeled_pairs(path, {"sentence1": "a", "sentence2": "b", "label": "same"})


def test_a_missing_column_says_which_column_was_meant(tmp_path: Path) -> None:
    path = _excel_semicolon(tmp_path / "export.csv")
    with pytest.raises(InputError) as err:
        read_sts(path, {"sentence1": "headlne", "sentence2": "desk", "score": "id"})
    assert "column 'headlne': missing column 'headlne' (did you mean 'headline'?); the file has ['id', 'headline'" \
        in str(err.value)
    assert "--columns on init and evaluate" in str(err.value)


# ------------------------------------------------------------------ config errors: all at once, with a guess

def _team_folder(root: Path) -> Path:
    """headlines.csv (Excel `;` export), dev_sts.tsv: enough for a config to point at."""
    root.mkdir(parents=True, exist_ok=True)
    _excel_semicolon(root / "headlines.csv")
    rows = [f"{h}\t{h.lower()}\t{i % 5}" for i, (h, _) in enumerate(HEADLINES * 2)]
    (root / "dev_sts.tsv").write_text("s1\ts2\tsim\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_every_bad_key_of_a_config_is_reported_at_once_each_with_line_and_a_guess(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: one error per try (pydantic had reported all of them), and no "did you mean"."""
    from flows.cli import main

    config = tmp_path / "my.yaml"
    config.write_text("output_dir: runs/x\n"
                      "rounds: 2\n"
                      "data:\n"
                      "  corpus:\n"
                      "    path: headlines.csv\n"
                      "    columns: {txt: headline}\n"
                      "curriculum:\n"
                      "  pacing: sqroot\n"
                      "trainig: {lr: 1.0e-5}\n", encoding="utf-8")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: {config}: line 6: data.corpus.columns.txt: unknown key (did you mean 'text'?); expected one of "
        f"text, id, domain",
        f"error: {config}: line 8: curriculum.pacing: unknown 'sqroot' (did you mean 'root'?); expected one of "
        f"linear, root, geometric, step",
        f"error: {config}: line 9: trainig: unknown key (did you mean 'training'?); expected one of output_dir, "
        f"seed, rounds, steps_per_round, batch_size, model, data, eval, mining, curriculum, negatives, "
        f"negatives_per_anchor, positive_view, word_deletion, training, tracking, teacher, registry, retention"]


def test_every_missing_path_and_column_is_reported_at_once_relative_to_the_yaml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    team = _team_folder(tmp_path / "team")
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "my.yaml"  # a config in another folder: its paths are relative to it
    config.write_text("output_dir: runs/x\n"
                      "data:\n"
                      "  corpus: {path: team/headlines.csv, columns: {text: headlin, domain: desk}}\n"
                      "eval:\n"
                      "  sts:\n"
                      "    - {path: ../team/dev_sts.tsv, columns: {sentence1: s1, sentence2: s2, score: simm}}\n"
                      "    - ../team/dev_st.tsv\n", encoding="utf-8")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert err[0] == (f"error: {config}: line 3: data.corpus.path: not found: {tmp_path}/configs/team/headlines.csv; "
                      f"relative paths are read from {tmp_path}/configs, the folder of my.yaml")
    assert err[1].startswith(f"error: {team}/dev_sts.tsv: column 'simm': missing column 'simm' (did you mean "
                             f"'sim'?); the file has ['s1', 's2', 'sim']")
    assert err[1].endswith(f"(read as eval.sts[0].columns of {config}, line 6)")
    assert err[2] == (f"error: {config}: line 7: eval.sts[1].path: not found: {team}/dev_st.tsv (did you mean "
                      f"'dev_sts.tsv'?); relative paths are read from {tmp_path}/configs, the folder of my.yaml")
    assert not (tmp_path / "configs" / "runs").exists()


def test_a_dev_metric_that_names_no_file_says_which_was_meant(tmp_path: Path) -> None:
    from flows.config import load_config
    from flows.validate import check_run

    _team_folder(tmp_path)
    config = tmp_path / "my.yaml"
    config.write_text("output_dir: runs/x\nbatch_size: 2\n"
                      "data: {corpus: {path: headlines.csv, columns: {text: headline}}}\n"
                      "eval: {sts: [{path: dev_sts.tsv, columns: {sentence1: s1, sentence2: s2, score: sim}}], "
                      "dev_metric: sts/dev_st}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"eval.dev_metric: 'sts/dev_st' names no evaluation file \(did you mean "
                                         r"'sts/dev_sts'\?\); the files give sts/dev_sts"):
        check_run(load_config(config))
