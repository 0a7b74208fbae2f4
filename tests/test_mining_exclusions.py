"""Excluded pairs (false negatives marked by a team): never mined again in any band, counted as `excluded_pair`,
part of the round's fingerprint, and bad files stop with one line naming the file, line and column."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mining.encoders
from dataio.triplet_layout import BANDS, manifest_path
from dataio.triplets import read_triplets
from flows.cli.app import main
from mining.corpus import load_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import HashEncoder, toy_sentences


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A corpus, pairs and NLI triplets (every band has rows), as in the band tests."""
    base = toy_sentences(80, seed=0, lengths=(3, 7))[:60]
    (tmp_path / "corpus.txt").write_text("\n".join(base) + "\n", encoding="utf-8")
    pairs = [(base[i], base[i] + " too") for i in range(20, 30)]
    (tmp_path / "pairs.tsv").write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in pairs),
                                        encoding="utf-8")
    nli = [(base[i], base[i] + " indeed", base[i + 1]) for i in range(30, 40)]
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\n" + "".join(",".join(r) + "\n" for r in nli),
                                      encoding="utf-8")
    return tmp_path


def _corpus(inputs: Path):
    return load_corpus([inputs / "corpus.txt"], pairs=[inputs / "pairs.tsv"], nli=[inputs / "nli.csv"])


def _run(corpus, out: Path, **kw):
    return mine(corpus, HashEncoder(16), out, params=MiningParams(range_max=10, num_negatives=2), seed=1,
                show_progress=False, **kw)


def _pairs(table: pa.Table) -> set[tuple[str, str]]:
    return set(zip(table.column("anchor_id").to_pylist(), table.column("negative_id").to_pylist()))


def _write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["anchor_id", "negative_id", "anchor", "negative"])
        writer.writerows([(a, n, "some text, \"quoted\"", "other\ntext") for a, n in pairs])
    return path


def test_excluded_pairs_are_never_mined_in_any_band(inputs: Path, tmp_path: Path) -> None:
    corpus = _corpus(inputs)
    first = _run(corpus, tmp_path / "first")
    mined = read_triplets(tmp_path / "first")
    by_band = {b: mined.filter(pa.compute.equal(mined.column("band"), b)) for b in BANDS}
    # Every nearest-neighbour and NLI pair, and half of the random and in-domain ones.
    marked = sorted(_pairs(by_band["nearest_neighbour"]) | _pairs(by_band["nli_contradiction"])
                    | set(sorted(_pairs(by_band["random"]))[::2]) | set(sorted(_pairs(by_band["in_domain"]))[::2]))
    exclusion = _write_pairs(tmp_path / "false_negatives.csv", marked)

    second = _run(corpus, tmp_path / "second", exclude_pairs=exclusion)
    again = read_triplets(tmp_path / "second")
    assert set(again.column("band").to_pylist()) >= {"random", "in_domain", "nearest_neighbour"}
    assert not _pairs(again) & set(marked)
    skipped = {b: s["skipped"].get("excluded_pair", 0) for b, s in second.bands.items()}
    assert skipped["nearest_neighbour"] > 0 and skipped["nli_contradiction"] == first.bands["nli_contradiction"]["rows"]
    assert second.bands["nli_contradiction"]["rows"] == 0  # each NLI row has one labeled negative, now excluded
    assert second.bands["nearest_neighbour"]["rows"] == first.bands["nearest_neighbour"]["rows"]

    manifest = second.manifest
    digest = hashlib.sha256(exclusion.read_bytes()).hexdigest()
    assert manifest.params["exclude_pairs_sha256"] == digest
    assert manifest.exclude_pairs["pairs"] == len(marked) == manifest.exclude_pairs["in_pool"]
    assert "exclude_pairs_sha256" not in first.manifest.params  # rounds without a file keep their fingerprint


