"""The Parquet round: schema, file metadata, manifest, readers, atomic writes under kill/exception, and reuse."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mining.parquet as mparquet
from dataio.triplet_layout import manifest_path
from dataio.triplets import SCHEMA, SCHEMA_VERSION, complete_rounds, read_triplets
from mining.corpus import load_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import HashEncoder, write_toy_corpus_and_nli

REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, n: int = 80) -> dict:
    corpus, nli = write_toy_corpus_and_nli(folder, n, seed=1)
    return {"corpus": [corpus], "nli": [nli]}


@pytest.fixture
def mined(tmp_path):
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "triplets"
    res = mine(corpus, HashEncoder(16), out, params=MiningParams(range_max=8, num_negatives=2, rows_per_file=50),
               show_progress=False)
    return out, res


def visible_parts(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("part-*.parquet"))


def test_schema_metadata_and_manifest(mined):
    out, _res = mined
    manifest = json.loads(manifest_path(out, 0).read_text())
    assert set(manifest) >= {"round", "files", "bands", "model_fingerprint", "corpus_fingerprint", "params", "created"}
    assert manifest["round"] == 0 and manifest["params"]["range_max"] == 8 and manifest["params"]["seed"] == 0
    total = 0
    for f in manifest["files"]:
        path = out / "round=0" / f["path"]
        assert f["path"].startswith(f"band={f['band']}/part-")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
        pf = pq.ParquetFile(path)
        assert pf.metadata.num_rows == f["rows"]
        assert pf.schema_arrow.remove_metadata().equals(SCHEMA)
        assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
        meta = {k.decode(): v.decode() for k, v in pf.schema_arrow.metadata.items()}
        assert meta["simcse_curriculum.schema_version"] == str(SCHEMA_VERSION)
        assert meta["simcse_curriculum.model_fingerprint"] == manifest["model_fingerprint"]
        assert meta["simcse_curriculum.corpus_fingerprint"] == manifest["corpus_fingerprint"]
        assert json.loads(meta["simcse_curriculum.params"]) == manifest["params"]
        assert meta["simcse_curriculum.band"] == f["band"]
        assert "simcse_curriculum.package_version" in meta and "simcse_curriculum.created" in meta
        total += f["rows"]
    assert total == sum(b["rows"] for b in manifest["bands"].values())
    assert sum(1 for f in manifest["files"] if f["band"] == "random") > 1  # split by rows_per_file
    for band, stats in manifest["bands"].items():
        table = read_triplets(out, bands=[band])
        assert stats["mean_anchor_negative_sim"] == pytest.approx(
            float(np.mean(table.column("anchor_negative_sim").to_numpy(), dtype=np.float64)), abs=1e-5)
        assert table.column("round").to_pylist() == [0] * table.num_rows
        if band != "nearest_neighbour":
            assert set(table.column("negative_rank").to_pylist()) == {-1}
    assert manifest_path(out, 0).stat().st_mode & 0o044  # readable by others, like any file


def test_manifest_passes_the_curriculum_reader(mined):
    from dataio.triplets import read_manifest

    out, res = mined
    manifest = read_manifest(out, 0)
    assert manifest.difficulties() == pytest.approx(res.difficulties())


def test_exception_mid_write_leaves_complete_files_and_no_manifest(tmp_path, monkeypatch):
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "triplets"
    calls = {"n": 0}
    original = mparquet.RoundWriter.table

    def failing(self, result, start, stop):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk full")
        return original(self, result, start, stop)

    monkeypatch.setattr(mparquet.RoundWriter, "table", failing)
    params = MiningParams(range_max=8, rows_per_file=30)
    with pytest.raises(RuntimeError, match="disk full"):
        mine(corpus, HashEncoder(16), out, params=params, show_progress=False)
    assert not manifest_path(out, 0).exists()
    parts = visible_parts(out)
    assert len(parts) == 3
    for p in parts:
        pq.read_table(p)  # every visible file is complete
    assert not [p for p in (out / "round=0").rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(mparquet.RoundWriter, "table", original)
    res = mine(corpus, HashEncoder(16), out, params=params, show_progress=False)
    assert not res.cached and manifest_path(out, 0).exists()


KILL_SCRIPT = textwrap.dedent("""
    import sys, time, pathlib
    import pyarrow.parquet as pq
    import mining.parquet as mp
    from mining.corpus import load_corpus
    from mining.params import MiningParams
    from mining.pipeline import mine
    from mining.testing import HashEncoder

    folder, signal_file = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    original = pq.ParquetWriter.write_table
    state = {"groups": 0}

    def slow(self, table, *args, **kwargs):
        original(self, table, *args, **kwargs)
        state["groups"] += 1
        if state["groups"] == 3:  # third file: bytes are on disk but the file is not finished
            signal_file.write_text("writing")
            time.sleep(120)

    pq.ParquetWriter.write_table = slow
    corpus = load_corpus([folder / "corpus.txt"], nli=[folder / "nli.csv"])
    mine(corpus, HashEncoder(16), folder / "triplets", params=MiningParams(range_max=8, rows_per_file=30),
         show_progress=False)
