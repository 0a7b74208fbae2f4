"""Files as teams have them (issue 26): CSV delimited by `;`, a tab or `|` (an Excel export with a BOM and CRLF
line endings among them), gzipped text tables, `.json` lists of records, and yes/no labels, read by the one table
reader every loader uses (`dataio.tables`), with errors that say what to do."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dataio.csv_dialect import sniff_delimiter
from dataio.errors import InputError
from dataio.eval_sets import parse_label, read_labeled_pairs, read_sts
from dataio.table_files import table_files, table_stem
from dataio.tables import read_header, read_table

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
    from flows.cli.app import main

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
    from flows.cli.app import main

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
    from flows.rounds.validate import check_run
    from flows.run.config import load_config

    _team_folder(tmp_path)
    config = tmp_path / "my.yaml"
    config.write_text("output_dir: runs/x\nbatch_size: 2\n"
                      "data: {corpus: {path: headlines.csv, columns: {text: headline}}}\n"
                      "eval: {sts: [{path: dev_sts.tsv, columns: {sentence1: s1, sentence2: s2, score: sim}}], "
                      "dev_metric: sts/dev_st}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"eval.dev_metric: 'sts/dev_st' names no evaluation file \(did you mean "
                                         r"'sts/dev_sts'\?\); the files give sts/dev_sts"):
        check_run(load_config(config))


# ------------------------------------------------------------------------- a news desk's files, as exported

DESKS = {
    "politics": ["Parliament votes on {n} budget amendments", "Minister resigns after {n} days in office",
                 "Coalition talks stall over {n} disputed seats", "Senate approves {n} new election rules",
                 "Opposition leader calls for {n} inquiries"],
    "economy": ["Inflation eases to {n} percent in November", "Central bank holds rates for the {n}th month",
                "Factory orders fall {n} percent on weak demand", "Shares of carmakers drop {n} percent",
                "Unemployment rises to {n} percent in the north"],
    "sport": ["Striker scores {n} goals in cup semi-final", "Marathon record falls by {n} seconds",
              "Coach sacked after {n} straight defeats", "Tennis champion wins {n}th title of season",
              "Stadium sells {n} thousand tickets for derby"],
    "weather": ["Storm brings {n} centimetres of rain to coast", "Heatwave pushes temperatures to {n} degrees",
                "Snow closes {n} mountain passes overnight", "Flood warnings issued for {n} rivers",
                "Fog delays {n} flights at the airport"],
    "culture": ["Museum opens exhibition of {n} lost paintings", "Film festival screens {n} debut features",
                "Orchestra tours {n} cities this winter", "Novelist wins prize for {n}-page saga",
                "Theatre revives play after {n} years"],
}
DESK_NAMES = list(DESKS)


def _headline(desk: str, template: int, n: int) -> str:
    return DESKS[desk][template % 5].format(n=n)


def _stories(n: int) -> list[dict[str, str]]:
    """Headlines of five desks, evenly; publishers unevenly (Reuters 70 %, AP 20 %, AFP 10 %); extra columns."""
    rows = []
    for i in range(n):
        desk = DESK_NAMES[i % 5]
        text = _headline(desk, i // 5, i + 3)
        if i % 7 == 0:
            text = text.replace(" ", ", ", 1)  # a comma inside a headline
        if i % 11 == 0:
            text += "; live updates"  # the delimiter inside a field: Excel quotes it
        source = "Reuters" if i % 10 < 7 else "AP" if i % 10 < 9 else "AFP"
        rows.append({"id": f"NW-{i:04d}", "headline": text, "desk": desk, "source": source,
                     "url": f"https://news.example/{desk}/{i}", "published": f"2026-11-{i % 28 + 1:02d}"})
    return rows


def _delimited(path: Path, header: list[str], rows: list[list[object]], delimiter: str, *, excel: bool = False,
               gzipped: bool = False) -> Path:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n" if excel else "\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = (("\ufeff" if excel else "") + buffer.getvalue()).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def newsdesk(folder: Path) -> dict[str, Path]:
    """A news desk's exports: an Excel `;` headline CSV with extra columns (BOM, CRLF), a `|` yes/no pairs file, a
    tab-delimited STS file whose score is named `rating`, out-of-domain labeled dev pairs as a .json list of
    records, a gzipped comma CSV archive and a gzipped JSON Lines wire feed."""
    folder.mkdir(parents=True, exist_ok=True)
    stories = _stories(120)
    files = {"headlines": _delimited(folder / "headlines.csv", list(stories[0]), [list(r.values()) for r in stories],
                                     ";", excel=True)}
    pairs = []
    for i in range(30):
        desk = DESK_NAMES[i % 5]
        a = _headline(desk, i, i + 200)
        if i % 3:
            pairs.append([a, "Report: " + a.lower().replace(" after ", " following "), "yes"])
        else:
            pairs.append([a, _headline(DESK_NAMES[(i + 2) % 5], i + 1, i + 300), "no"])
    files["pairs"] = _delimited(folder / "same_story.csv", ["headline_a", "headline_b", "same_story"], pairs, "|")
    sts = []
    for i in range(24):
        desk = DESK_NAMES[i % 5]
        a = _headline(desk, i, i + 400)
        b, rating = ((a.replace(" in ", " across "), 4.6 - (i % 3) * 0.2) if i % 4 == 0 else
                     (_headline(desk, i + 1, i + 400), 2.4 + (i % 3) * 0.1) if i % 4 == 1 else
                     (_headline(DESK_NAMES[(i + 1) % 5], i + 2, i + 500), 0.4 + (i % 5) * 0.1))
        sts.append([a, b, f"{rating:.1f}"])
    files["sts"] = _delimited(folder / "headline_similarity.csv", ["headline_1", "headline_2", "rating"], sts, "\t")
    questions = [("How do I bake sourdough bread at home?", "What is the best way to bake sourdough at home?", 1),
                 ("How can I learn Python programming quickly?", "What is the fastest way to learn Python?", 1),
                 ("Why does my laptop battery drain so fast?", "How do I make my laptop battery last longer?", 1),
                 ("What are good exercises for lower back pain?", "Which stretches help with back pain?", 1),
                 ("How do I remove a red wine stain from carpet?", "What is the capital city of Australia?", 0),
                 ("Which programming language should beginners learn?", "How long should I boil an egg?", 0),
                 ("How can I improve my chess openings?", "What is the best chess opening for beginners?", 1),
                 ("Is it safe to eat raw cookie dough?", "How do I change a flat bicycle tyre?", 0)]
    files["dev_json"] = folder / "dev_pairs.json"
    files["dev_json"].write_text(json.dumps([{"question1": a, "question2": b, "is_duplicate": y}
                                             for a, b, y in questions]), encoding="utf-8")
    archive = [[r["headline"].replace("; live updates", ""), r["desk"], r["source"]] for r in _stories(100)]
    files["csv_gz"] = _delimited(folder / "archive_2025.csv.gz", ["title", "section", "publisher"], archive, ",",
                                 gzipped=True)
    wire = "".join(json.dumps({"story_id": r["id"], "text": r["headline"], "desk": r["desk"], "source": r["source"]})
                   + "\n" for r in _stories(90))
    files["jsonl_gz"] = folder / "wire.jsonl.gz"
    files["jsonl_gz"].write_bytes(gzip.compress(wire.encode("utf-8")))
    return files


def _init(folder: Path, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          out: str = "desk.yaml") -> tuple[str, dict]:
    """`init ARGS --out desk.yaml` in `folder` (one try: it must succeed), then `validate` of what it wrote."""
    import yaml

    from flows.cli.app import main

    monkeypatch.chdir(folder)
    (folder / out).unlink(missing_ok=True)
    rc = main(["init", *args, "--out", out])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert main(["validate", out]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return printed.out, yaml.safe_load((folder / out).read_text(encoding="utf-8"))


SHAPES = {
    # shape: (the files init is given, the config section the shape lands in, what it must hold)
    "excel_semicolon_headlines": (["headlines"], ("data", "corpus"),
                                  {"path": "headlines.csv", "columns": {"text": "headline", "domain": "desk"}}),
    "yes_no_pairs": (["headlines", "pairs"], ("data", "pairs"),
                     {"path": "same_story.csv",
                      "columns": {"anchor": "headline_a", "positive": "headline_b", "label": "same_story"}}),
    "sts_file": (["headlines", "sts"], ("eval", "sts", 0),
                 {"path": "headline_similarity.csv",
                  "columns": {"sentence1": "headline_1", "sentence2": "headline_2", "score": "rating"}}),
    "csv_gz": (["csv_gz"], ("data", "corpus"),
               {"path": "archive_2025.csv.gz", "columns": {"text": "title", "domain": "section"}}),
    "json_records": (["headlines", "dev_json"], ("eval", "pairs", 0),
                     {"path": "dev_pairs.json",
                      "columns": {"sentence1": "question1", "sentence2": "question2", "label": "is_duplicate"}}),
    "jsonl_gz": (["jsonl_gz"], ("data", "corpus"),
                 {"path": "wire.jsonl.gz", "columns": {"id": "story_id", "domain": "desk"}}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_init_accepts_each_shape_in_one_try_and_its_config_validates(
        tmp_path: Path, shape: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: five `init` tries and two pandas fixes before a news desk's files were accepted."""
    files = newsdesk(tmp_path)
    names, where, expected = SHAPES[shape]
    out, config = _init(tmp_path, [files[n].name for n in names], capsys, monkeypatch)
    section: object = config
    for key in where:
        section = section[key]  # type: ignore[index]
    assert section == expected, out


