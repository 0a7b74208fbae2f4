"""Loading corpora, pairs and NLI triplets: formats, aliases, stable ids, counting, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataio.errors import InputError
from mining.corpus import (
    NLI,
    PAIR,
    UNSUPERVISED,
    CorpusSource,
    NliSource,
    check_size,
    load_corpus,
    text_id,
)


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_txt_corpus_drops_empty_and_collapses_duplicates(tmp_path):
    f = write(tmp_path / "c.txt", "a cat sat\n\n  \nthe dog ran\na cat sat\n a cat sat \nbirds fly\n")
    c = load_corpus([f])
    assert c.texts == ["a cat sat", "the dog ran", "birds fly"]
    src = c.sources[0]
    assert (src.rows, src.kept, src.empty, src.duplicates) == (7, 3, 2, 2)
    assert list(c.kind) == [UNSUPERVISED] * 3
    assert list(c.anchor) == list(c.positive) == [0, 1, 2]
    assert list(c.negative) == [-1, -1, -1]


def test_ids_are_content_hashes_independent_of_file_order(tmp_path):
    a = load_corpus([write(tmp_path / "a.txt", "one\ntwo\nthree\n")])
    b = load_corpus([write(tmp_path / "b.txt", "three\none\ntwo\n")])
    assert dict(zip(a.texts, a.ids)) == dict(zip(b.texts, b.ids))
    assert a.ids[0] == text_id("one") and len(a.ids[0]) == 16


def test_id_and_domain_columns_are_kept(tmp_path):
    f = write(tmp_path / "c.csv", "id,text,domain\nx1,first text,news\nx2,second text,\nx3,first text,blog\n")
    c = load_corpus([f])
    assert c.texts == ["first text", "second text"]
    assert c.ids == ["x1", "x2"]
    assert c.domains == ["news", None]
    assert c.sources[0].duplicates == 1


def test_source_domain_labels_a_file_without_domain_column(tmp_path):
    c = load_corpus([CorpusSource(write(tmp_path / "t.txt", "x y\nz w\n"), domain="twitter")])
    assert c.domains == ["twitter", "twitter"]


def test_same_id_for_two_texts_is_an_error(tmp_path):
    f = write(tmp_path / "c.csv", "id,text\nk,one\nk,two\n")
    with pytest.raises(InputError, match=r"c\.csv: line 3, column 'id': id 'k' is already used"):
        load_corpus([f])


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "hf"])
def test_nli_formats_and_simcse_aliases(tmp_path, fmt):
    rows = [("A man eats .", "A person eats .", "Nobody eats ."),
            ("A dog runs .", "An animal moves .", "The dog sleeps ."),
            ("A man eats .", "A person eats .", "Nobody eats .")]  # duplicate row
    cols = ["sent0", "sent1", "hard_neg"]
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        f = write(tmp_path / f"n.{fmt}", sep.join(cols) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
    elif fmt == "jsonl":
        f = write(tmp_path / "n.jsonl", "".join(json.dumps(dict(zip(cols, r))) + "\n" for r in rows))
    else:
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
        if fmt == "parquet":
            f = tmp_path / "n.parquet"
            pq.write_table(table, f)
        else:
            import datasets

            f = tmp_path / "hf"
            datasets.Dataset(table).save_to_disk(str(f))
    c = load_corpus(nli=[f])
    assert c.n_anchor_rows == 2
    assert list(c.kind) == [NLI, NLI]
    assert [c.texts[i] for i in c.anchor] == ["A man eats .", "A dog runs ."]
    assert [c.texts[i] for i in c.positive] == ["A person eats .", "An animal moves ."]
    assert [c.texts[i] for i in c.negative] == ["Nobody eats .", "The dog sleeps ."]
    assert c.sources[0].duplicates == 1


def test_premise_entailment_contradiction_aliases(tmp_path):
    f = write(tmp_path / "n.csv", "premise,entailment,contradiction\np one,e one,c one\n")
    c = load_corpus(nli=[f])
    assert c.texts == ["p one", "e one", "c one"]


def test_configurable_column_names_take_precedence(tmp_path):
    f = write(tmp_path / "n.csv", "anchor,q,pos,neg\nignored,the query,the answer,wrong one\n")
    c = load_corpus(nli=[NliSource(f, anchor_column="q", positive_column="pos", negative_column="neg")])
    assert [c.texts[i] for i in (c.anchor[0], c.positive[0], c.negative[0])] == ["the query", "the answer", "wrong one"]


def test_corpus_sentences_with_a_pair_are_not_unsupervised_anchors(tmp_path):
    corpus = write(tmp_path / "c.txt", "q one\nfree sentence\n")
    pairs = write(tmp_path / "p.csv", "anchor,positive\nq one,answer one\n")
    c = load_corpus([corpus], pairs=[pairs])
    rows = {(c.texts[a], c.texts[p], int(k)) for a, p, k in zip(c.anchor, c.positive, c.kind)}
    assert rows == {("free sentence", "free sentence", UNSUPERVISED), ("q one", "answer one", PAIR)}
    assert set(c.texts) == {"q one", "free sentence", "answer one"}  # the pool holds every side
    assert load_corpus([corpus], pairs=[pairs], unsupervised_anchors=False).n_anchor_rows == 1


def test_nli_row_without_negative_is_kept_and_counted(tmp_path):
    f = write(tmp_path / "n.csv", "sent0,sent1,hard_neg\na,b,\nc,,e\n")
    c = load_corpus(nli=[f])
    assert c.n_anchor_rows == 1 and c.negative[0] == -1
    assert c.sources[0].missing_negative == 1 and c.sources[0].empty == 1


def test_missing_column_names_file_and_column(tmp_path):
    f = write(tmp_path / "n.csv", "sent0,sent1\na,b\n")
    with pytest.raises(InputError) as err:
        load_corpus(nli=[f])
    msg = str(err.value)
    assert "n.csv" in msg and "'hard_neg'" in msg and "\n" not in msg


def test_undecodable_bytes_name_the_line(tmp_path):
    f = write(tmp_path / "c.txt", b"fine line\nalso fine\nbad \xff\xfe byte\n")
    with pytest.raises(InputError, match=r"c\.txt: line 3: bytes that are not UTF-8"):
        load_corpus([f])


def test_empty_corpus_is_an_error(tmp_path):
    f = write(tmp_path / "c.txt", "\n  \n\n")
    with pytest.raises(InputError, match="no usable text"):
        load_corpus([f])


def test_non_text_cell_is_an_error(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"text": "ok"}\n{"text": ["a", "list"]}\n')
    with pytest.raises(InputError, match=r"c\.jsonl: line 2, column 'text': expected text"):
        load_corpus([f])


def test_corpus_smaller_than_requested_negatives(tmp_path):
    c = load_corpus([write(tmp_path / "c.txt", "one\ntwo\nthree\n")])
    check_size(c, 1)
    with pytest.raises(InputError, match=r"c\.txt: only 3 distinct sentences, fewer than the 5 needed"):
        check_size(c, 3)


def test_no_input_is_an_error():
    with pytest.raises(InputError, match="no input"):
        load_corpus()


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    f = write(tmp_path / "c.txt", "one\ntwo\n")
    assert load_corpus([f]).fingerprint() == load_corpus([f]).fingerprint()
    g = write(tmp_path / "d.txt", "one\ntwo!\n")
    assert load_corpus([f]).fingerprint() != load_corpus([g]).fingerprint()
    assert np.array_equal(load_corpus([f]).anchor, [0, 1])


def test_given_id_equal_to_another_texts_hash_id_is_an_error(tmp_path):
    f = write(tmp_path / "c.csv", f"id,text\n{text_id('other text')},one text\n")
    p = write(tmp_path / "p.csv", "anchor,positive\nother text,one text\n")
    with pytest.raises(InputError, match="equals the content-hash id of another text"):
        load_corpus([f], pairs=[p])


# -------------------------------------------------------------------------- labeled pairs (issue 12)
LABELED = ("sentence1,sentence2,label\n"
           "a cat sat on the mat,the cat was sitting on the mat,1\n"
           "stocks fell sharply,the market dropped,1.0\n"
           "a cat sat on the mat,rain is expected tomorrow,0\n"
           "stocks fell sharply,my phone battery died,0\n")


def test_pairs_labeled_0_are_dropped_and_counted_never_positives(tmp_path):
    from mining.corpus import PairSource

    c = load_corpus(pairs=[PairSource(write(tmp_path / "p.csv", LABELED))])
    pairs = {(c.texts[a], c.texts[p]) for a, p, k in zip(c.anchor, c.positive, c.kind) if k == PAIR}
    assert pairs == {("a cat sat on the mat", "the cat was sitting on the mat"),
                     ("stocks fell sharply", "the market dropped")}
    assert "rain is expected tomorrow" not in c.texts and "my phone battery died" not in c.texts
    src = c.sources[0]
    assert (src.rows, src.kept, src.label_0) == (4, 2, 2)
    assert c.describe()["sources"][0]["label_0"] == 2


def test_a_label_column_under_another_name_is_read_when_named(tmp_path):
    from mining.corpus import PairSource

    f = write(tmp_path / "p.tsv", LABELED.replace("label", "is_para").replace(",", "\t"))
    c = load_corpus(pairs=[PairSource(f, label_column="is_para")])
    assert c.sources[0].label_0 == 2 and int((c.kind == PAIR).sum()) == 2
    with pytest.raises(InputError, match="missing label column 'score'"):
        load_corpus(pairs=[PairSource(f, label_column="score")])


def test_a_label_that_is_not_0_or_1_names_the_line(tmp_path):
    f = write(tmp_path / "p.csv", LABELED.replace("stocks fell sharply,the market dropped,1.0",
                                                  "stocks fell sharply,the market dropped,maybe"))
    with pytest.raises(InputError) as err:
        load_corpus(pairs=[f])
    assert str(err.value).startswith(f"{f}: line 3, column 'label': label 'maybe' is not 0 or 1 (yes/no and "
                                     f"true/false are read as 1/0)")


def test_yes_no_and_true_false_labels_read_as_1_and_0(tmp_path):
    """Spreadsheets and annotation tools write yes/no; issue 26's pairs file was refused for it."""
    f = write(tmp_path / "p.csv", "sentence1,sentence2,label\na b c,d e f,Yes\ng h i,j k l,no\nm n o,p q r,TRUE\n")
    corpus = load_corpus(pairs=[f])
    assert corpus.sources[0].kept == 2 and corpus.sources[0].label_0 == 1


def test_a_pairs_file_with_only_label_0_rows_is_refused(tmp_path):
    f = write(tmp_path / "p.csv", "sentence1,sentence2,label\na b c,d e f,0\ng h i,j k l,0\n")
    with pytest.raises(InputError, match="all 2 pairs are labeled 0"):
        load_corpus(corpus=[write(tmp_path / "c.txt", "one\ntwo\nthree\n")], pairs=[f])
