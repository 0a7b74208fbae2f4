"""The experiment's design, read from configs/experiment/: sizes, starts, settings and arms, and from them
each arm x seed's flows run config and its inputs (subsamples, the Twitter split, the weak start).

Nothing here trains: it is the part of the harness that decides *what* runs, so it is unit-tested on its
own (tests/test_bench_experiment.py) and the pre-registration (docs/experiment.md) can point at it.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import yaml

from bench import REPO
from bench.experiment_data import make_weak_start, split_twitter_dev
from dataio.triplet_layout import GRADED_BANDS

CONFIG_DIR = REPO / "configs" / "experiment"
SETTINGS = ("general", "domain")
STARTS = ("tuned", "weak")
SUBSAMPLE_SEED = 20240601  # data subsamples are fixed per size, whatever the run seed
MODEL_INDEPENDENT_BANDS = ("random", "nli_contradiction")  # their rows never depend on the encoder
RUN_SETTINGS = ("positive_view", "word_deletion")  # in a size's `training`, but flows run settings
START_LABELS = {"tuned": "all-MiniLM-L6-v2 (tuned)",
                "weak": "weak start (all-MiniLM-L6-v2, top 2 of 6 layers re-initialised)"}


def read_yaml(path: Path) -> dict[str, Any]:
    from dataio.errors import InputError

    if not path.is_file():
        raise InputError("no such file", path=path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", path=path)
    return data


def load_size(name: str) -> dict[str, Any]:
    from dataio.errors import InputError

    sizes = read_yaml(CONFIG_DIR / "sizes.yaml")
    if name not in sizes:
        raise InputError(f"unknown size {name!r}; choose one of {', '.join(sizes)}", path=CONFIG_DIR / "sizes.yaml")
    size = dict(sizes[name], name=name)
    for key in ("seeds", "starts", "settings", "arms", "rounds", "steps_per_round", "batch_size", "training"):
        if key not in size:
            raise InputError(f"size {name}: key {key!r} is missing", path=CONFIG_DIR / "sizes.yaml")
    return size


def training_for(size: dict[str, Any], start: str, setting: str) -> dict[str, Any]:
    """The trainer settings (lr, temperature, ...) of one start and setting at this size."""
    table = size["training"]
    per_start = table.get(start) or {}
    return dict(per_start.get(setting) or table.get("default") or {})


def arm_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "arms").glob("*.yaml"))


def load_arm(name: str) -> dict[str, Any]:
    from dataio.errors import InputError

    path = CONFIG_DIR / "arms" / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown arm {name!r}; arms: {', '.join(arm_names())}", path=path)
    arm = read_yaml(path)
    for key in ("curriculum", "settings", "negatives", "bands"):
        if key not in arm:
            raise InputError(f"key {key!r} is missing", path=path)
    if arm["negatives"] not in ("hard", "in_batch"):
        raise InputError(f"negatives: expected 'hard' or 'in_batch', got {arm['negatives']!r}", path=path)
    arm["name"] = name
    return arm


def arm_bands(arm: dict[str, Any], setting_bands: list[str]) -> list[str]:
    """The bands an arm mines each round: its own (`all`: the setting's) plus random, which every round
    carries so that the anchors of every arm are the same (paired sampling draws them from all bands)."""
    wanted = setting_bands if arm["bands"] == "all" else list(arm["bands"])
    # The graded bands are mined only on request, so no setting lists them: an arm that asks gets them too.
    return [b for b in setting_bands if b in wanted or b == "random"] + [
        b for b in wanted if b in GRADED_BANDS and b not in setting_bands]


def load_setting(name: str) -> dict[str, Any]:
    return read_yaml(CONFIG_DIR / "settings" / f"{name}.yaml")


def planned_runs(size: dict[str, Any], *, starts: list[str] | None = None, settings: list[str] | None = None,
                 arms: list[str] | None = None, seeds: list[int] | None = None) -> list[tuple[str, str, str, int]]:
    """(start, setting, arm, seed) in the order run: seeds outermost (a stopped run leaves whole seeds), then
    start and setting, arms in the size's order (the anti-curriculum, the optional arm, last)."""
    chosen = arms or list(size["arms"])
    loaded = {a: load_arm(a) for a in chosen}
    return [(start, setting, arm, seed) for seed in (seeds if seeds is not None else size["seeds"])
            for start in (starts or size["starts"]) for setting in (settings or size["settings"])
            for arm in chosen if setting in loaded[arm]["settings"]]


# --------------------------------------------------------------------------------------------- data
def subsample_lines(src: Path, dst: Path, rows: int, seed: int = SUBSAMPLE_SEED) -> Path:
    """`rows` records of a one-record-per-line file (header kept for .csv/.tsv), in file order, seeded.

    Written once (atomically); an existing copy is the same bytes, so it is kept.
    """
    from dataio.atomic import atomic_write_text

    if dst.is_file():
        return dst
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[:1] if src.suffix in (".csv", ".tsv") else []
    body = lines[len(header):]
    if rows < len(body):
        keep = sorted(random.Random(seed).sample(range(len(body)), rows))
        body = [body[i] for i in keep]
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst, "".join(header + body))
    return dst


