"""The training loop: learns, keeps the best model, checkpoints atomically, resumes to identical weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dataio.errors import InputError
from simcse.batching import BucketedBatches, triplet_batches, unsupervised_batches
from simcse.model import SimCSEEncoder
from simcse.train import TrainConfig, train

WORDS = [
    "cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "mouse", "lion", "tiger", "bear", "wolf", "fox",
    "deer", "frog", "snake", "eagle", "owl", "shark", "whale", "seal", "crab", "ant", "bee",
]


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + f" {i}" for i in range(n)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread: two threads fighting other load were ~3x slower per step."""


def _encoder(path: str, pooling: str = "cls") -> SimCSEEncoder:
    torch.manual_seed(0)
    return SimCSEEncoder.from_pretrained(path, device="cpu", max_length=16, pooling=pooling)


def _triplets(n: int = 48) -> BucketedBatches:
    s = _sentences(3 * n, seed=1)
    return triplet_batches(s[:n], s[n:2 * n], s[2 * n:], 8, seed=0)


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=5e-4, max_steps=12, save_every=4, eval_every=0, log_every=2, progress=False, warmup_ratio=0.25)
    base.update(kw)
    return TrainConfig(**base)


class _Crashing:
    """The same batches, but the data source dies after `after` batches (a simulated crash)."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after = inner, after

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for i, batch in enumerate(self.inner):
            if i == self.after:
                raise KeyboardInterrupt("simulated crash")
            yield batch


def test_resume_after_a_crash_reaches_the_same_weights(tiny, tmp_path):
    batches = _triplets()  # 6 batches an epoch, 12 steps = 2 epochs (reshuffled)
    full = _encoder(tiny)
    r_full = train(full, batches, _cfg(), tmp_path / "full")
    crashed = _encoder(tiny)
    with pytest.raises(KeyboardInterrupt):
        train(crashed, _Crashing(batches, after=3), _cfg(), tmp_path / "run")  # dies in epoch 0, after step 3
    assert not (tmp_path / "run" / "checkpoint").exists()  # no checkpoint before step 4 ...
    with pytest.raises(KeyboardInterrupt):
        train(_encoder(tiny), _Crashing(batches, after=5), _cfg(), tmp_path / "run")  # ... now one at step 4
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 4
    resumed = _encoder(tiny)
    r = train(resumed, batches, _cfg(), tmp_path / "run")
    assert r.resumed_from == 4 and r.steps == r_full.steps == 12
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert resumed.fingerprint() == full.fingerprint()
    # the finished run is not trained again
    again = train(_encoder(tiny), batches, _cfg(), tmp_path / "run")
    assert again.resumed_from == 12 and again.steps == 12


def test_crash_before_the_first_checkpoint_restarts_from_scratch(tiny, tmp_path):
    batches = _triplets()
    with pytest.raises(KeyboardInterrupt):
        train(_encoder(tiny), _Crashing(batches, after=2), _cfg(), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint").exists()
    r = train(_encoder(tiny), batches, _cfg(max_steps=4), tmp_path / "run")
    assert r.resumed_from == 0 and r.steps == 4


def test_checkpoint_is_safetensors_plus_weights_only_state(tiny, tmp_path):
    train(_encoder(tiny), _triplets(), _cfg(max_steps=4), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint"
    assert (ckpt / "model.safetensors").exists()
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(ckpt / name, weights_only=True)
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")], "temporary folders left"


def test_final_checkpoint_off_keeps_the_model_only(tiny, tmp_path):
    """Callers that keep only the model (the flows' rounds) skip the end checkpoint and its optimizer state."""
    on = train(_encoder(tiny), _triplets(), _cfg(max_steps=4, save_every=0), tmp_path / "on")
    off = train(_encoder(tiny), _triplets(), _cfg(max_steps=4, save_every=0, final_checkpoint=False),
                tmp_path / "off")
    assert (tmp_path / "on" / "checkpoint").is_dir()
    assert not (tmp_path / "off" / "checkpoint").exists()
    assert SimCSEEncoder.from_pretrained(off.model_path).fingerprint() == \
        SimCSEEncoder.from_pretrained(on.model_path).fingerprint()


def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    batches = _triplets()
    with pytest.raises(KeyboardInterrupt):
        train(_encoder(tiny), _Crashing(batches, after=5), _cfg(), tmp_path / "run")
    with pytest.raises(InputError, match="lr=0.0005.*lr=0.001"):
        train(_encoder(tiny), batches, _cfg(lr=1e-3), tmp_path / "run")


def test_supervised_training_learns_and_saves_a_sentence_transformer(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    s = _sentences(16, seed=2)
    # positives share the anchor's words, negatives do not: a learnable task
    batch = {"anchor": s, "positive": [x.rsplit(" ", 1)[0] + " again" for x in s],
             "negative": [_sentences(1, seed=100 + i)[0] for i in range(16)]}
    enc = _encoder(tiny, pooling="mean")  # a random tiny BERT's [CLS] is near-constant: mean pooling learns
    r = train(enc, [batch] * 30, _cfg(lr=1e-3, max_steps=30, save_every=0, log_every=5), tmp_path / "run")
    assert r.history[-1]["loss"] < 0.6 * r.history[0]["loss"]
    assert r.train_accuracy is not None and r.train_accuracy > r.history[0]["accuracy"]
    assert r.triplets_per_s and r.triplets_per_s > 0
    model = SentenceTransformer(r.model_path, device="cpu")
    np.testing.assert_allclose(model.encode(s[:4], normalize_embeddings=True), enc.encode(s[:4]), atol=1e-5)
    saved = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert saved["steps"] == 30 and saved["model_path"] == r.model_path


@pytest.mark.parametrize("pack", [True, False])
def test_unsupervised_batches_train_with_two_dropout_views(tiny, tmp_path, pack):
    batches = unsupervised_batches(_sentences(40), 8, seed=0)
    enc = _encoder(tiny)
    before = enc.fingerprint()
    r = train(enc, batches, _cfg(max_steps=5, save_every=0, log_every=1, pack=pack), tmp_path / "run")
    assert r.steps == 5 and enc.fingerprint() != before
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in r.history)


def test_k_negatives_alpha_and_negatives_without_positives(tiny, tmp_path):
    s = _sentences(24, seed=3)
    batch = {"anchor": s[:8], "positive": s[8:16], "negative": [[s[16 + i], s[(17 + i) % 8 + 16]] for i in range(8)],
             "alpha": [[1.0, 0.0]] * 8}
    r = train(_encoder(tiny), [batch] * 2, _cfg(max_steps=2, save_every=0, log_every=1), tmp_path / "a")
    assert r.steps == 2 and np.isfinite(r.history[-1]["loss"])
    unsup_hard = {"anchor": s[:8], "negative": s[8:16]}  # positive = a second dropout view of the anchor
    r = train(_encoder(tiny), [unsup_hard] * 2, _cfg(max_steps=2, save_every=0, log_every=1), tmp_path / "b")
    assert r.steps == 2
    ragged = {"anchor": s[:2], "positive": s[2:4], "negative": [[s[4]], [s[5], s[6]]]}
    with pytest.raises(ValueError, match="same number"):
        train(_encoder(tiny), [ragged], _cfg(max_steps=1, save_every=0), tmp_path / "c")


class _Scripted:
    """An evaluator in sentence-transformers' form whose primary metric follows a script, one value a call."""

    def __init__(self, values: list[float], primary_metric: str = "sts/dev", greater_is_better: bool = True) -> None:
        self.values, self.seen = iter(values), {}
        self.primary_metric, self.greater_is_better = primary_metric, greater_is_better

    def __call__(self, encoder: SimCSEEncoder) -> dict:
        value = next(self.values)
        self.seen[value] = encoder.fingerprint()
        return {"sts": {"dev": value, "other": -value}, "pairs": {}, "alignment": None, "uniformity": None}


def test_evaluation_keeps_the_best_model(tiny, tmp_path):
    evaluator = _Scripted([1.0, 3.0, 2.0, 0.5])
    enc = _encoder(tiny)
    r = train(enc, _triplets(), _cfg(max_steps=8, eval_every=2, save_every=0), tmp_path / "run", evaluator=evaluator)
    assert [e["step"] for e in r.evaluations] == [2, 4, 6, 8]
    assert [e["metric"] for e in r.evaluations] == [1.0, 3.0, 2.0, 0.5]
    assert r.best_step == 4 and r.best_metric == 3.0 and r.best_model_path.endswith("best")
    best = SimCSEEncoder.from_pretrained(r.best_path, device="cpu", max_length=16)
    assert best.fingerprint() == evaluator.seen[3.0] != enc.fingerprint()
    assert json.loads((Path(r.best_path) / "simcse_card.json").read_text())["dev_metric"]["name"] == "sts/dev"


def test_the_best_model_follows_the_evaluators_primary_metric_and_direction(tiny, tmp_path):
    """The score is the evaluator's `primary_metric`; `greater_is_better=False` keeps the lowest."""
    cases = (("sts/other", True, 6, -0.5), ("sts/dev", False, 6, 0.5), ("sts_mean", True, 2, 0.0))
    for i, (primary, greater, step, metric) in enumerate(cases):
        evaluator = _Scripted([1.0, 3.0, 0.5, 2.0], primary, greater)
        r = train(_encoder(tiny), _triplets(), _cfg(max_steps=8, eval_every=2, save_every=0), tmp_path / str(i),
                  evaluator=evaluator)
        assert (r.best_step, r.best_metric) == (step, metric), primary


def test_epochs_without_max_steps_and_empty_data(tiny, tmp_path):
    batches = _triplets()
    r = train(_encoder(tiny), batches, _cfg(max_steps=None, epochs=2, save_every=0), tmp_path / "run")
    assert r.steps == 2 * len(batches)
    with pytest.raises(InputError, match="no batches"):
        train(_encoder(tiny), [], _cfg(max_steps=None, save_every=0), tmp_path / "empty")


def test_config_rejects_unknown_and_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(learning_rate=1e-5)
    with pytest.raises(ValidationError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValidationError, match="lr"):
        TrainConfig(lr=0)


def test_false_negative_mask_marks_repeats_of_a_rows_own_sentence():
    from simcse.batch_prep import false_negative_mask

    assert false_negative_mask(["a", "b"], ["p", "q"], [["x"], ["y"]]) is None
    mask = false_negative_mask(["a", "b", "c"], ["p", "q", "c"], [["q"], ["x"], ["a"]])
    # columns: positives p q c, then negatives q (row 0), x (row 1), a (row 2)
    assert mask.shape == (3, 6)
    assert mask.nonzero().tolist() == [[0, 5], [1, 3]]  # row 0's anchor a; row 1's positive q
    assert not mask.diagonal().any()


def test_a_run_trained_in_two_calls_follows_one_schedule_and_keeps_its_optimizer(tmp_path):
    """Rounds share one learning-rate curve and one optimizer: two calls of 6 steps (the second continuing
    the first's optimizer at offset 6) give the rates and, without dropout, the weights of one 12-step call."""
    from simcse.testing import build_tiny_model
    from simcse.train import OPTIMIZER

    model = build_tiny_model(tmp_path / "nodrop", dropout=0.0)
    batches = _triplets()
    one = _encoder(str(model))
    whole = train(one, batches, _cfg(log_every=1, save_every=0), tmp_path / "whole")
    first_half = _encoder(str(model))
    part = dict(log_every=1, save_every=0, max_steps=6, schedule_steps=12, save_optimizer=True)
    batches.set_epoch(0)
    r1 = train(first_half, [batches[i] for i in range(6)], _cfg(**part), tmp_path / "r0")
    assert (tmp_path / "r0" / OPTIMIZER / "optimizer.pt").is_file()
    second = SimCSEEncoder.from_pretrained(r1.model_path, device="cpu", max_length=16, pooling="cls")
    batches.set_epoch(1)
    rest = [batches[i] for i in range(len(batches))]
    r2 = train(second, rest, _cfg(**{**part, "schedule_offset": 6}), tmp_path / "r1",
               optimizer_state=tmp_path / "r0" / OPTIMIZER)
    lrs = [h["lr"] for h in r1.history + r2.history]
    assert lrs == pytest.approx([h["lr"] for h in whole.history], rel=1e-12)
    assert max(lrs) == pytest.approx(5e-4) and lrs[-1] == 0.0 and lrs[5] > 0
    for name, value in one.state_dict().items():
        assert torch.allclose(value, second.state_dict()[name], atol=1e-6), name
    restarted = SimCSEEncoder.from_pretrained(r1.model_path, device="cpu", max_length=16, pooling="cls")
    r3 = train(restarted, rest, _cfg(**{**part, "schedule_offset": 6}), tmp_path / "fresh")  # a new optimizer
    assert any(not torch.allclose(v, restarted.state_dict()[k], atol=1e-6) for k, v in one.state_dict().items())
    assert r3.history[0]["lr"] == r2.history[0]["lr"]
    with pytest.raises(ValueError, match="exceeds schedule_steps"):
        train(_encoder(str(model)), rest, _cfg(**{**part, "schedule_offset": 8}), tmp_path / "over")


def test_k_negatives_from_the_sampler_reach_the_loss_with_their_alpha(tiny, tmp_path, monkeypatch):
    """The curriculum sampler's k negatives per anchor (each band's alpha, alpha 0 for padding) arrive in the loss
    as a [batch, k] alpha beside [batch, k, dim] negatives, row for row."""
    import simcse.train as trainer
    from curriculum import TripletSampler
    from curriculum.state import Plan
    from curriculum.synthetic import band_table, write_round

    s = _sentences(60, seed=4)
    anchors, negs = s[:12], s[12:]
    tables = {band: band_table(anchors[:n], [None] * n, negs[k * 12:k * 12 + n], [0.1 + 0.2 * k] * n)
              for k, (band, n) in enumerate((("random", 12), ("in_domain", 12), ("nearest_neighbour", 6)))}
    write_round(tmp_path / "triplets", 0, tables)
    alpha = {"random": 1.0, "in_domain": 0.7, "nearest_neighbour": 0.4}
    plan = Plan(round=0, stage=0, competence=1.0, mixture={"in_domain": 0.5, "nearest_neighbour": 0.5}, alpha=alpha)
    batch = TripletSampler(tmp_path / "triplets", 0, batch_size=6, seed=1, negatives_per_anchor=2).draw(plan)
    seen = {}
    real = trainer.sup_simcse_loss

    def spy(anchor, positive, negatives, alpha_, temperature, exclude=None):
        seen.update(k=negatives.shape[1], alpha=alpha_.tolist(), rows=anchor.shape[0])
        return real(anchor, positive, negatives, alpha_, temperature, exclude)

    monkeypatch.setattr(trainer, "sup_simcse_loss", spy)
    trainer.train(_encoder(tiny), [batch], _cfg(max_steps=1, save_every=0, log_every=1), tmp_path / "run")
    assert seen["k"] == 2 and seen["rows"] == 6
    assert np.allclose(seen["alpha"], batch["alpha"])
    for weights, bands in zip(batch["alpha"], batch["band"]):  # a band's alpha, or 0 for a padding column
        assert weights == pytest.approx([alpha.get(b, 0.0) for b in bands])
    assert any("none" in bands for bands in batch["band"])  # anchors without a nearest neighbour row are padded


# ------------------------------------------------------------------------------------------- distillation
def _table(texts: list[str], dim: int = 8, seed: int = 0):
    from simcse.distill import TeacherTable

    vectors = np.random.default_rng(seed).standard_normal((len(texts), dim)).astype(np.float32)
    return TeacherTable(texts, vectors)


def test_teacher_sims_follow_the_losss_candidate_order_and_views_take_their_anchors_vector():
    from simcse.distill import batch_teacher_sims

    s = _sentences(9, seed=5)
    table = _table(s)
    unit = table.lookup(s)
    anchors, positives, negatives = s[:3], ["a view of " + s[0], s[4], s[5]], [[s[6], s[7]], [s[8], s[6]], [s[7], s[8]]]
    sims = batch_teacher_sims(table, anchors, positives, negatives).numpy()
    assert sims.shape == (3, 3 + 6)
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-6), "a positive the teacher never saw is its anchor's view"
    assert sims[1, 2] == pytest.approx(float(unit[1] @ unit[5]), abs=1e-6)
    assert sims[2, 3 + 1 * 2 + 0] == pytest.approx(float(unit[2] @ unit[8]), abs=1e-6)  # row 1's first negative
    assert batch_teacher_sims(table, anchors, None, None).shape == (3, 3)
    with pytest.raises(KeyError, match="no embedding"):
        batch_teacher_sims(table, anchors, positives, [["never seen", s[6]]] * 3)


