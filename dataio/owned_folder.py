"""Own exactly what you created: make an output folder, and on failure take back only what this command made.

`mine --out` and `run` write into a folder the user names, creating it and any missing parents. A command that
fails before it has output to keep removes what it made, so a corrected rerun starts cleanly. But a new parent
is shared at once: a sweep `mine --out exp/seed0 ... exp/seed4` into a new `exp/` has one command create `exp/`
while the others write beside it, and removing `exp/` with its contents on one command's failure deleted the
finished siblings' triplets and a live run's `config.yaml`, lock and Prefect database. So:

- `make_folder(path)` creates `path` and its missing parents one level at a time, recording which levels this
  call made (a level another process made first is not recorded, so not ours to remove).
- `OwnedFolder.remove()` removes `path` with its contents only when this command created `path` itself, then
  `rmdir`s each parent it created, innermost first, stopping at the first that is not empty: someone else's
  output beside ours keeps the parent, and nothing outside `path` is ever removed with its contents.
- `OwnedFolder.remove_empty()` does the same without touching contents: `rmdir` of `path` (if created) and the
  created parents while empty, for a command refused at the door, whose folder another command may hold now.

What a rerun can reuse is the caller's to keep: `mine` keeps its folder on ^C (its `.cache/` embeddings are
reused by the next `mine` into it), and `run` removes nothing once the run has output. Stdlib only.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OwnedFolder:
    """A folder a command writes into, and the folders (itself and parents, innermost first) it created."""

    path: Path
    created: tuple[Path, ...] = ()

    @property
    def made_itself(self) -> bool:
        """True when this command created `path` (so its contents are this command's)."""
        return bool(self.created) and self.created[0] == self.path

    def remove(self) -> None:
        """Remove `path` with its contents if this command created it, then the parents it created while empty."""
        if self.made_itself:
            shutil.rmtree(self.path, ignore_errors=True)
        self._rmdir_created()

    def remove_empty(self) -> None:
        """`rmdir` `path` (when created here) and each created parent, innermost first, while they are empty."""
        self._rmdir_created()

    def _rmdir_created(self) -> None:
        for folder in self.created:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue  # already gone (removed above, or by the user)
            except OSError:
                return  # not empty: someone else's files are in it, so it and every folder above it stay


def make_folder(path: str | os.PathLike) -> OwnedFolder:
    """Create `path` and its missing parents; an OwnedFolder naming the ones this call created.

    An existing folder is fine (nothing created). FileExistsError when `path` exists and is not a folder; other
    OSErrors (a forbidden parent) propagate after the levels made so far are removed again.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    created: list[Path] = []
    try:
        for folder in reversed(missing):  # outermost first
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # another process made it a moment ago: not ours
            created.append(folder)
    except BaseException:
        OwnedFolder(path, tuple(reversed(created))).remove_empty()
        raise
    if not missing and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    return OwnedFolder(path, tuple(reversed(created)))
