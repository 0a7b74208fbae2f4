"""A triplets folder reads in one line in pandas, pyarrow, datasets, polars and DuckDB, and trains a
sentence-transformers model, on a folder written by `mine` and on a run's `triplets/`.

Each engine is pointed at the folder (polars and DuckDB by their recursive glob), and every engine must return
exactly the rows of the Parquet files in the partition tree, with `round` and `band` taken from the path.
The expected rows are read here file by file with pyarrow, independently of the project's own readers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import mining.encoders
from flows.cli.app import main
from flows.rounds import mine_step
from flows.run import inputs as run_inputs
from flows.run.config import load_config
from flows.run.rundir import RunDir
from mining.testing import HashEncoder, write_toy_corpus_and_nli

KEY = ("anchor_id", "positive_id", "negative_id", "negative_rank")


def _inputs(folder: Path) -> dict[str, Path]:
    corpus, nli = write_toy_corpus_and_nli(folder, 90, seed=3)
    return {"corpus": corpus, "nli": nli}


@pytest.fixture(scope="module")
def mined_by_cli(tmp_path_factory) -> Path:
    """Two rounds written by `simcse-curriculum mine` (its embeddings cache inside the folder, as by default)."""
    folder = tmp_path_factory.mktemp("cli")
    files = _inputs(folder)
    out = folder / "triplets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
        for r in (0, 1):
            assert main(["mine", "--corpus", str(files["corpus"]), "--nli", str(files["nli"]), "--out", str(out),
                         "--round", str(r), "--seed", str(r), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def run_triplets(tmp_path_factory) -> Path:
    """Two rounds mined by the flows' mining step into a run folder's `triplets/`."""
    folder = tmp_path_factory.mktemp("run")
    _inputs(folder)
    (folder / "run.yaml").write_text("output_dir: run\ndata:\n  corpus: corpus.txt\n  nli: nli.csv\n",
                                     encoding="utf-8")
    config = load_config(folder / "run.yaml")
    run = RunDir(config.output_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_inputs, "load_encoder", lambda *a, **k: HashEncoder(16, salt=str(a[0])))
        inputs = run_inputs.prepare_inputs(config, run)
        for r in (0, 1):
            mine_step.mine_round(f"model-{r}", inputs, config, run, r)
    return run.triplets


@pytest.fixture(params=["mine", "run"])
def folder(request) -> Path:
    return request.getfixturevalue("mined_by_cli" if request.param == "mine" else "run_triplets")


def expected_rows(folder: Path) -> Counter:
    """(round, band, anchor_id, positive_id, negative_id, negative_rank) of every row of every part file."""
    rows: Counter = Counter()
    for path in sorted(folder.glob("round=*/band=*/part-*.parquet")):
        r = int(path.parent.parent.name.split("=", 1)[1])
        band = path.parent.name.split("=", 1)[1]
        table = pq.ParquetFile(path).read(columns=list(KEY))
        rows.update((r, band, *values) for values in zip(*(table.column(c).to_pylist() for c in KEY)))
    assert rows and {r for r, *_ in rows} == {0, 1} and len({b for _, b, *_ in rows}) >= 3
    return rows


def as_rows(columns: dict[str, list[Any]], with_partitions: bool = True) -> Counter:
    keys = (("round", "band") if with_partitions else ()) + KEY
    values = [columns[k] for k in keys]
    out: Counter = Counter()
    for row in zip(*values):
        row = list(row)
        if with_partitions:
            row[0], row[1] = int(row[0]), str(row[1])
        out[tuple(row)] += 1
    return out


def test_pandas_reads_the_folder(folder: Path) -> None:
    import pandas as pd

    df = pd.read_parquet(folder)
    assert as_rows({c: df[c].tolist() for c in df.columns}) == expected_rows(folder)


def test_pyarrow_dataset_reads_the_folder(folder: Path) -> None:
    import pyarrow.dataset as ds

    table = ds.dataset(folder, partitioning="hive").to_table()
    assert as_rows(table.to_pydict()) == expected_rows(folder)


def test_datasets_reads_the_folder(folder: Path, tmp_path: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(tmp_path / "hf"))["train"]
    assert {"anchor", "positive", "negative"} <= set(ds.column_names)
    # datasets does not add Hive partition keys as columns: compare the rows on the file columns.
    expected = Counter()
    for (_r, _b, *key), n in expected_rows(folder).items():
        expected[tuple(key)] += n
    assert as_rows(ds.to_dict(), with_partitions=False) == expected


def test_to_hf_dataset_keeps_round_and_band(folder: Path) -> None:
    """Where `load_dataset` drops the partition keys, the contract's reader keeps them (int32, string)."""
    from dataio.triplets import to_hf_dataset

    ds = to_hf_dataset(folder)
    assert ds.features["round"].dtype == "int32" and ds.features["band"].dtype == "string"
    assert as_rows(ds.to_dict()) == expected_rows(folder)
    one = to_hf_dataset(folder, rounds=[1], bands=["random"], columns=["anchor", "band", "round"])
    assert one.column_names == ["anchor", "band", "round"] and set(one["band"]) == {"random"}
    assert set(one["round"]) == {1} and len(one) == sum(n for (r, b, *_), n in expected_rows(folder).items()
                                                            if (r, b) == (1, "random"))


def test_to_trainer_dataset_is_the_three_texts_in_the_losss_order(folder: Path) -> None:
    from dataio.triplets import to_trainer_dataset

    ds = to_trainer_dataset(folder, rounds=[0])
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert len(ds) == sum(n for (r, *_), n in expected_rows(folder).items() if r == 0)
    assert all(isinstance(v, str) and v for c in ds.column_names for v in ds[c]), "no null or empty text"


def test_polars_reads_the_folder(folder: Path) -> None:
    polars = pytest.importorskip("polars")

    df = polars.read_parquet(f"{folder}/**/*.parquet", hive_partitioning=True)
    assert as_rows(df.to_dict(as_series=False)) == expected_rows(folder)


def test_duckdb_reads_the_folder(folder: Path) -> None:
    duckdb = pytest.importorskip("duckdb")

    with duckdb.connect() as con:
        table = con.sql(f"select * from read_parquet('{folder}/**/*.parquet', hive_partitioning=true)").arrow()
    columns = table.read_all().to_pydict() if hasattr(table, "read_all") else table.to_pydict()
    assert as_rows(columns) == expected_rows(folder)


def test_sentence_transformers_trains_a_step_on_the_folder(folder: Path, tiny: str, tmp_path: Path) -> None:
    """The one line a user adds: keep the three text columns (the trainer feeds every other column, ids and
    similarities included, to the loss)."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )

    from simcse.testing import torch_threads

    train = datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(tmp_path / "hf"))["train"]
    train = train.select_columns(["anchor", "positive", "negative"])
    model = SentenceTransformer(tiny, device="cpu")  # a plain Hugging Face folder: Transformer + mean pooling
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st"), max_steps=1,
                                                per_device_train_batch_size=8, learning_rate=1e-3, save_strategy="no",
                                                report_to="none", use_cpu=True, dataloader_num_workers=0,
                                                disable_tqdm=True, logging_strategy="no")
    with torch_threads(1):
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                             loss=MultipleNegativesRankingLoss(model))
        result = trainer.train()
    assert trainer.state.global_step == 1 and np.isfinite(result.training_loss)
    assert any(not v.equal(before[k]) for k, v in model.state_dict().items()), "the step changed no weight"