def test_nearest_neighbours_come_from_deeper_when_many_are_excluded(inputs: Path, tmp_path: Path) -> None:
    """Marking round after round: the kNN list is retrieved deeper by the most pairs any anchor excluded, so the
    band keeps its rows (the next-nearest candidates) instead of running out of ranks."""
    corpus = _corpus(inputs)
    marked: set[tuple[str, str]] = set()
    rows = []
    params = MiningParams(num_negatives=5, range_max=6, relative_margin=None, max_score=None)
    for step in range(4):
        out = tmp_path / f"step{step}"
        exclusion = _write_pairs(tmp_path / f"fn{step}.csv", sorted(marked)) if marked else None
        result = mine(corpus, HashEncoder(16), out, params=params, bands=["nearest_neighbour"], show_progress=False,
                      exclude_pairs=exclusion)
        nn = _pairs(read_triplets(out))
        assert not nn & marked
        rows.append(result.bands["nearest_neighbour"]["rows"])
        marked |= nn
    assert rows == [rows[0]] * 4, rows  # 15 excluded per anchor by the last step, beyond any fixed slack


def test_a_changed_file_is_a_new_round_not_a_reused_one(inputs: Path, tmp_path: Path) -> None:
    corpus = _corpus(inputs)
    out = tmp_path / "out"
    plain = _run(corpus, out)
    nn = read_triplets(out, bands=["nearest_neighbour"])
    pairs = sorted(_pairs(nn))
    exclusion = _write_pairs(tmp_path / "x.csv", pairs[:3])
    with_file = _run(corpus, out, exclude_pairs=exclusion)
    assert not with_file.cached and plain.manifest.created and with_file.manifest.params != plain.manifest.params
    assert _run(corpus, out, exclude_pairs=exclusion).cached  # same file: reused
    _write_pairs(exclusion, pairs[:6])
    changed = _run(corpus, out, exclude_pairs=exclusion)
    assert not changed.cached
    assert not _pairs(read_triplets(out)) & set(pairs[:6])
    assert not _run(corpus, out).cached  # and dropping the file mines again too


def test_parquet_of_triplets_and_unknown_ids(inputs: Path, tmp_path: Path) -> None:
    """The triplet files themselves hold anchor_id and negative_id; ids not in the pool are counted, not fatal."""
    corpus = _corpus(inputs)
    _run(corpus, tmp_path / "first")
    nn = read_triplets(tmp_path / "first", bands=["nearest_neighbour"])
    extra = pa.table({"anchor_id": ["not-in-pool"], "negative_id": [corpus.ids[0]]})
    table = pa.concat_tables([nn.select(["anchor_id", "negative_id"]), extra])
    pq.write_table(table, tmp_path / "marked.parquet")
    second = _run(corpus, tmp_path / "second", exclude_pairs=tmp_path / "marked.parquet")
    assert not _pairs(read_triplets(tmp_path / "second")) & _pairs(nn)
    assert second.manifest.exclude_pairs["not_in_pool"] == 1


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))


def test_cli_mine_exclude_pairs(inputs: Path, tmp_path: Path, fake_encoder: None, capsys) -> None:
    base = ["mine", "--corpus", str(inputs / "corpus.txt"), "--pairs", str(inputs / "pairs.tsv"), "--nli",
            str(inputs / "nli.csv"), "--range-max", "10", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "first")]) == 0
    marked = sorted(_pairs(read_triplets(tmp_path / "first")))[::3]
    exclusion = _write_pairs(tmp_path / "fn.csv", marked)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "second"), "--exclude-pairs", str(exclusion)]) == 0
    assert "excluded pairs skipped" in capsys.readouterr().out
    assert not _pairs(read_triplets(tmp_path / "second")) & set(marked)
    manifest = json.loads(manifest_path(tmp_path / "second", 0).read_text(encoding="utf-8"))
    assert manifest["params"]["exclude_pairs_sha256"] == hashlib.sha256(exclusion.read_bytes()).hexdigest()


@pytest.mark.parametrize("content, expected", [
    ("anchor,negative_id\na,b\n", "fn.csv: column 'anchor_id': missing column 'anchor_id'"),
    ("anchor_id,negative_id\na,b\nc,\n", "fn.csv: line 3, column 'negative_id': empty id"),
    ("anchor_id,negative_id\na,b\nc\n", "fn.csv: line 3, column 'negative_id': 1 fields where the header has 2"),
])
def test_bad_exclusion_file_is_one_line_exit_2_and_nothing_written(inputs: Path, tmp_path: Path, fake_encoder: None,
                                                                  capsys, content: str, expected: str) -> None:
    (tmp_path / "fn.csv").write_text(content, encoding="utf-8")
    out = tmp_path / "never"
    assert main(["mine", "--corpus", str(inputs / "corpus.txt"), "--out", str(out), "--quiet", "--exclude-pairs",
                 str(tmp_path / "fn.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()
