"""The one model-folder hash (dataio.hashing.model_folder_sha256): the value finished runs recorded stays the same,
and mining's cache key for an encoder known only by its folder, and Prefect's task-cache key for a model folder, are
that hash."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dataio.hashing import MODEL_CARD_FILES, model_folder_hashes, model_folder_sha256, sha256_file

# The hash of `model_folder` below as runs recorded it before the hash moved to dataio (flows.run.rundir's
# model_files_sha256 at fb58960): a round's metrics.json, warm_start.json and the registry's checks hold such
# values, so a change here would fail every resumed run.
RECORDED = "6176545dfd67a94891c8634cc0fdba88d6303d7f068c0bd2532eb9d22ce6f946"


def model_folder(folder: Path) -> Path:
    files = {
        "model.safetensors": b"\x00\x01weights" * 10,
        "config.json": b'{"hidden_size": 32}',
        "modules.json": b"[]",
        "vocab.txt": b"[PAD]\n[UNK]\n",
        "spiece.model": b"sentencepiece bytes",
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
        "a/b.json": b"{}",  # "a/b.json" sorts before "a.txt" part by part, after it as a string
        "a.txt": b"x",
        "README.md": b"# card",
        "simcse_card.json": b'{"round": 0}',
        "1_Pooling/README.md": b"card of a module",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_the_model_folder_hash_is_the_one_finished_rounds_recorded(tmp_path: Path) -> None:
    from flows.run.rundir import RunDir

    run = RunDir(tmp_path / "run")
    model_folder(run.model_dir(0))
    assert model_folder_sha256(run.model_dir(0)) == RECORDED
    assert run.model_sha256(0) == RECORDED


def test_mining_keys_a_folder_encoder_by_the_same_hash_every_file_but_the_card(tmp_path: Path) -> None:
    from mining.embeddings import model_fingerprint

    folder = model_folder(tmp_path / "model")
    encoder = SimpleNamespace(model_path=str(folder), encode=None)  # no fingerprint(), not a torch module
    assert model_fingerprint(encoder) == model_folder_sha256(folder) == RECORDED
    (folder / "simcse_card.json").write_bytes(b'{"round": 0, "metrics": {"sts/dev": 80.0}}')  # the card is rewritten
    (folder / "README.md").write_bytes(b"# card, with metrics")
    assert model_fingerprint(encoder) == RECORDED, "rewriting the model card must not miss the embeddings cache"
    (folder / "spiece.model").write_bytes(b"another tokenizer")  # any file the model reads counts
    changed = model_fingerprint(encoder)
    assert changed != RECORDED
    (folder / "tokenizer.py").write_text("# custom code\n")
    assert model_fingerprint(encoder) not in (RECORDED, changed)


def test_prefect_cache_keys_a_model_folder_by_the_same_hash_and_sees_every_change(tmp_path: Path) -> None:
    """flows.run.fingerprint.model_fingerprint (the key of the evaluate, mine and train task caches) is the same hash,
    shortened; it is memoised per folder listing, so a rewritten file is seen and a rewritten card is not."""
    import os

    from flows.run.fingerprint import model_fingerprint

    folder = model_folder(tmp_path / "model")
    assert model_fingerprint(folder) == RECORDED[:32]
    (folder / "README.md").write_bytes(b"# card, with metrics, rewritten after the round")
    assert model_fingerprint(folder) == RECORDED[:32]
    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"\x00\x02weights" * 10)  # the same size: the new mtime is what the memo notices
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert model_fingerprint(folder) == model_folder_sha256(folder)[:32] != RECORDED[:32]
    (folder / ".hidden_tokenizer_file").write_text("x")  # every file counts, as for the recorded hash
    assert model_fingerprint(folder) == model_folder_sha256(folder)[:32]
    assert model_fingerprint("org/hub-name") == "name:org/hub-name"


def test_a_folder_and_its_manifest_in_one_pass_give_the_recorded_hash_and_each_file_s_sha256(tmp_path: Path) -> None:
    """What the registry records with a version: the folder's hash (the one rounds and warm starts record) and a
    manifest naming each file (the card left out), so a check can say which file changed."""
    folder = model_folder(tmp_path / "model")
    digest, files = model_folder_hashes(folder)
    assert digest == RECORDED
    assert set(files) == {"model.safetensors", "config.json", "modules.json", "vocab.txt", "spiece.model",
                          "1_Pooling/config.json", "a/b.json", "a.txt"}
    assert files["1_Pooling/config.json"] == sha256_file(folder / "1_Pooling/config.json")


def test_the_card_files_left_out_are_the_ones_simcse_writes() -> None:
    from simcse.model_card import CARD_FILES

    assert set(MODEL_CARD_FILES) == set(CARD_FILES)