def test_the_distillation_terms_are_added_with_their_weights(tiny, tmp_path, monkeypatch):
    """The step's loss is the contrastive loss plus distill_kl x KL plus distill_margin_mse x MarginMSE, each on
    the batch's own embeddings and the teacher's cosines (checked by recomputing them from the spied inputs)."""
    import simcse.train as trainer
    from simcse.losses import distill_kl_loss, margin_mse_loss, sup_simcse_loss

    s = _sentences(32, seed=6)
    batch = {"anchor": s[:8], "positive": s[8:16], "negative": s[16:24]}
    seen = {}
    real = trainer._distillation

    def spy(item, emb, config, device):
        out = real(item, emb, config, device)
        seen.update(item=item, emb=emb.detach().clone(), total=out.detach())
        return out

    monkeypatch.setattr(trainer, "_distillation", spy)
    cfg = _cfg(max_steps=1, save_every=0, log_every=1, distill_kl=0.5, distill_margin_mse=2.0, distill_temperature=0.1)
    r = train(_encoder(tiny), [batch], cfg, tmp_path / "run", teacher=_table(s))
    emb, item = seen["emb"], seen["item"]
    t = item.teacher_sims
    kl = distill_kl_loss(emb[:8], emb[8:], t, cfg.temperature, 0.1)
    own = torch.arange(8)
    margin = t[own, own] - t[:, 8:][own, own]
    mse = margin_mse_loss(emb[:8], emb[8:16], emb[16:].view(8, 1, -1), margin[:, None])
    assert float(seen["total"]) == pytest.approx(float(0.5 * kl + 2.0 * mse), rel=1e-5)
    contrastive = sup_simcse_loss(emb[:8], emb[8:16], emb[16:].view(8, 1, -1), 1.0, cfg.temperature)[0]
    assert r.history[0]["loss"] == pytest.approx(float(contrastive + 0.5 * kl + 2.0 * mse), rel=1e-4)


