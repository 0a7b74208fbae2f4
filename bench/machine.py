"""What a benchmark or an experiment ran on, said the same way by every script in bench/: host, operating system,
CPU and cores, load, date (UTC), the commit of the code that ran, and, where the script uses torch, torch's
version, its threads and the accelerator.

`describe()` is the record (a mapping, for JSON files), `text()` its one line (printed output, markdown); `text`
also takes the plain strings that records written before this module hold, and returns them as they are.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bench import REPO

_GIT_ENV = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # asking never writes the checkout's index


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, env=_GIT_ENV, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def commit() -> str | None:
    """The checkout's commit (12 hex digits), with `+changes` when tracked files differ from it; None where the
    code is not a git checkout (a copied tree, as on a lent GPU host)."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if changed else "")


def describe(*, threads: int | None = None, torch: bool | None = None) -> dict[str, Any]:
    """This machine and run, now.

    threads: the torch threads to state when they are not this process's (the experiment's workers);
    torch: whether to state torch's version, threads and accelerator; by default when this process has imported
    torch already (a torch-free benchmark does not load it just to say so).
    """
    record: dict[str, Any] = {
        "host": platform.node() or "host", "os": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit()}
    if torch or (torch is None and "torch" in sys.modules):
        import torch as torch_module

        record["torch"] = torch_module.__version__
        record["threads"] = threads if threads is not None else torch_module.get_num_threads()
        cuda = torch_module.cuda.is_available()
        record["accelerator"] = torch_module.cuda.get_device_name(0) if cuda else None
    elif threads is not None:
        record["threads"] = threads
    return record


def text(record: Mapping[str, Any] | str | None = None) -> str:
    """One line for a record (default: `describe()` now), e.g.
    `vm | x86_64, 2 cores | torch 2.13.0+cpu, 1 thread, no GPU | load 1.02 0.98 0.95 | 2026-12-07 10:00 UTC |
    commit d2da146abcde`. An older record's plain string comes back unchanged."""
    if record is None:
        record = describe()
    if isinstance(record, str):
        return record
    parts = [str(record.get("host", "host")), f"{record.get('cpu') or 'CPU'}, {record.get('cores')} cores"]
    threads = record.get("threads")
    threads_text = f"{threads} thread{'' if threads == 1 else 's'}" if threads is not None else None
    if record.get("torch"):
        gpu = record.get("accelerator") or "no GPU"
        parts.append(", ".join(p for p in (f"torch {record['torch']}", threads_text, gpu) if p))
    elif threads_text:
        parts.append(f"torch {threads_text}")
    if record.get("load"):
        parts.append("load " + " ".join(f"{x:.2f}" for x in record["load"]))
    if record.get("date"):
        parts.append(_date(record["date"]))
    parts.append(f"commit {record.get('commit') or 'unknown'}")
    return " | ".join(parts)


def _date(value: str) -> str:
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value