def _get(mapping: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        mapping = mapping.get(part) if isinstance(mapping, dict) else None
    return mapping


def _set(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        mapping = mapping.setdefault(part, {})
    mapping[parts[-1]] = value


def _path_of(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry["path"]


def _with_path(entry: Any, path: str) -> Any:
    return path if isinstance(entry, str) else {**entry, "path": path}


def prepare_setting(name: str, size: dict[str, Any], out: Path) -> dict[str, Any]:
    """The setting's mapping with paths expanded: `{data_dir}`, the Twitter halves, the size's subsamples."""
    from dataio.tables import data_dir

    data = copy.deepcopy(load_setting(name))
    folder = out / "data" / name
    split = size.get("twitter_split", "headline")  # component: no text on both sides (experiment_data)
    halves = split_twitter_dev(data_dir() / "twitter" / "dev_pairs.tsv",
                               out / "data" / ("twitter" if split == "headline" else f"twitter-{split}"), split)
    names = {"{data_dir}": str(data_dir()), "{twitter_select}": str(halves["select"]),
             "{twitter_report}": str(halves["report"])}

    def expand(value: str) -> str:
        for key, path in names.items():
            if value.startswith(key):
                return path + value[len(key):]
        return value

    cuts = (size.get("subsample") or {}).get(name) or {}
    for key in data["experiment"].get("subsample", []):
        entry = _get(data, key)
        if entry is None:
            continue
        path = Path(expand(_path_of(entry)))
        if cuts.get(key) is not None:
            path = subsample_lines(path, folder / f"{key.replace('.', '_')}{path.suffix}", int(cuts[key]))
        _set(data, key, _with_path(entry, str(path)))
    eval_rows = size.get("eval_subsample")

    def eval_path(value: str, tag: str) -> str:
        path = Path(expand(value))
        if eval_rows is None:
            return str(path)
        return str(subsample_lines(path, folder / "eval" / tag / path.name, int(eval_rows)))  # stem kept

    for kind in ("sts", "pairs"):
        entries = (data.get("eval") or {}).get(kind) or []
        data["eval"][kind] = [_with_path(e, eval_path(_path_of(e), f"dev-{kind}")) for e in entries]
    report = data["experiment"]["report"]
    for kind in ("sts", "pairs"):
        report[kind] = [eval_path(p, f"report-{kind}") for p in report.get(kind) or []]
    data["experiment"]["full_eval"] = eval_rows is None
    data["_name"] = name
    return data


def start_model(start: str, out: Path) -> str:
    """The model folder a start begins from (the weak start is made once, under `out/starts/weak`)."""
    from simcse.model import default_model_path

    if start == "tuned":
        return default_model_path()
    if start == "weak":
        return str(make_weak_start(out / "starts" / "weak"))
    raise ValueError(f"unknown start {start!r}; choose from {', '.join(STARTS)}")


def build_config(setting: dict[str, Any], arm: dict[str, Any], size: dict[str, Any], start: str, seed: int,
                 run_dir: Path, model: str) -> Any:
    """A flows RunConfig for one start x setting x arm x seed."""
    from flows.run.config import config_from_mapping

    data = copy.deepcopy({k: v for k, v in setting.items() if k != "experiment" and not k.startswith("_")})
    data.update(output_dir=str(run_dir), seed=int(seed), rounds=int(size["rounds"]),
                steps_per_round=int(size["steps_per_round"]), batch_size=int(size["batch_size"]))
    data["model"] = {**(data.get("model") or {}), "name_or_path": model}
    mining = data.setdefault("mining", {})
    mining["params"] = {**(mining.get("params") or {}), **(size.get("mining_params") or {})}
    mining["bands"] = arm_bands(arm, list(mining["bands"]))
    training = training_for(size, start, setting["_name"])
    for key in RUN_SETTINGS:  # run-level settings a size may fix per start and setting, beside the trainer's
        if key in training:
            data[key] = training.pop(key)
    data["training"] = {**(data.get("training") or {}), **training, **(arm.get("training") or {})}
    data["curriculum"] = copy.deepcopy(arm["curriculum"])
    data["negatives"] = arm["negatives"]
    # The judge's settings (mining.judge): an arm's own mining parameters over the size's, and the size's teacher
    # for an arm that asks for it.
    mining["params"] = {**mining["params"], **(arm.get("mining_params") or {})}
    if arm.get("teacher"):
        if not size.get("teacher"):
            raise ValueError(f"arm {arm.get('name')} needs a teacher; the size names none (teacher: {{path: ...}})")
        data["teacher"] = {"path": str(teacher_path(size))}
    return config_from_mapping(data, base_dir=CONFIG_DIR / "settings")


def teacher_path(size: dict[str, Any]) -> Path:
    """The size's teacher folder (relative paths: to the repository)."""
    path = Path(size["teacher"]["path"]).expanduser()
    return path if path.is_absolute() else REPO / path
