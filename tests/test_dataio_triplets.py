"""The triplet contract (dataio.triplets): one schema and manifest for both writers, paths that stay inside
the round, and folders of the old layout refused with the upgrade command, which converts them in place."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mining.encoders
from curriculum import TripletSampler
from curriculum.state import Plan
from curriculum.synthetic import band_table, write_round
from dataio.errors import TripletDataError
from dataio.triplet_layout import LEGACY_MANIFEST_NAME, MANIFEST_NAME, manifest_path, round_dir
from dataio.triplets import JUDGE_COLUMNS, SCHEMA, SCHEMA_VERSION, read_manifest, read_triplets, round_problem
from flows.cli.app import main
from mining.corpus import load_corpus
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import HashEncoder, write_toy_corpus_and_nli

# The files of schema version 1, as `mining.parquet` wrote them: `band` after the texts, `round` last.
SCHEMA_V1 = pa.schema([
    ("anchor_id", pa.string()), ("anchor", pa.string()), ("positive_id", pa.string()), ("positive", pa.string()),
    ("negative_id", pa.string()), ("negative", pa.string()), ("band", pa.string()),
    ("anchor_positive_sim", pa.float32()), ("anchor_negative_sim", pa.float32()),
    ("negative_rank", pa.int32()), ("round", pa.int32()),
])


def _inputs(folder: Path) -> tuple[Path, Path]:
    return write_toy_corpus_and_nli(folder, 80, seed=7)


@pytest.fixture
def mined(tmp_path: Path) -> Path:
    corpus = load_corpus([(files := _inputs(tmp_path))[0]], nli=[files[1]])
    out = tmp_path / "triplets"
    for r in (0, 1):
        mine(corpus, HashEncoder(16, salt=str(r)), out, round=r, seed=r,
             params=MiningParams(range_max=8, rows_per_file=40), show_progress=False)
    return out


def downgrade(root: Path) -> None:
    """Turn a folder into the schema-1 layout: `round` and `band` file columns, `round=<r>/manifest.json`."""
    for r in (0, 1):
        manifest = json.loads(manifest_path(root, r).read_text(encoding="utf-8"))
        for entry in manifest["files"]:
            path = round_dir(root, r) / entry["path"]
            table = pq.read_table(path)
            n = table.num_rows
            table = table.append_column("band", pa.array([entry["band"]] * n, pa.string()))
            table = table.append_column("round", pa.array([r] * n, pa.int32())).select(SCHEMA_V1.names)
            metadata = {**table.schema.metadata, b"simcse_curriculum.schema_version": b"1"}
            pq.write_table(table.cast(SCHEMA_V1).replace_schema_metadata(metadata), path, compression="zstd")
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest["schema_version"] = 1
        (round_dir(root, r) / LEGACY_MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
        manifest_path(root, r).unlink()


def plan() -> Plan:
    mixture = {"random": 0.5, "nearest_neighbour": 0.5}
    return Plan(round=0, stage=0, competence=1.0, mixture=mixture, alpha={b: 1.0 for b in mixture})


def batches(root: Path, n: int = 3) -> list[dict]:
    sampler = TripletSampler(root, 0, batch_size=8, seed=3)
    return [sampler.draw(plan()) for _ in range(n)]


def test_both_writers_write_the_same_contract(mined: Path, tmp_path: Path) -> None:
    """mining and curriculum.synthetic go through one writer: one schema, one set of file metadata keys, one
    manifest model."""
    synthetic = tmp_path / "synthetic"
    texts = [f"sentence {i}" for i in range(12)]
    write_round(synthetic, 0, {"random": band_table(texts[:6], texts[6:], texts[::-1][:6], [0.1] * 6)})
    mined_file = next(mined.glob("round=0/band=random/part-0.parquet"))
    synthetic_file = next(synthetic.glob("round=0/band=random/part-0.parquet"))
    schemas = [pq.read_schema(f) for f in (mined_file, synthetic_file)]
    assert all(s.remove_metadata().equals(SCHEMA) for s in schemas)
    assert not {"round", "band"} & set(schemas[0].names)  # partition keys live in the path only
    assert set(schemas[0].metadata) == set(schemas[1].metadata)
    keys = [set(json.loads(manifest_path(root, 0).read_text())) for root in (mined, synthetic)]
    assert keys[1] <= keys[0] and {"round", "files", "bands", "schema_version", "package_version"} <= keys[1]
    assert read_manifest(synthetic, 0).schema_version == read_manifest(mined, 0).schema_version == SCHEMA_VERSION
    assert not list(mined.glob("round=*/manifest.json")) and MANIFEST_NAME.startswith(".")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../round=1/band=random/part-0.parquet", "band=random/../../x"])
def test_manifest_paths_never_leave_the_round(mined: Path, bad: str) -> None:
    manifest = json.loads(manifest_path(mined, 0).read_text())
    manifest["files"][0]["path"] = bad
    manifest_path(mined, 0).write_text(json.dumps(manifest))
    with pytest.raises(TripletDataError, match="must stay inside the round"):
        TripletSampler(mined, 0, batch_size=4)
    with pytest.raises(TripletDataError, match="must stay inside the round"):
        read_triplets(mined)
    assert round_problem(mined, read_manifest(mined, 0)) is not None


def test_old_layout_is_refused_with_the_upgrade_command(mined: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    downgrade(mined)
    hint = f"`simcse-curriculum triplets upgrade {mined}`"
    with pytest.raises(TripletDataError, match="older versions") as caught:
        TripletSampler(mined, 0, batch_size=8)
    assert hint in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(TripletDataError, match="triplets upgrade"):
        read_triplets(mined)

    assert main(["inspect", str(mined)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and hint in err[0]

    corpus, nli = _inputs(tmp_path)
    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
    before = sorted(p.relative_to(mined) for p in mined.rglob("*"))
    assert main(["mine", "--corpus", str(corpus), "--nli", str(nli), "--out", str(mined), "--round", "2",
                 "--quiet"]) == 2
    assert hint in capsys.readouterr().err
    assert sorted(p.relative_to(mined) for p in mined.rglob("*")) == before, "nothing written into the old folder"


def test_upgrade_converts_in_place_and_every_reader_agrees(mined: Path, capsys) -> None:
    # A schema-1 file predates the judge's columns: they read as nulls after the upgrade, the rest is unchanged.
    before = [c for c in read_triplets(mined).column_names if c not in JUDGE_COLUMNS]
    rows = read_triplets(mined, columns=before).to_pylist()
    drawn = batches(mined)
    downgrade(mined)

    assert main(["triplets", "upgrade", str(mined)]) == 0
    assert "upgraded round 0, 1" in capsys.readouterr().out
    assert read_triplets(mined, columns=before).to_pylist() == rows
    assert read_triplets(mined, columns=list(JUDGE_COLUMNS)).to_pylist() == [dict.fromkeys(JUDGE_COLUMNS)] * len(rows)
    assert batches(mined) == drawn, "a run resumes on the upgraded folder with the same batches"
    for r in (0, 1):
        manifest = read_manifest(mined, r)
        assert manifest.schema_version == SCHEMA_VERSION and round_problem(mined, manifest, check_sha=True) is None
        assert not (round_dir(mined, r) / LEGACY_MANIFEST_NAME).exists()
    for part in mined.glob("round=*/band=*/part-*.parquet"):
        schema = pq.read_schema(part)
        assert schema.remove_metadata().equals(SCHEMA)
        assert schema.metadata[b"simcse_curriculum.schema_version"] == str(SCHEMA_VERSION).encode()

    import pandas as pd

    assert len(pd.read_parquet(mined)) == len(rows)
    assert main(["triplets", "upgrade", str(mined)]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out


def test_an_interrupted_upgrade_completes_when_run_again(mined: Path, monkeypatch) -> None:
    import dataio.triplet_upgrade as contract

    columns = [c for c in read_triplets(mined).column_names if c not in JUDGE_COLUMNS]  # schema 1 predates them
    rows = read_triplets(mined, columns=columns).to_pylist()
    downgrade(mined)
    real, calls = contract._upgrade_file, {"n": 0}

    def dies_on_the_third_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(contract, "_upgrade_file", dies_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        contract.upgrade_folder(mined)
    assert (round_dir(mined, 0) / LEGACY_MANIFEST_NAME).exists(), "the old manifest stays until the round is done"
    with pytest.raises(TripletDataError, match="triplets upgrade"):
        read_triplets(mined)
    monkeypatch.setattr(contract, "_upgrade_file", real)
    assert contract.upgrade_folder(mined) == [0, 1]
    assert read_triplets(mined, columns=columns).to_pylist() == rows


def test_upgrade_refuses_a_file_changed_after_mining(mined: Path) -> None:
    from dataio.triplet_upgrade import upgrade_folder

    downgrade(mined)
    manifest = json.loads((round_dir(mined, 0) / LEGACY_MANIFEST_NAME).read_text())
    part = round_dir(mined, 0) / manifest["files"][0]["path"]
    table = pq.read_table(part)
    pq.write_table(table.set_column(1, "anchor", pa.array(["edited"] * table.num_rows)), part)
    before = part.read_bytes()
    with pytest.raises(TripletDataError, match="sha256 differs"):
        upgrade_folder(mined)
    assert part.read_bytes() == before and (round_dir(mined, 0) / LEGACY_MANIFEST_NAME).exists()


def test_a_schema_2_folder_reads_as_is_with_the_judges_columns_null(mined: Path) -> None:
    """Rounds mined before the judge's columns need no upgrade: readers add them as nulls, batches are unchanged."""
    columns = [c for c in read_triplets(mined).column_names if c not in JUDGE_COLUMNS]
    rows = read_triplets(mined, columns=columns).to_pylist()
    drawn = batches(mined)
    for r in (0, 1):
        manifest = json.loads(manifest_path(mined, r).read_text(encoding="utf-8"))
        for entry in manifest["files"]:
            path = round_dir(mined, r) / entry["path"]
            table = pq.read_table(path)
            table = table.drop_columns(list(JUDGE_COLUMNS))
            metadata = {**table.schema.metadata, b"simcse_curriculum.schema_version": b"2"}
            pq.write_table(table.replace_schema_metadata(metadata), path, compression="zstd")
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest["schema_version"] = 2
        manifest_path(mined, r).write_text(json.dumps(manifest), encoding="utf-8")
    assert read_triplets(mined, columns=columns).to_pylist() == rows
    assert read_triplets(mined, columns=list(JUDGE_COLUMNS)).to_pylist() == [dict.fromkeys(JUDGE_COLUMNS)] * len(rows)
    assert batches(mined) == drawn
    for r in (0, 1):
        assert round_problem(mined, read_manifest(mined, r), check_sha=True) is None
