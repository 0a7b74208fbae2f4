"""`simcse-curriculum mine` and `inspect` through flows.cli.app.main: outputs, exit code 2 on bad input with one
line and nothing left behind, and (e2e) the offline MiniLM on a slice of the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from json_audit import stringly

import mining.encoders
from dataio.triplet_layout import manifest_path
from flows.cli.app import main
from mining.testing import HashEncoder, toy_sentences, write_toy_nli


@pytest.fixture
def files(tmp_path):
    sents = toy_sentences(120, seed=5)
    (tmp_path / "a.txt").write_text("\n".join(sents[:60]) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(sents[60:]) + "\n", encoding="utf-8")
    write_toy_nli(tmp_path / "nli.csv", sents)
    return tmp_path


@pytest.fixture
def fake_encoder(monkeypatch):
    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_mine_then_inspect(files, fake_encoder, capsys, tmp_path):
    out = tmp_path / "out"
    rc = main(["mine", "--corpus", str(files / "a.txt"), "--corpus", str(files / "b.txt"), "--domain", "A",
               "--domain", "B", "--nli", str(files / "nli.csv"), "--out", str(out), "--bands",
               "random,in_domain", "--bands", "nli_contradiction,nearest_neighbour", "--quiet", "--seed", "2"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "round 0 written" in stdout and "nearest_neighbour" in stdout
    manifest = json.loads(manifest_path(out, 0).read_text())
    assert set(manifest["bands"]) == {"random", "in_domain", "nli_contradiction", "nearest_neighbour"}
    assert manifest["params"]["seed"] == 2
    assert "domain labels ['A', 'B']" in manifest["bands"]["in_domain"]["note"]

    assert main(["mine", "--corpus", str(files / "a.txt"), "--corpus", str(files / "b.txt"), "--domain", "A",
                 "--domain", "B", "--nli", str(files / "nli.csv"), "--out", str(out), "--quiet", "--seed", "2"]) == 0
    assert "reused" in capsys.readouterr().out

    plots = tmp_path / "plots"
    assert main(["inspect", str(out), "--json", "--plots", str(plots), "--false-negatives", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert stringly(report, allow=("anchor", "positive", "negative")) == []  # the sentences are text
    (rnd,) = report["rounds"]
    assert rnd["bands"]["random"]["rows"] == manifest["bands"]["random"]["rows"]
    assert len(rnd["suspected_false_negatives"]) == 3
    sims = [r["anchor_negative_sim"] for r in rnd["suspected_false_negatives"]]
    assert sims == sorted(sims, reverse=True) and all(r["band"] != "nli_contradiction"
                                                      for r in rnd["suspected_false_negatives"])
    assert all(len(b["samples"]) == 2 for b in rnd["bands"].values())
    png = Path(rnd["histogram"])
    assert png.parent == plots and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "suspected false negatives" in text and "nearest_neighbour" in text


@pytest.mark.parametrize("case, expected", [
    ("missing_column", "column"),
    ("missing_file", "no such file"),
    ("too_small", "fewer than the"),
    ("bad_band", "unknown band 'hardest'"),
    ("domain_count", "--domain given 1 times for 2 --corpus files"),
    ("bad_option", "range_min"),
    ("bad_model", "no such model folder"),
    ("cluster_without_shards", "--cluster needs --shards 2 or more"),
    ("unknown_engine", "--engine 'spark' is not known: use one of dask, ray"),
    ("ray_without_shards", "--engine ray needs --shards 2 or more"),
    ("ray_address_for_dask", "--cluster 'ray://127.0.0.1:10001' is a Ray address, but the engine is dask: set the "
                             "engine to ray (--engine)"),
    ("ray_not_installed", "--engine ray needs the ray package: pip install"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(files, capsys, tmp_path, case, expected, monkeypatch):
    if case != "bad_model":
        monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
    out = tmp_path / "never"
    args = {"missing_column": ["--nli", str(files / "a.txt"), "--corpus", str(files / "a.txt")],
            "missing_file": ["--corpus", str(files / "nope.txt")],
            "too_small": ["--corpus", str(files / "a.txt"), "--num-negatives", "70", "--range-max", "80"],
            "bad_band": ["--corpus", str(files / "a.txt"), "--bands", "random,hardest"],
            "domain_count": ["--corpus", str(files / "a.txt"), "--corpus", str(files / "b.txt"), "--domain", "x"],
            "bad_option": ["--corpus", str(files / "a.txt"), "--range-min", "9", "--range-max", "3"],
            "bad_model": ["--corpus", str(files / "a.txt"), "--model", str(tmp_path / "no-model")],
            "cluster_without_shards": ["--corpus", str(files / "a.txt"), "--cluster", "tcp://127.0.0.1:8786"],
            "unknown_engine": ["--corpus", str(files / "a.txt"), "--shards", "2", "--engine", "spark"],
            "ray_without_shards": ["--corpus", str(files / "a.txt"), "--engine", "ray"],
            "ray_address_for_dask": ["--corpus", str(files / "a.txt"), "--shards", "2", "--cluster",
                                     "ray://127.0.0.1:10001"],
            "ray_not_installed": ["--corpus", str(files / "a.txt"), "--shards", "2", "--engine", "ray"]}[case]
    if case == "ray_not_installed":
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["mine", "--out", str(out), "--quiet", *args]) == 2
    line = one_error_line(capsys)
    assert expected in line
    assert not out.exists()


def test_failure_while_mining_removes_the_folder_it_created(files, capsys, tmp_path, monkeypatch):
    class Broken(HashEncoder):
        def encode(self, texts, batch_size=32, **keywords):
            raise RuntimeError("GPU fell off")

    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: Broken(16))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        main(["mine", "--corpus", str(files / "a.txt"), "--out", str(out), "--quiet"])
    assert not out.exists()


def test_a_failed_mine_removes_its_own_folder_not_what_a_sibling_wrote_in_the_new_parent(files, capsys, tmp_path,
                                                                                           monkeypatch):
    """A sweep into a new parent: `--out new/a` creates new/, `--out new/b` finishes beside it, then new/a fails.
    Only new/a goes; new/b's triplets and cache and new/ stay (old code: rmtree of new/, new/b's output lost)."""
    sibling = tmp_path / "new" / "b"

    class SiblingFinishesThenBroken(HashEncoder):
        def encode(self, texts, batch_size=32, **keywords):
            monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
            assert main(["mine", "--corpus", str(files / "b.txt"), "--out", str(sibling), "--quiet"]) == 0
            raise RuntimeError("GPU fell off")

    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: SiblingFinishesThenBroken(16))
    with pytest.raises(RuntimeError, match="GPU fell off"):
        main(["mine", "--corpus", str(files / "a.txt"), "--out", str(tmp_path / "new" / "a"), "--quiet"])
    assert not (tmp_path / "new" / "a").exists()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["b"]
    assert json.loads(manifest_path(sibling, 0).read_text())["bands"]
    assert list((sibling / ".cache").rglob("*.npy")), "the sibling's embeddings cache is kept"


def test_a_failed_mine_removes_the_empty_parents_it_created_and_no_others(files, capsys, tmp_path, monkeypatch):
    class Broken(HashEncoder):
        def encode(self, texts, batch_size=32, **keywords):
            raise RuntimeError("GPU fell off")

    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: Broken(16))
    with pytest.raises(RuntimeError):
        main(["mine", "--corpus", str(files / "a.txt"), "--out", str(tmp_path / "new" / "x" / "y"), "--quiet"])
    assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
    assert tmp_path.is_dir()


def test_an_interrupted_mine_keeps_its_folder_and_a_rerun_reuses_its_embeddings(files, capsys, tmp_path,
                                                                                  monkeypatch):
    """^C after the corpus was encoded: the new folder stays with its .cache/ (old code removed it), and the
    next `mine` into it is accepted and encodes nothing."""
    import mining.pipeline

    encoder = HashEncoder(16)
    monkeypatch.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: encoder)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "new" / "out"
    args = ["mine", "--corpus", str(files / "a.txt"), "--corpus", str(files / "b.txt"), "--out", str(out), "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(mining.pipeline, "BandContext", interrupted)  # after the embeddings, before any band
        assert main(args) == 130  # click turns ^C into Abort: "aborted", exit code 130
    assert encoder.encoded > 0
    assert list((out / ".cache").rglob("*.npy")), "the embeddings are kept for the rerun"
    assert not (out / ".simcse-curriculum.lock").exists()
    encoder.encoded = 0
    capsys.readouterr()
    assert main(args) == 0
    assert "round 0 written" in capsys.readouterr().out
    assert encoder.encoded == 0, "the rerun reused the interrupted mine's embeddings"


def test_mine_shards_runs_the_shards_through_the_dask_map_and_gives_the_same_triplets(files, fake_encoder, capsys,
                                                                                      tmp_path, monkeypatch):
    import contextlib

    import mining.shards
    from dataio.triplets import read_triplets

    opened = []

    @contextlib.contextmanager
    def in_process(workers, address=None):  # the CLI's wiring; a real LocalCluster is tested in test_mining_shards
        opened.append((workers, address))
        yield mining.shards.local_map

    @contextlib.contextmanager
    def ray_in_process(workers, address=None):  # a real local Ray is tested in test_mining_shards
        opened.append(("ray", workers, address))
        yield mining.shards.local_map

    monkeypatch.setattr(mining.shards, "dask_map", in_process)
    monkeypatch.setattr(mining.shards, "ray_map", ray_in_process)
    common = ["mine", "--corpus", str(files / "a.txt"), "--corpus", str(files / "b.txt"), "--domain", "A", "--domain",
              "B", "--nli", str(files / "nli.csv"), "--quiet", "--seed", "4", "--backend", "faiss-flat"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0 and opened == []
    assert main([*common, "--out", str(tmp_path / "three"), "--shards", "3"]) == 0 and opened == [(3, None)]
    assert main([*common, "--out", str(tmp_path / "ray"), "--shards", "2", "--engine", "ray", "--cluster",
                 "ray://127.0.0.1:10001"]) == 0
    assert opened[1:] == [("ray", 2, "ray://127.0.0.1:10001")]
    ray_rows = read_triplets(tmp_path / "ray").select(["anchor_id", "negative_id", "band"]).to_pylist()
    manifest = json.loads((tmp_path / "three" / "round=0" / ".manifest.json").read_text())
    assert manifest["index"]["shards"] >= 1
    cols = ["anchor_id", "positive_id", "negative_id", "band", "negative_rank"]
    a, b = (read_triplets(tmp_path / d).select(cols).to_pylist() for d in ("one", "three"))

    def key(r: dict) -> tuple:
        return r["band"], r["anchor_id"], r["negative_id"]

    assert len(a) > 100 and sorted(a, key=key) == sorted(b, key=key)
    assert sorted(ray_rows, key=key) == sorted(({c: r[c] for c in ("anchor_id", "negative_id", "band")} for r in a),
                                              key=key)


def test_mine_json_prints_one_object_with_the_round_and_its_bands(files, fake_encoder, capsys, tmp_path):
    out = tmp_path / "out"
    args = ["mine", "--corpus", str(files / "a.txt"), "--nli", str(files / "nli.csv"), "--out", str(out), "--quiet"]
    assert main([*args, "--json"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1, stdout
    result = json.loads(stdout)
    manifest = json.loads(manifest_path(out, 0).read_text())
    assert result["round"] == 0 and result["reused"] is False and result["manifest"] == str(manifest_path(out, 0))
    assert {b: v["rows"] for b, v in result["bands"].items()} == {b: v["rows"] for b, v in manifest["bands"].items()}
    assert result["rows"] == sum(v["rows"] for v in manifest["bands"].values())
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is True


def test_mine_help_groups_its_options_and_cuts_no_name_at_80_columns(capsys, monkeypatch):
    import typer

    from flows.cli.app import app

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    assert main(["mine", "--help"]) == 0
    text = capsys.readouterr().out
    panels = ("Inputs", "Input columns", "Model", "Bands and negatives", "Search and scale-out")
    for panel in ("Options", *panels):
        assert f"─ {panel} ─" in text, panel
    command = typer.main.get_command(app).commands["mine"]
    flags = [flag for param in command.params for flag in (*param.opts, *param.secondary_opts)]
    assert len(flags) >= 35
    for flag in flags:
        assert f" {flag} " in text, f"{flag} is cut off or missing"
    assert "…" not in text
    grouped = {param.name: getattr(param, "rich_help_panel", None) for param in command.params}
    assert sum(panel is not None for panel in grouped.values()) == 29 and set(grouped.values()) - {None} == set(panels)


def test_inspect_without_rounds_is_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    assert "no complete round" in one_error_line(capsys)


@pytest.mark.e2e
def test_e2e_offline_minilm_on_shared_data(shared_data, minilm_path, tmp_path, capsys):
    wiki = (shared_data / "wiki" / "sentences.txt").read_text(encoding="utf-8").splitlines()[:150]
    tweets = (shared_data / "twitter" / "unlabeled.txt").read_text(encoding="utf-8").splitlines()[:150]
    nli = (shared_data / "nli" / "triplets.csv").read_text(encoding="utf-8").splitlines()[:101]
    (tmp_path / "wiki.txt").write_text("\n".join(wiki) + "\n", encoding="utf-8")
    (tmp_path / "tw.txt").write_text("\n".join(tweets) + "\n", encoding="utf-8")
    (tmp_path / "nli.csv").write_text("\n".join(nli) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["mine", "--corpus", str(tmp_path / "wiki.txt"), "--corpus", str(tmp_path / "tw.txt"),
               "--domain", "wiki", "--domain", "twitter", "--nli", str(tmp_path / "nli.csv"), "--model", minilm_path,
               "--out", str(out), "--max-length", "32", "--quiet"])
    assert rc == 0
    manifest = json.loads(manifest_path(out, 0).read_text())
    d = {b: s["mean_anchor_negative_sim"] for b, s in manifest["bands"].items()}
    assert d["random"] < d["in_domain"] < d["nearest_neighbour"]
    assert d["random"] < d["nli_contradiction"] < d["nearest_neighbour"]
    assert manifest["bands"]["nli_contradiction"]["rows"] == 100
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rounds"][0]["suspected_false_negatives"]
