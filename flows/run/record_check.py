"""A run's round records are what their rounds wrote: read whole, about their round, unedited, and describing the
triplets that are there. Checked on every resume (flows.rounds.recovery) and before a registration reads them
(flows.registry.model_registry)."""

from __future__ import annotations

import json
import math
from typing import Any

from dataio.errors import InputError
from dataio.triplets import is_complete, read_manifest
from flows.run.fingerprint import file_fingerprint
from flows.run.rundir import RECORD_SHA256, RunDir, record_digest
from simcse.evaluation import flat_metrics


def finite_value(value: Any) -> Any:
    """A statistic as a record keeps it: NaN and infinities become None (flows.run.rundir.jsonable)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def same_value(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a record keeps a diverged score as NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def check_records(run: RunDir, done: list[int]) -> None:
    """Every complete round's metrics.json is the record its round wrote: readable, about that round, whole
    (its `record_sha256`), its dev metric its evaluation's, and its mining the triplets that are there (the
    manifest's sha256 it recorded, or for older records the band statistics). A record that is not stops the
    run in one line (InputError) before anything reads it: the model to use, the report, a registration and
    the curriculum all follow the records, and an edited dev score picked the wrong round."""
    for r in done:
        path = run.metrics_path(r)
        advice = f"restore it from a backup, or {run.retrain_advice(r)}"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"round {r}'s record is not readable JSON (truncated?); {advice}", path=path) from None
        if not isinstance(record, dict) or record.get("round") != r:
            about = record.get("round") if isinstance(record, dict) else None
            raise InputError(f"this is not round {r}'s record (it is about round {about!r}); {advice}", path=path)
        sealed = record.get(RECORD_SHA256)
        if sealed is not None and sealed != record_digest(record):
            raise InputError(f"round {r}'s record was edited after the round closed (its content no longer matches "
                             f"its record_sha256); {advice}", path=path)
        dev = record.get("dev_metric") or {}
        scored = flat_metrics(record.get("evaluation")).get(dev.get("name")) if dev.get("name") else None
        if scored is not None and not same_value(scored, dev.get("value")):
            raise InputError(f"round {r}'s record gives its dev metric {dev.get('name')} as {dev.get('value')!r} "
                             f"but its evaluation as {scored!r}; {advice}", path=path)
        if not is_complete(run.triplets, r):
            continue  # pruned (or never kept): nothing to compare
        mining = record.get("mining") or {}
        manifest = run.manifest_path(r)
        if mining.get("manifest_sha256"):
            changed = mining["manifest_sha256"] != file_fingerprint(manifest)
        elif mining.get("bands"):  # a record from before the manifest's sha256 was kept: its band statistics
            bands = {b: (s.rows, finite_value(s.mean_anchor_negative_sim))
                     for b, s in read_manifest(run.triplets, r).bands.items()}
            changed = bands != {b: ((s or {}).get("rows"), finite_value((s or {}).get("mean_anchor_negative_sim")))
                                for b, s in mining["bands"].items()}
        else:
            changed = False
        if changed:
            raise InputError(f"round {r}'s triplets were mined again after the round trained on them (the manifest "
                             f"is not the one its metrics.json recorded), so the report would describe other data; "
                             f"restore {manifest.parent} from a backup, or delete it (the round stays complete)",
                             path=manifest)
