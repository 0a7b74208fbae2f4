"""docs/sentence_transformers.md stays true: its trainer example runs as written (on a tiny model), the trainer
trains exactly the batches the curriculum's own loop draws, and the limits it names are refused in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curriculum import CurriculumFeed, CurriculumScheduler, CurriculumState, TripletSampler, parse_config
from curriculum.errors import StateError
from curriculum.synthetic import band_table, write_round
from dataio.triplets import read_manifest
from mining.testing import toy_sentences

DOC = Path(__file__).resolve().parents[1] / "docs" / "sentence_transformers.md"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread."""


def _block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return next(b for b in blocks if containing in b)


def _record_collated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, list[str]]]:
    """Every batch the trainer collates (the rows it trains on), as columns."""
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    seen: list[dict[str, list[str]]] = []
    collate = SentenceTransformerDataCollator.__call__

    def recording(self, features):
        seen.append({c: [f[c] for f in features] for c in ("anchor", "positive", "negative")})
        return collate(self, features)

    monkeypatch.setattr(SentenceTransformerDataCollator, "__call__", recording)
    return seen


def _reference(triplets: Path, config, rounds: int, steps: int, batch_size: int, seed: int):
    """The batches docs/curriculum.md's loop draws on the same rounds, and its scheduler's state after them."""
    scheduler = CurriculumScheduler(parse_config(config).resolved(rounds, steps, seed))
    batches = []
    for r in range(rounds):
        plan = scheduler.start_round(r, read_manifest(triplets, r).difficulties())
        sampler = TripletSampler(triplets, r, batch_size=batch_size, seed=seed)
        for _ in range(steps):
            batch = sampler.draw(plan)
            batches.append({c: batch[c] for c in ("anchor", "positive", "negative")})
            plan = scheduler.after_batch(sampler.state_dict())
        scheduler.end_round()
    return batches, scheduler.state


def test_the_trainer_example_runs_and_trains_the_curriculums_batches(tiny, tmp_path, monkeypatch):
    sentences = toy_sentences(160, seed=1)
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{sentences[i]}\t{sentences[i + 1]}\t{i % 5}\n" for i in range(12)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    seen = _record_collated(monkeypatch)
    code = _block("CurriculumFeed(")
    code, n = re.subn(r'^BASE_MODEL = "[^"]*"', f"BASE_MODEL = {tiny!r}", code, flags=re.MULTILINE)
    assert n == 1, "the example names its model on one BASE_MODEL line"
    namespace: dict = {"print": lambda *a, **k: None}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation

    run = tmp_path / "runs" / "st-curriculum"
    feed = namespace["feed"]
    assert (run / "model" / "modules.json").is_file()
    # Each round was mined before it trained, rounds 1 and 2 with the model as trained so far.
    fingerprints = [read_manifest(run / "triplets", r).model_fingerprint for r in range(3)]
    assert len(set(fingerprints)) == 3, fingerprints
    # The trainer trained exactly the batches the curriculum's own loop draws, in order.
    expected, state = _reference(run / "triplets", {"pacing": "root", "unit": "step"}, 3, 5, 16, 0)
    assert seen == expected
    saved = CurriculumState.load(run / "state.json")
    assert (saved.step, saved.stage, saved.competence, saved.round, saved.round_open) == \
        (state.step, state.stage, state.competence, 2, False) == (15, 14, 1.0, 2, False)
    def moves(history):
        return [(h.event, h.step, h.mixture) for h in history]

    assert moves(saved.history) == moves(state.history)
    # Each batch's bands follow its step's plan (a band outside the mixture only where the anchor has no row in
    # any band of it), and the plan moved from easy to hard over the run.
    assert len(feed.drawn) == 15
    for batch in feed.drawn:
        outside = sum(n for band, n in batch.bands.items() if batch.mixture.get(band, 0) <= 0)
        assert outside <= batch.fallbacks, batch
        assert sum(batch.bands.values()) == 16
    first, last = feed.drawn[0].mixture, feed.drawn[-1].mixture
    assert max(first.values()) >= 0.9 and sum(p > 0 for p in first.values()) <= 2, "c0: the easiest band (+ floor)"
    assert len(last) >= 3 and all(p > 0 for p in last.values()), "competence 1: every band"
    assert len(feed.decisions) == 3
    rounds = [h for h in saved.history if h.event == "end_round"]
    assert len(rounds) == 3 and all(h.dev_metric is not None and 0 <= h.train_accuracy <= 1 for h in rounds)


def _toy_round(root: Path, r: int) -> None:
    texts = [f"sentence {i}" for i in range(60)]
    anchors = texts[:20]
    write_round(root, r, {band: band_table(anchors, [None] * 20, texts[20 + 20 * k:40 + 20 * k], [0.1 + 0.3 * k] * 20)
                          for k, band in enumerate(["random", "nearest_neighbour"])})


@pytest.mark.parametrize("setting, says", [
    ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps=2"),
    ({"per_device_train_batch_size": 8}, "per_device_train_batch_size=4"),
    ({"max_steps": 7}, "max_steps=feed.max_steps"),
])
def test_settings_the_feed_cannot_follow_are_refused_in_one_line(tiny, tmp_path, setting, says):
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from simcse.st_trainer import CurriculumCallback

    _toy_round(tmp_path / "triplets", 0)
    feed = CurriculumFeed(tmp_path / "triplets", {}, rounds=1, steps_per_round=2, batch_size=4)
    options = {"output_dir": str(tmp_path / "st"), "max_steps": feed.max_steps, "per_device_train_batch_size": 4,
               "save_strategy": "no", "report_to": "none", "use_cpu": True, "dataloader_num_workers": 0,
               "disable_tqdm": True, **setting}
    model = SentenceTransformer(tiny, device="cpu")
    trainer = SentenceTransformerTrainer(model=model, args=SentenceTransformerTrainingArguments(**options),
                                         train_dataset=feed.dataset(), loss=MultipleNegativesRankingLoss(model),
                                         callbacks=[CurriculumCallback(feed)])
    with pytest.raises(ValueError, match=re.escape(says)) as caught:
        trainer.train()
    assert "\n" not in str(caught.value) and feed.scheduler.state.round is None, "nothing was started"


def test_a_state_stopped_mid_round_is_refused_and_a_finished_one_continues(tmp_path):
    for r in (0, 1):
        _toy_round(tmp_path / "triplets", r)
    state = tmp_path / "state.json"
    feed = CurriculumFeed(tmp_path / "triplets", {}, rounds=2, steps_per_round=3, batch_size=4, state_path=state)
    assert feed.max_steps == 6
    feed.prepare()
    rows = list(feed.dataset())
    assert len(rows) == 12 and list(rows[0]) == ["anchor", "positive", "negative"]
    feed.step_trained()
    again = CurriculumFeed(tmp_path / "triplets", {}, rounds=2, steps_per_round=3, batch_size=4, state_path=state)
    with pytest.raises(StateError, match="round 0 stopped after 1 of its steps"):
        again.prepare()
    for _ in range(2):
        feed.step_trained()
    feed.round_trained()  # closes round 0, opens round 1
    assert len(list(feed.dataset())) == 12
    for _ in range(3):
        feed.step_trained()
    feed.round_trained()
    later = CurriculumFeed(tmp_path / "triplets", {}, rounds=2, steps_per_round=3, batch_size=4, state_path=state)
    assert later.next_round is None and later.max_steps == 0
    with pytest.raises(StateError, match="every one of the 2 rounds is done"):
        later.prepare()
