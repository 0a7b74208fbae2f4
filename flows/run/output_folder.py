"""The output folder of `run` and `demo`: only a run folder is written, by one command at a time, and a
command that fails before the run has any output leaves nothing behind.

- **Ours or refused.** A folder is a run folder when it does not exist yet, is empty, or holds the
  `config.yaml` a run wrote (a mapping with `output_dir`, `rounds` and `steps_per_round`). Any other non-empty
  folder belongs to someone else and is refused before anything is written, so a mistyped `--output-dir`
  cannot overwrite a user's `report.md` or `plots/`.
- **One command per folder**: `dataio.folder_lock` (a second `run` on the folder is refused, naming the first,
  also while the first is starting and has written only its `run.log`: the lock is asked before the contents).
- **Nothing left by a refusal.** When the command fails (an exception, not a signal: a killed run resumes)
  and the folder holds no run output yet (no `triplets/`, `rounds/`, `base_metrics.json` or embeddings in
  `cache/`), what the command created is removed, and only that (`dataio.owned_folder`): the folder with its
  contents if this command made it, then each parent it made, innermost first, while empty (`rmdir`: a run
  that another command started beside it in the same new parent keeps its folder, lock and database); if
  the folder existed, only the entries this command added (`config.yaml`, `.prefect/`, `run.log`, `data/`).
  This happens at interpreter exit, after Prefect has stopped its ephemeral server (whose database lives in
  `.prefect/`), and the folder stays locked until then.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path
from types import TracebackType

from dataio.errors import InputError
from dataio.folder_lock import LOCK_NAME, check_free, lock_folder
from dataio.owned_folder import OwnedFolder, make_folder
from flows.run.config_yaml import read_yaml

RUN_CONFIG = "config.yaml"
RUN_CONFIG_KEYS = ("output_dir", "rounds", "steps_per_round")
# What a command leaves in a folder before the run proper (older versions left .prefect/ even when refused).
BOOKKEEPING = {".prefect", LOCK_NAME}
# A server registry's version, downloaded into the run folder before the run claims it (flows.registry.warm_start):
# ours.
DOWNLOADED_START = "start_model"
RUN_OUTPUT = ("triplets", "rounds", "base_metrics.json")


def is_run_config(path: Path) -> bool:
    try:
        data, _ = read_yaml(path)
    except (OSError, InputError):
        return False
    return isinstance(data, dict) and all(k in data for k in RUN_CONFIG_KEYS)


def check_run_folder(folder: str | Path) -> None:
    """InputError unless `folder` is new, empty (bookkeeping aside), or a run folder."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError("exists and is not a folder; choose another output_dir", path=folder)
    entries = sorted(p.name for p in folder.iterdir() if p.name not in BOOKKEEPING | {DOWNLOADED_START})
    if not entries or is_run_config(folder / RUN_CONFIG):
        return
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    config = f"; its {RUN_CONFIG} is not a run's" if RUN_CONFIG in entries else f" and no run's {RUN_CONFIG}"
    raise InputError(f"not empty and not a simcse-curriculum run folder (it holds {shown}{config}); choose a new "
                     f"or empty output_dir so nothing of yours is overwritten", path=folder)


def has_run_output(folder: Path) -> bool:
    if any((folder / name).exists() for name in RUN_OUTPUT):
        return True
    return any((folder / "cache").glob("emb-*"))


class OutputFolder:
    """`with OutputFolder(path, command):` check, create, lock; on failure remove what was added (see above)."""

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder = Path(folder).resolve()
        self.command = command
        self.owned = OwnedFolder(self.folder)  # which of the folder and its parents this command made
        self.before: set[str] = set()
        self._lock = None
        self._cleanup_pending = False

    def __enter__(self) -> Path:
        # In use first: a folder another command is starting in already holds its run.log, not yet its config.yaml,
        # and must be refused as that command's (named), not as a folder that is not a run.
        check_free(self.folder)
        check_run_folder(self.folder)
        try:
            self.owned = make_folder(self.folder)
        except FileExistsError:
            raise InputError("exists and is not a folder; choose another output_dir", path=self.folder) from None
        self.before = {p.name for p in self.folder.iterdir()}
        self._lock = lock_folder(self.folder, self.command)
        try:
            self._lock.__enter__()
        except BaseException:
            self._lock = None
            # Refused: another command holds the folder, and may have written in it since this one made it,
            # so only what this command made and is still empty goes.
            self.owned.remove_empty()
            raise
        atexit.register(self._at_exit)  # before Prefect registers its server's stop, so it runs after it
        return self.folder

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, Exception) and not has_run_output(self.folder):
            self._cleanup_pending = True  # at exit: Prefect's server may still hold a database in .prefect/
            return
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def _at_exit(self) -> None:
        try:
            if self._cleanup_pending and not has_run_output(self.folder):
                if self.owned.made_itself:  # the folder, then the parents this command made while empty
                    self.owned.remove()
                elif self.folder.is_dir():
                    for entry in self.folder.iterdir():
                        if entry.name not in self.before and entry.name != LOCK_NAME:
                            if entry.is_dir() and not entry.is_symlink():
                                shutil.rmtree(entry, ignore_errors=True)
                            else:
                                entry.unlink(missing_ok=True)
        finally:
            self._release()