def test_init_takes_a_corpus_pairs_and_dev_files_each_for_what_it_is_and_says_its_choices(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: "3 corpus files ... merge them into one file"; then the out-of-domain labeled pairs as the dev
    metric and the publisher column as the domain, and the report said no round beat the starting model."""
    files = newsdesk(tmp_path)
    out, config = _init(tmp_path, [files[n].name for n in ("headlines", "pairs", "sts", "dev_json")], capsys,
                        monkeypatch)
    lines = out.splitlines()
    assert lines[1:5] == [
        "  corpus headlines.csv: text=headline, id=id, domain=desk (one text per row)",
        "  pairs same_story.csv: anchor=headline_a, positive=headline_b, label=same_story (yes/no 'same_story' "
        "column: rows labeled no are dropped, pairs are trained on as positives; to evaluate on it instead give "
        "eval-pairs=same_story.csv)",
        "  sts headline_similarity.csv: sentence1=headline_1, sentence2=headline_2, score=rating (a graded 'rating' "
        "column)",
        "  eval-pairs dev_pairs.json: sentence1=question1, sentence2=question2, label=is_duplicate (0/1 "
        "'is_duplicate' column, and the file name says evaluation)"]
    assert lines[5] == "choices (each also a comment in desk.yaml, where it is changed):"
    assert lines[6] == ("  domain: column 'desk', 5 values, evenness 1.00 over the 120 rows (source: 3 values, "
                        "evenness 0.73); the in_domain band draws each anchor's negative from its group. To use "
                        "'source' instead: data.corpus.columns.domain: source")
    assert lines[7].startswith("  dev metric: sts/headline_similarity, 100% of its words occur in the training "
                               "texts (pairs/dev_pairs: 0%)")
    assert lines[7].endswith("To use pairs/dev_pairs instead: eval.dev_metric: pairs/dev_pairs")
    assert config["eval"]["dev_metric"] == "sts/headline_similarity"
    assert config["data"]["corpus"]["columns"] == {"text": "headline", "domain": "desk"}
    text = (tmp_path / "desk.yaml").read_text(encoding="utf-8")
    assert "    # domain: column 'desk', 5 values" in text and "data.corpus.columns.domain: source" in text
    assert "  # dev metric: sts/headline_similarity" in text and "eval.dev_metric: pairs/dev_pairs" in text


def test_the_domain_is_judged_by_how_a_column_splits_the_corpus_not_by_its_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The desks under a column named `source` and the publishers under one named `desk`: the split decides."""
    stories = _stories(120)
    swapped = [[r["headline"], r["source"], r["desk"]] for r in stories]
    _delimited(tmp_path / "swapped.csv", ["headline", "desk", "source"], swapped, ",")
    _, config = _init(tmp_path, ["swapped.csv"], capsys, monkeypatch)
    assert config["data"]["corpus"]["columns"] == {"text": "headline", "domain": "source"}


def test_column_options_on_init_name_what_cannot_be_guessed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A score on 0-100 named `y` beside columns `a`, `b` is not guessed; --columns says it, as `columns:` would."""
    from flows.cli.app import main

    files = newsdesk(tmp_path)
    rows = [line.split("\t") for line in files["sts"].read_text(encoding="utf-8").splitlines()[1:]]
    _delimited(tmp_path / "ratings.csv", ["a", "b", "y"], [[a, b, round(float(r) * 20)] for a, b, r in rows], ",")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "headlines.csv", "ratings.csv", "--out", "desk.yaml"]) == 2
    err = capsys.readouterr().err
    assert "2 files read as corpus files" in err and "give --columns score=y or sts=ratings.csv" in err
    assert "merge them" not in err
    assert main(["init", "headlines.csv", "ratings.csv", "--out", "desk.yaml", "--columns", "colour=y"]) == 2
    assert "--columns: unknown key 'colour' (did you mean 'score'?)" not in capsys.readouterr().err  # not close
    assert main(["init", "headlines.csv", "ratings.csv", "--out", "desk.yaml", "--columns", "scor=y"]) == 2
    assert "--columns: unknown key 'scor' (did you mean 'score'?)" in capsys.readouterr().err
    assert main(["init", "headlines.csv", "ratings.csv", "--out", "desk.yaml", "--columns", "score=yy"]) == 2
    assert "--columns score=yy: no file given has a column 'yy' (did you mean 'y'?)" in capsys.readouterr().err
    out, config = _init(tmp_path, ["headlines.csv", "ratings.csv", "--columns", "score=y",
                                   "--columns", "{domain: source}"], capsys, monkeypatch)
    assert config["eval"]["sts"][0]["columns"] == {"sentence1": "a", "sentence2": "b", "score": "y"}
    assert config["data"]["corpus"]["columns"] == {"text": "headline", "domain": "source"}
    assert "domain: column 'source', given with --columns" in out


def test_init_checks_the_config_as_the_users_file_never_a_temporary_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A message named `.try3.yaml.up_gss_8.tmp`, the temporary file init checked."""
    from flows.cli.app import main

    monkeypatch.chdir(tmp_path)
    newsdesk(tmp_path)
    assert main(["init", "headlines.csv", "--out", "try3.yaml", "--model", "./models/my-encoder"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: try3.yaml: line 12: model.name_or_path: not found: {tmp_path}/models/my-encoder; "
                   f"relative paths are read from {tmp_path}, the folder of try3.yaml (found checking the config "
                   f"init would write as try3.yaml; nothing was written)\n")
    assert not list(tmp_path.glob(".try3*")) and not (tmp_path / "try3.yaml").exists()


def test_evaluate_reads_the_dev_file_through_the_same_column_map(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `evaluate` had no column options and rejected the dev file `run` read through `columns:`."""
    from flows.cli.app import main
    from simcse.testing import build_tiny_model

    files = newsdesk(tmp_path / "desk")
    tiny = str(build_tiny_model(tmp_path / "tiny"))
    args = ["evaluate", tiny, "--sts", str(files["sts"]), "--pairs", str(files["pairs"]), "--json"]
    assert main(args) == 2
    assert "missing column 'sentence1'" in capsys.readouterr().err
    assert main([*args, "--columns", "sentence1=headline_1,sentence2=headline_2,score=rating",
                 "--columns", "{sentence1: headline_a, sentence2: headline_b, label: same_story}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["sts"]) == {"headline_similarity"} and set(result["pairs"]) == {"same_story"}
    assert main([*args[:4], "--columns", "sentence1=headline_1,sentence2=headline_2,score=ratin"]) == 2
    assert "--columns score=ratin: no file given has a column 'ratin' (did you mean 'rating'?)" in \
        capsys.readouterr().err


def test_a_one_round_run_is_told_exactly_how_to_train_on_every_band_it_mines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: a one-round nightly stayed at competence 0.10 (random band only) every night, and the warning
    suggested `curriculum.total: auto`, which was already on."""
    from flows.cli.app import main

    files = newsdesk(tmp_path)
    # with training pairs beside the headlines, init writes the banded curriculum (a corpus alone gets the judge
    # experiment's static in-batch recipe: tests/test_flows_init_teacher.py)
    _init(tmp_path, [files["headlines"].name, files["pairs"].name], capsys, monkeypatch)
    text = (tmp_path / "desk.yaml").read_text(encoding="utf-8")
    assert "  # unit: step   # competence grows every step instead of every round" in text
    one = tmp_path / "one.yaml"
    one.write_text(text.replace("rounds: 3 ", "rounds: 1 "), encoding="utf-8")
    assert main(["validate", str(one)]) == 0
    out, err = capsys.readouterr()
    assert "round 0: competence 0.10, planned share random 1.00, in_domain 0.00, nearest_neighbour 0.00" in out
    warnings = err.splitlines()
    assert [w.split(":")[1] for w in warnings] == [" band in_domain is mined every round but never trained on",
                                                   " band nearest_neighbour is mined every round but never trained on"]
    for warning in warnings:
        assert ("set curriculum: {unit: step}: competence then grows every step and reaches 1 on the run's last one "
                "(step 9), so the one round goes from easy to hard bands (curriculum.total: auto is on already, but "
                "it counts rounds, and one round never leaves the first); or leave") in warning
        assert "curriculum.total: auto reaches" not in warning
    one.write_text(text.replace("rounds: 3 ", "rounds: 1 ").replace("  # unit: step", "  unit: step"), encoding="utf-8")
    assert main(["validate", str(one)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "round 0: competence 0.10-1.00, planned share random 0.53, in_domain 0.31, " \
                         "nearest_neighbour 0.16" in out


def test_a_gzipped_table_is_decompressed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its lines' lengths are checked as it is read (the limit of a line still holds), not in a pass of its own."""
    import dataio.table_files as table_files_module
    import dataio.tables as tables

    path = tmp_path / "corpus.tsv.gz"
    path.write_bytes(gzip.compress(b"headline\tdesk\n" + b"".join(b"a b %d\tc\n" % i for i in range(1000))))
    opened: list[str] = []
    real = gzip.open
    monkeypatch.setattr(tables.gzip, "open", lambda *a, **k: opened.append(str(a[0])) or real(*a, **k))
    assert len(read_table(path, ["headline", "desk"]).columns["desk"]) == 1000
    assert len(opened) <= 2, opened  # the header (the first MiB) and the file, once
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"x" * 30 + b"\tc\n"))  # line 1002
    monkeypatch.setattr(table_files_module, "MAX_LINE_BYTES", 20)
    with pytest.raises(InputError, match=r"line 1002: 32 bytes, over the 20-byte limit of a line"):
        read_table(path, ["headline", "desk"])
