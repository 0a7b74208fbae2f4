"""TripletSampler on small Parquet rounds written in the mining contract: paired anchors, uniqueness,
determinism, mixture, k negatives, exact resume, and clear errors for incomplete or damaged rounds."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum import (
    CurriculumScheduler,
    StateError,
    TripletSampler,
    parse_config,
)
from curriculum.state import Plan
from curriculum.synthetic import band_table, write_round
from dataio.errors import TripletDataError
from dataio.triplet_layout import manifest_path
from dataio.triplets import complete_rounds, read_manifest

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
        tables[band] = band_table(a, p, n, [0.1 + 0.2 * k + 0.01 * rng.random() for _ in a])
    write_round(root, round_, tables, rows_per_file=rows_per_file, empty_bands=empty)
    return {band: {(r["anchor"], r["positive"] or r["anchor"], r["negative"]) for r in t.to_pylist()}
            for band, t in tables.items()}


def make_mined_round(root, round_=0, *, anchors=200, pool=2000, seed=0, nli_share=0.5, bands=BANDS):
    """As mining writes a round: every anchor has a row in random, in_domain and nearest_neighbour, NLI rows
    (a share of the anchors) also in nli_contradiction; anchors are distinct, negatives from a larger pool."""
    rng = random.Random(seed)
    texts = [f"sentence {i} of the pool" for i in range(pool)]
    rows = [(texts[i], None if i % 3 == 0 else texts[anchors + i]) for i in range(anchors)]
    tables = {}
    for band in bands:
        a, p, n = [], [], []
        for i, (anchor, positive) in enumerate(rows):
            if band == "nli_contradiction" and i >= anchors * nli_share:
                continue
            a.append(anchor)
            p.append(positive)
            n.append(texts[2 * anchors + rng.randrange(pool - 2 * anchors)])
        tables[band] = band_table(a, p, n, [MINED_DIFFICULTY[band]] * len(a))
    write_round(root, round_, tables)
    return rows


MINED_DIFFICULTY = {"random": 0.05, "in_domain": 0.35, "nli_contradiction": 0.5, "nearest_neighbour": 0.7}


def plan(mixture, alpha=None):
    return Plan(round=0, stage=0, competence=1.0, mixture=mixture, alpha=alpha or {b: 1.0 for b in mixture})


UNIFORM = plan({b: 0.25 for b in BANDS}, {"random": 0.5, "in_domain": 1.0, "nli_contradiction": 1.5,
                                          "nearest_neighbour": 2.0})


@pytest.fixture(scope="module")
def round0(tmp_path_factory):
    root = tmp_path_factory.mktemp("triplets")
    rows = make_round(root, 0)
    return root, rows


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    root = tmp_path_factory.mktemp("mined")
    return root, make_mined_round(root)


def test_rows_stay_whole_and_anchors_and_positives_never_repeat(round0):
    root, rows = round0
    sampler = TripletSampler(root, 0, batch_size=16, seed=7)
    for _ in range(60):
        batch = sampler.draw(UNIFORM)
        assert set(batch) == {"anchor", "positive", "negative", "alpha", "band"}
        assert all(len(v) == 16 for v in batch.values())
        owners = Counter()
        for a, p, n, band, alpha in zip(batch["anchor"], batch["positive"], batch["negative"], batch["band"],
                                        batch["alpha"]):
            assert (a, p, n) in rows[band]  # a real row of that band, columns not mixed up
            assert alpha == UNIFORM.alpha[band]
            owners.update({a, p})  # a row's own anchor may be its positive (unsupervised)
        assert max(owners.values()) == 1, owners.most_common(3)


def test_two_mixtures_with_one_seed_see_the_same_anchors_and_positives(mined):
    """Paired sampling: arms differ only in their negatives (and in-batch drops the column)."""
    root, _ = mined
    hard = TripletSampler(root, 0, batch_size=16, seed=3)
    easy = TripletSampler(root, 0, batch_size=16, seed=3)
    other_seed = TripletSampler(root, 0, batch_size=16, seed=4)
    curriculum = [plan({"random": 1 - t / 40, "nearest_neighbour": t / 40}) for t in range(40)]
    a = [hard.draw(plan({"nli_contradiction": 0.5, "nearest_neighbour": 0.5})) for _ in range(40)]
    b = [easy.draw(p) for p in curriculum]
    c = [other_seed.draw(plan({"random": 1.0})) for _ in range(40)]
    assert [(x["anchor"], x["positive"]) for x in a] == [(x["anchor"], x["positive"]) for x in b]
    assert [x["negative"] for x in a] != [x["negative"] for x in b]
    assert [x["anchor"] for x in a] != [x["anchor"] for x in c]


def test_every_anchor_is_used_once_per_epoch(mined):
    root, rows = mined
    sampler = TripletSampler(root, 0, batch_size=16, seed=1)
    assert sampler.anchors == len(rows)
    per_epoch = len(rows) // 16
    for epoch in range(3):
        seen = Counter()
        for _ in range(per_epoch):
            batch = sampler.draw(plan({"in_domain": 1.0}))
            seen.update(zip(batch["anchor"], batch["positive"]))
        assert max(seen.values()) == 1 and len(seen) == per_epoch * 16, epoch


def test_same_seed_same_batches_other_seed_other_batches(round0):
    root, _ = round0
    first = [TripletSampler(root, 0, batch_size=8, seed=3).draw(UNIFORM) for _ in range(1)]
    a, b, c = (TripletSampler(root, 0, batch_size=8, seed=s) for s in (3, 3, 4))
    run_a = [a.draw(UNIFORM) for _ in range(20)]
    assert run_a == [b.draw(UNIFORM) for _ in range(20)]
    assert run_a != [c.draw(UNIFORM) for _ in range(20)]
    assert first[0] == run_a[0]


def test_draws_follow_the_mixture(mined):
    root, _ = mined
    sampler = TripletSampler(root, 0, batch_size=16, seed=11)
    counts = Counter()
    for _ in range(200):
        counts.update(sampler.draw(plan({"random": 0.75, "nearest_neighbour": 0.25, "in_domain": 0.0}))["band"])
    assert set(counts) == {"random", "nearest_neighbour"}
    assert counts["random"] / 3200 == pytest.approx(0.75, abs=0.03)
    assert sampler.fallbacks == 0


def test_an_anchor_without_the_mixtures_band_takes_the_closest_band(mined):
    """Half the anchors have no NLI contradiction: under a pure-NLI mixture they take the band of closest
    measured difficulty (in_domain, 0.15 from NLI's 0.5; nearest_neighbour is 0.2 from it)."""
    root, rows = mined
    sampler = TripletSampler(root, 0, batch_size=20, seed=2)
    bands = Counter()
    for _ in range(10):
        bands.update(sampler.draw(plan({"nli_contradiction": 1.0}))["band"])
    assert set(bands) == {"nli_contradiction", "in_domain"}
    assert sampler.fallbacks == bands["in_domain"] > 0
    assert sampler.state_dict()["fallbacks"] == sampler.fallbacks


def test_k_negatives_per_anchor_come_from_distinct_bands_with_their_alpha(mined):
    root, rows = mined
    alpha = {"random": 0.5, "in_domain": 1.0, "nli_contradiction": 1.5, "nearest_neighbour": 2.0}
    sampler = TripletSampler(root, 0, batch_size=12, seed=5, negatives_per_anchor=3)
    nli_anchors = {a for a, _ in rows[:len(rows) // 2]}
    padded = 0
    for _ in range(20):
        batch = sampler.draw(plan({"in_domain": 0.2, "nli_contradiction": 0.4, "nearest_neighbour": 0.4}, alpha))
        for a, negs, weights, bands in zip(batch["anchor"], batch["negative"], batch["alpha"], batch["band"]):
            assert len(negs) == len(weights) == len(bands) == 3
            real = [b for b in bands if b != "none"]
            assert len(set(real)) == len(real), "one negative per band"
            assert [w for w, b in zip(weights, bands) if b != "none"] == [alpha[b] for b in real]
            if a in nli_anchors:
                assert sorted(real) == ["in_domain", "nearest_neighbour", "nli_contradiction"]
            else:  # two bands only: the third column is padding the loss removes (alpha 0)
                assert bands[2] == "none" and weights[2] == 0.0 and negs[2] == a
                padded += 1
    assert padded > 0


def test_an_impossible_batch_is_an_error_not_a_duplicate(tmp_path):
    t = band_table(["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], [0.1, 0.1, 0.1])
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


def test_sampler_position_of_another_round_is_refused(two_rounds, tmp_path):
    state = TripletSampler(two_rounds, 0, batch_size=8, seed=5).state_dict()
    with pytest.raises(StateError, match="round is 0 but this sampler has 1"):
        TripletSampler(two_rounds, 1, batch_size=8, seed=5, state=state)
    with pytest.raises(StateError, match="seed is 5 but this sampler has 6"):
        TripletSampler(two_rounds, 0, batch_size=8, seed=6, state=state)
    make_round(tmp_path, 0, rows=100)  # the same round number, other anchors: re-mined
    with pytest.raises(StateError, match="re-mined after the position was saved"):
        TripletSampler(tmp_path, 0, batch_size=8, seed=5, state=state)


# ---------------------------------------------------------------- bad input
def test_only_rounds_with_a_manifest_are_read(tmp_path):
    make_round(tmp_path, 0, rows=20)
    make_round(tmp_path, 1, rows=20)
    manifest_path(tmp_path, 1).unlink()  # mining was killed before finishing round 1
    assert complete_rounds(tmp_path) == [0]
    expected = f"{manifest_path(tmp_path, 1)}: no manifest, so round 1 is not complete"
    with pytest.raises(TripletDataError, match=re.escape(expected)):
        TripletSampler(tmp_path, 1, batch_size=4)


def test_row_count_checksum_and_column_errors_name_the_file(tmp_path):
    make_round(tmp_path, 0, rows=20, rows_per_file=10)
    manifest_file = manifest_path(tmp_path, 0)
    manifest = json.loads(manifest_file.read_text())
    part = tmp_path / "round=0" / manifest["files"][0]["path"]

    manifest["files"][0]["rows"] = 11
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(TripletDataError, match=rf"{part.name}: has 10 rows, manifest says 11"):
        TripletSampler(tmp_path, 0, batch_size=4)

    manifest["files"][0]["rows"] = 10
    manifest["bands"]["random"]["rows"] = 21
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(TripletDataError, match=r"bands\.random\.rows is 21 but its files hold 20 rows"):
        TripletSampler(tmp_path, 0, batch_size=4)
    manifest["bands"]["random"]["rows"] = 20
    manifest_file.write_text(json.dumps(manifest))

    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["negative"]), part)
    with pytest.raises(TripletDataError, match=rf"{part.name}: column 'negative' is missing"):
        TripletSampler(tmp_path, 0, batch_size=4)
    pq.write_table(table.set_column(1, "anchor", pa.array([None] * 10, type=pa.string())), part)
    with pytest.raises(TripletDataError, match=rf"{part.name}: changed after mining \(its sha256 differs"):
        TripletSampler(tmp_path, 0, batch_size=4, verify_checksums=True)
    with pytest.raises(TripletDataError, match=rf"{part.name}: column 'anchor' has 10 null values"):
        TripletSampler(tmp_path, 0, batch_size=4)
