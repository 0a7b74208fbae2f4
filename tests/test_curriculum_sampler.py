"""TripletSampler on small Parquet rounds written in the mining contract: uniqueness, determinism,
mixture, exact resume, and clear errors for incomplete or damaged rounds."""

from __future__ import annotations

import json
import random
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum import (
    CurriculumScheduler,
    StateError,
    TripletDataError,
    TripletSampler,
    complete_rounds,
    parse_config,
    read_manifest,
)
from curriculum.state import Plan
from curriculum.synthetic import band_table, write_round

BANDS = ["random", "in_domain", "nli_contradiction", "nearest_neighbour"]


def make_round(root, round_, *, rows=120, pool=150, bands=BANDS, empty=(), rows_per_file=50):
    """Rows over a small shared pool of texts, so rows collide often (exercises the deferral path);
    about a fifth have no positive (unsupervised rows)."""
    rng = random.Random(1000 + round_)
    texts = [f"pool sentence number {i}" for i in range(pool)]
    tables = {}
    for k, band in enumerate(bands):
        seen, a, p, n = set(), [], [], []
        while len(a) < rows:
            x, y, z = rng.sample(range(pool), 3)
            if (x, z) in seen:
                continue
            seen.add((x, z))
            a.append(texts[x])
            p.append(None if rng.random() < 0.2 else texts[y])
            n.append(texts[z])
        tables[band] = band_table(round_, band, a, p, n, [0.1 + 0.2 * k + 0.01 * rng.random() for _ in a])
    write_round(root, round_, tables, rows_per_file=rows_per_file, empty_bands=empty)
    return {band: {(r["anchor"], r["positive"] or r["anchor"], r["negative"]) for r in t.to_pylist()}
            for band, t in tables.items()}


def plan(mixture, alpha=None):
    return Plan(round=0, stage=0, competence=1.0, mixture=mixture, alpha=alpha or {b: 1.0 for b in mixture})


UNIFORM = plan({b: 0.25 for b in BANDS}, {"random": 0.5, "in_domain": 1.0, "nli_contradiction": 1.5,
                                          "nearest_neighbour": 2.0})


@pytest.fixture(scope="module")
def round0(tmp_path_factory):
    root = tmp_path_factory.mktemp("triplets")
    rows = make_round(root, 0)
    return root, rows


def test_batches_never_repeat_a_text_and_rows_stay_whole(round0):
    root, rows = round0
    sampler = TripletSampler(root, 0, batch_size=16, seed=7)
    deferred = 0
    for _ in range(60):
        batch = sampler.draw(UNIFORM)
        assert set(batch) == {"anchor", "positive", "negative", "alpha", "band"}
        assert all(len(v) == 16 for v in batch.values())
        owners = Counter()
        for a, p, n, band, alpha in zip(batch["anchor"], batch["positive"], batch["negative"], batch["band"],
                                        batch["alpha"]):
            assert (a, p, n) in rows[band]  # a real row of that band, columns not mixed up
            assert alpha == UNIFORM.alpha[band]
            owners.update({a, p, n})  # a row's own anchor may be its positive (unsupervised)
        assert max(owners.values()) == 1, owners.most_common(3)
        deferred += sum(len(s["pending"]) for s in sampler.state_dict()["bands"].values())
    assert deferred > 0  # the fixture is dense enough that collisions (and deferrals) really happened


def test_every_row_is_used_about_once_per_epoch(round0):
    root, rows = round0
    sampler = TripletSampler(root, 0, batch_size=10, seed=1)
    counts = Counter()
    for _ in range(36):  # 360 rows = 3 epochs of the 120-row band
        batch = sampler.draw(plan({"in_domain": 1.0}))
        counts.update(zip(batch["anchor"], batch["positive"], batch["negative"]))
    assert set(counts) == rows["in_domain"]
    assert 2 <= min(counts.values()) and max(counts.values()) <= 4


def test_same_seed_same_batches_other_seed_other_batches(round0):
    root, _ = round0
    first = [TripletSampler(root, 0, batch_size=8, seed=3).draw(UNIFORM) for _ in range(1)]
    a, b, c = (TripletSampler(root, 0, batch_size=8, seed=s) for s in (3, 3, 4))
    run_a = [a.draw(UNIFORM) for _ in range(20)]
    assert run_a == [b.draw(UNIFORM) for _ in range(20)]
    assert run_a != [c.draw(UNIFORM) for _ in range(20)]
    assert first[0] == run_a[0]


def test_draws_follow_the_mixture(round0):
    root, _ = round0
    sampler = TripletSampler(root, 0, batch_size=16, seed=11)
    counts = Counter()
    for _ in range(200):
        counts.update(sampler.draw(plan({"random": 0.75, "nearest_neighbour": 0.25, "in_domain": 0.0}))["band"])
    assert set(counts) == {"random", "nearest_neighbour"}
    assert counts["random"] / 3200 == pytest.approx(0.75, abs=0.03)