def test_the_distillation_gradient_reaches_the_weights_and_zero_weights_change_nothing(tiny, tmp_path):
    """From the same start and seed: a teacher with zero weights trains the same weights as no teacher; a
    distillation weight changes them (its gradient flows through the step)."""
    s = _sentences(48, seed=7)
    table = _table(s, seed=3)
    batches = unsupervised_batches(s, 16, seed=0)

    def weights_after(**kw) -> str:
        enc = _encoder(tiny)
        teacher = kw.pop("teacher", None)
        train(enc, batches, _cfg(max_steps=2, save_every=0, **kw), tmp_path / f"run{len(list(tmp_path.iterdir()))}",
              teacher=teacher)
        return enc.fingerprint()

    plain = weights_after()
    assert weights_after(teacher=table) == plain
    assert weights_after(teacher=table, distill_kl=1.0) != plain


def test_distillation_without_a_teacher_is_one_line(tiny, tmp_path):
    with pytest.raises(InputError, match="need a teacher"):
        train(_encoder(tiny), [{"anchor": _sentences(8)}], _cfg(max_steps=1, distill_kl=1.0), tmp_path / "run")


def test_a_batch_larger_than_the_configs_batch_size_is_refused(tiny, tmp_path):
    """`TrainConfig.batch_size` is what the model card reports as trained: batches built larger are an error, named
    with both sizes, before a step is taken; smaller ones (an epoch's last batch) train."""
    with pytest.raises(ValueError, match=r"batch 0 of epoch 0 has 8 rows, more than TrainConfig\.batch_size \(4\)"):
        train(_encoder(tiny), _triplets(16), _cfg(batch_size=4, max_steps=2), tmp_path / "big")
    assert not (tmp_path / "big" / "model").exists()
    r = train(_encoder(tiny), _triplets(16), _cfg(batch_size=16, max_steps=2, save_every=0), tmp_path / "small")
    assert r.steps == 2
