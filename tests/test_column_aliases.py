"""One column-alias table (`dataio.tables.COLUMN_ALIASES`) for every loader: a file that `train` reads
(`simcse.data`), `mine` and the flows read (`mining.corpus`), and the other way round."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dataio.errors import InputError
from dataio.tables import COLUMN_ALIASES, accepted_names, read_columns
from mining.corpus import CorpusSource, NliSource, PairSource, load_corpus
from simcse.data import load_sentences, load_triplets

ROWS = [("A man plays a guitar.", "Someone makes music.", "Nobody is playing."),
        ("Two dogs run in a field.", "Animals are moving.", "The dogs are asleep."),
        ("A girl reads a book.", "A child is reading.", "A girl swims in a lake."),
        ("It rains in the city.", "The weather is wet.", "The city is dry.")]
CASES = [(column, alias) for column, aliases in COLUMN_ALIASES.items() for alias in aliases]


def _write(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([row[: len(header)] for row in rows])
    return path


def test_the_table_keeps_every_name_either_loader_took_before() -> None:
    """The union of the tables simcse.data and mining.corpus each kept before they shared one."""
    assert set(COLUMN_ALIASES["text"]) >= {"sentence", "sent0", "anchor", "sentence1"}
    assert set(COLUMN_ALIASES["anchor"]) >= {"sent0", "premise", "sentence1", "query"}
    assert set(COLUMN_ALIASES["positive"]) >= {"sent1", "entailment", "sentence2"}
    assert set(COLUMN_ALIASES["negative"]) >= {"hard_neg", "contradiction"}
    assert accepted_names("negative") == "negative, else hard_neg or contradiction"
    assert accepted_names("id") == "id"


@pytest.mark.parametrize("column, alias", [c for c in CASES if c[0] == "text"])
def test_a_corpus_under_each_text_alias_loads_for_train_and_mine(tmp_path: Path, column: str, alias: str) -> None:
    path = _write(tmp_path / "corpus.csv", [alias], [(r[0],) for r in ROWS])
    expected = [r[0] for r in ROWS]
    assert load_sentences(path).texts == expected
    assert load_corpus([path]).texts == expected


@pytest.mark.parametrize("column, alias", [c for c in CASES if c[0] != "text"])
def test_triplets_and_pairs_under_each_alias_load_for_train_and_mine(tmp_path: Path, column: str,
                                                                     alias: str) -> None:
    names = ["anchor", "positive", "negative"]
    header = [alias if n == column else n for n in names]
    nli = _write(tmp_path / "nli.csv", header, ROWS)
    train = load_triplets(nli)
    assert (train.anchor, train.positive, train.negative) == tuple([r[i] for r in ROWS] for i in range(3))
    mined = load_corpus(nli=[nli])
    assert [mined.texts[i] for i in mined.negative] == [r[2] for r in ROWS]
    assert [mined.texts[i] for i in mined.anchor] == [r[0] for r in ROWS]
    if column != "negative":  # a pairs file: anchor and positive only
        pairs = _write(tmp_path / "pairs.csv", header[:2], ROWS)
        train_pairs = load_triplets(pairs, require_negative=False)
        mined_pairs = load_corpus(pairs=[pairs])
        assert [mined_pairs.texts[i] for i in mined_pairs.positive] == train_pairs.positive == [r[1] for r in ROWS]


def test_a_column_the_user_names_is_read_exactly_and_errors_name_it(tmp_path: Path) -> None:
    """Aliases stand in for a canonical name only: a named column is required as named."""
    path = _write(tmp_path / "pairs.csv", ["sent0", "body"], ROWS)
    table = read_columns(path, ["anchor", "positive"], columns={"positive": "body"})
    assert table.columns["positive"] == [r[1] for r in ROWS] and table.columns["anchor"] == [r[0] for r in ROWS]
    assert str(table.error(1, "positive", "bad")) == f"{path}: line 3, column 'body': bad"
    with pytest.raises(InputError, match="missing column 'sent1'"):
        read_columns(path, ["anchor", "positive"], columns={"positive": "sent1"})  # not read as its alias
    with pytest.raises(InputError, match="missing column 'sent1'"):
        load_corpus(pairs=[PairSource(path, positive_column="sent1")])
    swapped = read_columns(path, ["anchor", "positive"], columns={"anchor": "body", "positive": "sent0"})
    assert swapped.columns["anchor"] == [r[1] for r in ROWS]
    assert load_corpus([CorpusSource(path, text_column="body")]).texts == [r[1] for r in ROWS]
    assert len(load_corpus(nli=[NliSource(_write(tmp_path / "n.csv", ["q", "p", "n"], ROWS), anchor_column="q",
                                          positive_column="p", negative_column="n")]).texts) == 12


# ------------------------------------------------------------------------------------- `init`'s guesses
@pytest.mark.parametrize("column, alias", [c for c in CASES if c[0] == "text"])
def test_init_takes_the_text_column_the_loaders_read_under_each_alias(tmp_path: Path, column: str,
                                                                       alias: str) -> None:
    """`init` (flows.rounds.input_files) looks for the table's names, so the corpus column it writes into the config is
    the one `train` and `mine` read by themselves, not a longer free-text column beside it (before, it knew only some
    of the aliases and took the longest column for `anchor` or `sentence1`)."""
    from flows.rounds.input_files import describe_file

    path = _write(tmp_path / "corpus.csv", [alias, "notes"],
                  [(r[0], f"{r[1]} {r[2]} (a longer note beside the sentence)") for r in ROWS])
    found = describe_file(str(path))
    assert (found.role, found.columns["text"]) == ("corpus", alias)
    assert load_corpus([path]).texts == [r[0] for r in ROWS]  # what the loader reads without a column map


@pytest.mark.parametrize("column, alias", [c for c in CASES if c[0] != "text"])
def test_init_maps_nli_columns_under_each_alias(tmp_path: Path, column: str, alias: str) -> None:
    from flows.rounds.input_files import describe_file

    names = ["anchor", "positive", "negative"]
    found = describe_file(str(_write(tmp_path / "nli.csv", [alias if n == column else n for n in names], ROWS)))
    assert found.role == "nli" and found.columns[column] == alias