def test_an_impossible_batch_is_an_error_not_a_duplicate(tmp_path):
    t = band_table(0, "random", ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], [0.1, 0.1, 0.1])
    write_round(tmp_path, 0, {"random": t})
    with pytest.raises(TripletDataError, match="cannot fill a batch of 2 rows without repeating a text"):
        TripletSampler(tmp_path, 0, batch_size=2).draw(plan({"random": 1.0}))


# ---------------------------------------------------------------- resume
STEPS = 12
CONFIGS = {
    "per_step": {"pacing": "linear", "unit": "step", "total": 20, "alpha": {"start": 0.0, "end": 1.0}},
    "adaptive": {"mode": "adaptive", "pacing": "root", "total": 2, "mixture": {"floor": 0.2}},
}


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_rounds")
    make_round(root, 0)
    make_round(root, 1, empty=["nli_contradiction"], bands=["random", "in_domain", "nearest_neighbour"])
    return root


def run(root, state_path, config, *, stop_after=None, lose_last=False):
    """The flow's loop. Stops ("is killed") once `stop_after` batches were drawn; with `lose_last` the
    last batch was drawn but the kill came before it was reported."""
    scheduler = CurriculumScheduler.resume(config, state_path)
    drawn = []
    for r in (0, 1):
        s = scheduler.state
        if s.round is not None and (r < s.round or (r == s.round and not s.round_open)):
            continue
        plan_ = scheduler.start_round(r, read_manifest(root, r).difficulties())
        sampler = TripletSampler(root, r, batch_size=8, seed=5, state=scheduler.sampler_state)
        while scheduler.state.round_steps < STEPS:
            batch = sampler.draw(plan_)
            drawn.append(batch)
            if stop_after is not None and len(drawn) == stop_after and lose_last:
                return drawn[:-1]
            plan_ = scheduler.after_batch(sampler.state_dict())
            if stop_after is not None and len(drawn) == stop_after:
                return drawn
        scheduler.end_round(dev_metric=[0.5, 0.4][r], train_accuracy=0.9)
    return drawn


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(CONFIGS)), stop=st.integers(1, 2 * STEPS - 1), lose_last=st.booleans())
def test_a_resumed_run_draws_the_same_batches(two_rounds, tmp_path_factory, name, stop, lose_last):
    config = parse_config(CONFIGS[name])
    base = tmp_path_factory.mktemp("resume")
    full = run(two_rounds, base / "full.json", config)
    assert len(full) == 2 * STEPS
    assert {b for batch in full for b in batch["band"]} >= {"in_domain"}  # the schedule really moved
    head = run(two_rounds, base / "cut.json", config, stop_after=stop, lose_last=lose_last)
    tail = run(two_rounds, base / "cut.json", config)
    assert head + tail == full


def test_sampler_position_of_another_round_is_refused(two_rounds):
    state = TripletSampler(two_rounds, 0, batch_size=8, seed=5).state_dict()
    with pytest.raises(StateError, match="round is 0 but this sampler has 1"):
        TripletSampler(two_rounds, 1, batch_size=8, seed=5, state=state)
    with pytest.raises(StateError, match="seed is 5 but this sampler has 6"):
        TripletSampler(two_rounds, 0, batch_size=8, seed=6, state=state)


# ---------------------------------------------------------------- bad input
def test_only_rounds_with_a_manifest_are_read(tmp_path):
    make_round(tmp_path, 0, rows=20)
    make_round(tmp_path, 1, rows=20)
    (tmp_path / "round=1" / "manifest.json").unlink()  # mining was killed before finishing round 1
    assert complete_rounds(tmp_path) == [0]
    with pytest.raises(TripletDataError, match=r"round=1/manifest\.json: no manifest, so round 1 is not complete"):
        TripletSampler(tmp_path, 1, batch_size=4)


def test_row_count_checksum_and_column_errors_name_the_file(tmp_path):
    make_round(tmp_path, 0, rows=20, rows_per_file=10)
    manifest_path = tmp_path / "round=0" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    part = tmp_path / "round=0" / manifest["files"][0]["path"]

    manifest["files"][0]["rows"] = 11
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TripletDataError, match=rf"{part.name}: has 10 rows, manifest says 11"):
        TripletSampler(tmp_path, 0, batch_size=4)

    manifest["files"][0]["rows"] = 10
    manifest["bands"]["random"]["rows"] = 21
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TripletDataError, match=r"bands\.random\.rows is 21 but its files hold 20 rows"):
        TripletSampler(tmp_path, 0, batch_size=4)
    manifest["bands"]["random"]["rows"] = 20
    manifest_path.write_text(json.dumps(manifest))

    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["negative"]), part)
    with pytest.raises(TripletDataError, match=rf"{part.name}: column 'negative' is missing"):
        TripletSampler(tmp_path, 0, batch_size=4)
    pq.write_table(table.set_column(1, "anchor", pa.array([None] * 10, type=pa.string())), part)
    with pytest.raises(TripletDataError, match=rf"{part.name}: sha256 differs"):
        TripletSampler(tmp_path, 0, batch_size=4, verify_checksums=True)
    with pytest.raises(TripletDataError, match=rf"{part.name}: column 'anchor' has 10 null values"):
        TripletSampler(tmp_path, 0, batch_size=4)