""")


def test_killed_write_leaves_no_partial_file_visible(tmp_path):
    make_inputs(tmp_path)
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT, encoding="utf-8")
    flag = tmp_path / "writing.flag"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(flag)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"writer exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("writer never reached the third file")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    root = tmp_path / "triplets"
    assert not manifest_path(root, 0).exists()
    parts = visible_parts(root)
    assert len(parts) == 2
    for p in parts:
        assert pq.read_table(p).num_rows > 0
    hidden = [p for p in (root / "round=0").rglob(".*.tmp")]
    assert len(hidden) == 1 and hidden[0].stat().st_size > 0  # the interrupted file, under a hidden name
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(hidden[0])
    # a re-run completes the round and clears the leftover
    corpus = load_corpus([tmp_path / "corpus.txt"], nli=[tmp_path / "nli.csv"])
    res = mine(corpus, HashEncoder(16), root, params=MiningParams(range_max=8, rows_per_file=30), show_progress=False)
    assert manifest_path(root, 0).exists() and not list((root / "round=0").rglob(".*.tmp"))
    assert sum(b["rows"] for b in res.bands.values()) == read_triplets(root).num_rows


def test_same_inputs_reuse_the_round_without_encoding(tmp_path):
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "t"
    enc = HashEncoder(16)
    first = mine(corpus, enc, out, show_progress=False)
    calls = enc.calls
    again = mine(corpus, enc, out, show_progress=False)
    assert again.cached and enc.calls == calls and again.manifest == first.manifest
    # other parameters: recomputed (embeddings come from the cache, not the encoder)
    other = mine(corpus, enc, out, params={"range_max": 9}, show_progress=False)
    assert not other.cached and enc.calls == calls
    # another model: re-encoded
    mine(corpus, HashEncoder(16, salt="v2"), out, show_progress=False)
    assert json.loads(manifest_path(out, 0).read_text())["model_fingerprint"] == "hash-encoder-16-v2"


def test_rewrite_removes_parts_of_the_previous_run(tmp_path):
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "t"
    mine(corpus, HashEncoder(16), out, params={"rows_per_file": 20}, show_progress=False)
    many = visible_parts(out)
    res = mine(corpus, HashEncoder(16), out, params={"rows_per_file": 1000}, show_progress=False)
    assert len(visible_parts(out)) == len(res.files) < len(many)
    assert read_triplets(out).num_rows == sum(b["rows"] for b in res.bands.values())


def test_rounds_are_independent(tmp_path):
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "t"
    mine(corpus, HashEncoder(16), out, round=0, show_progress=False)
    mine(corpus, HashEncoder(16, salt="r1"), out, round=1, show_progress=False)
    assert complete_rounds(out) == [0, 1]
    assert set(read_triplets(out, rounds=[1]).column("round").to_pylist()) == {1}


def _change_one_text(path: Path) -> None:
    """A valid part with the same rows and one different negative: what most single-bit flips decode to."""
    table = pq.read_table(path, partitioning=None)
    column = table.schema.get_field_index("negative")
    texts = table.column(column).to_pylist()
    texts[0] = texts[0] + " (edited)"
    pq.write_table(table.set_column(column, "negative", pa.array(texts, pa.string())), path)


def test_a_part_changed_after_mining_is_mined_again_not_reused(tmp_path, caplog):
    """Same inputs, one text changed in a part: the old code said "reusing it" (sizes and rows matched)."""
    corpus = load_corpus(**make_inputs(tmp_path))
    out = tmp_path / "t"
    enc = HashEncoder(16)
    first = mine(corpus, enc, out, show_progress=False)
    part = sorted(out.glob("round=0/band=*/part-*.parquet"))[0]
    original = pq.read_table(part, partitioning=None)
    _change_one_text(part)
    with caplog.at_level("WARNING", logger="mining.pipeline"):
        again = mine(corpus, enc, out, show_progress=False)
    assert not again.cached and "changed after mining" in caplog.text and str(part) in caplog.text
    assert pq.read_table(part, partitioning=None).equals(original)  # mined again: the same rows
    assert again.manifest.bands == first.manifest.bands


def test_readers_refuse_a_part_changed_after_mining(mined):
    from curriculum import TripletSampler
    from dataio.errors import InputError, TripletDataError
    from mining.inspect import inspect_triplets

    out, _ = mined
    part = sorted(out.glob("round=0/band=*/part-*.parquet"))[0]
    _change_one_text(part)
    with pytest.raises(InputError, match=r"changed after mining .*mine round 0 again"):
        inspect_triplets(out)
    with pytest.raises(TripletDataError, match=r"changed after mining"):
        TripletSampler(out, 0, batch_size=4, seed=0, verify_checksums=True)
    TripletSampler(out, 0, batch_size=4, seed=0)  # unverified, as before: sizes and rows still match
