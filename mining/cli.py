"""`simcse-curriculum mine` and `simcse-curriculum inspect`.

Inputs, options and the model are validated before the output folder is created; if mining then fails (an
exception), the folder is removed again if this command created it, and then each parent it created while
empty (`dataio.owned_folder`): bad input leaves nothing behind, and output other commands wrote beside it (a
sweep's `--out exp/seed1` in a new `exp/`) stays. On ^C the folder stays: a rerun reuses its `.cache/`
embeddings. `mine` writes only into a new or empty folder or one holding its own output (`round=<r>/`
partitions, `.cache/`), and holds the folder's lock while it writes (`dataio.folder_lock`): a second `mine` on
the same folder is refused.
The miner's options take their defaults and help from `mining.params.MiningParams`, their one home.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from dataio.errors import InputError
from dataio.owned_folder import make_folder
from mining.params import ENGINES, MiningParams, address_problem, check_bands


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _log_to_stderr() -> None:
    """Mining's own log lines (backend choice, band statistics) on stderr, once per process."""
    logger = logging.getLogger("mining")
    if not any(getattr(h, "_mining_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._mining_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


Opt = typer.Option
# `mine --help` in groups (typer's rich help panels) rather than one wall of options.
InOpt = partial(Opt, rich_help_panel="Inputs")
ColOpt = partial(Opt, rich_help_panel="Input columns")
ModelOpt = partial(Opt, rich_help_panel="Model")
BandOpt = partial(Opt, rich_help_panel="Bands and negatives")
ScaleOpt = partial(Opt, rich_help_panel="Search and scale-out")

# MiningParams fields that may be None, which a command line cannot spell: (the values that stand for None
# there, how the help says it).
NONE_ON_THE_COMMAND_LINE = {
    "unsupervised_range_min": (lambda v: v == 0, "0"),
    "relative_margin": (lambda v: v < 0, "a negative value"),
    "max_score": (lambda v: v > 1, "a value above 1"),
}


def _default(name: str) -> Any:
    """The default of MiningParams field `name`: the option's default too."""
    return MiningParams.model_fields[name].default


def _help(name: str) -> str:
    """The help of the option for MiningParams field `name`: the field's description."""
    text = MiningParams.model_fields[name].description or ""
    if "_" not in text.split(" ", 1)[0]:  # a sentence, not a band's name
        text = text[:1].upper() + text[1:]
    if name in NONE_ON_THE_COMMAND_LINE:
        text += f". Here {NONE_ON_THE_COMMAND_LINE[name][1]} stands for None"
    return f"{text}."


def params_from_options(**options: Any) -> MiningParams:
    """MiningParams of `mine`'s options (named as the fields), each None stand-in turned into None."""
    for name, (means_none, _) in NONE_ON_THE_COMMAND_LINE.items():
        if name in options and options[name] is not None and means_none(options[name]):
            options[name] = None
    return MiningParams(**options)


# What `mine --out` writes at the top of its folder: Hive partitions, the default embeddings cache, the lock,
# temporaries of a killed write. Anything else means the folder is someone else's.
TRIPLETS_TOP = re.compile(r"round=\d+|\.cache|\.simcse-curriculum\.lock|\..+\.tmp|_.*")


def check_triplets_folder(out: Path) -> None:
    """InputError unless `out` is new, empty, or a triplets folder (every entry one `mine` writes)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", path=out)
    foreign = sorted(p.name for p in out.iterdir() if not TRIPLETS_TOP.fullmatch(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"not empty and not a triplets folder (it holds {shown}); choose a new or empty --out "
                         f"so nothing of yours is overwritten", path=out)


def _check_sharding(shards: int, cluster: str | None, engine: str) -> None:
    """`mine`'s --shards, --cluster and --engine, checked together before anything is read."""
    if cluster is not None and shards < 2:
        raise InputError("--cluster needs --shards 2 or more (the number of pieces to spread over its workers)")
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is not known: use one of {', '.join(ENGINES)}")
    problem = address_problem(engine, cluster)
    if problem is not None:
        raise InputError(f"--cluster {problem} (--engine)")
    if engine != "dask" and shards < 2:
        raise InputError(f"--engine {engine} needs --shards 2 or more (one shard runs in this process)")
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise InputError("--engine ray needs the ray package: pip install 'simcse-curriculum[ray]', or use dask")


def _print_mined(result: Any, out: Path, as_json: bool) -> None:
    """The mined (or reused) round: one JSON object, or a line per band."""
    if as_json:
        bands = {band: {k: stats.get(k) for k in ("rows", "mean_anchor_negative_sim", "skipped")}
                 for band, stats in result.bands.items()}
        typer.echo(json.dumps({"round": result.round, "reused": bool(result.cached), "out": str(out),
                               "manifest": str(result.manifest_path),
                               "rows": sum(int(b["rows"] or 0) for b in bands.values()), "bands": bands}))
        return
    state = "reused (same model, corpus and parameters)" if result.cached else "written"
    typer.echo(f"round {result.round} {state}: {result.manifest_path}")
    for band, stats in result.bands.items():
        mean = stats["mean_anchor_negative_sim"]
        excluded_text = f"  ({stats['skipped']['excluded_pair']} excluded pairs skipped)" \
            if stats.get("skipped", {}).get("excluded_pair") else ""
        typer.echo(f"  {band:<18} {stats['rows']:>9} rows  mean sim {'n/a' if mean is None else f'{mean:.3f}'}"
                   f"{excluded_text}")



def mine_command(
    out: Annotated[Path, Opt("--out", help="Triplets folder; writes round=<r>/band=<b>/part-<n>.parquet.")],
    round_: Annotated[int, Opt("--round", min=0, help="Round number.")] = 0,
    seed: Annotated[int, Opt("--seed", help="Seed of every random choice.")] = 0,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bars or log lines.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print the result as one JSON object on stdout (round, manifest, "
                                                "rows per band); logs and progress stay on stderr.")] = False,
    corpus: Annotated[list[Path] | None, InOpt("--corpus", help="Corpus file (text[, id, domain]); repeatable.")
                      ] = None,
    domain: Annotated[list[str] | None, InOpt("--domain", help="Domain label of each --corpus file, in order "
                                                               "(when the file has no domain column).")] = None,
    pairs: Annotated[list[Path] | None, InOpt("--pairs", help="Pairs file (anchor, positive); repeatable.")] = None,
    nli: Annotated[list[Path] | None, InOpt("--nli", help="NLI triplets (anchor/sent0, positive/sent1, "
                                                          "negative/hard_neg); repeatable.")] = None,
    unsupervised_anchors: Annotated[bool, InOpt("--unsupervised/--no-unsupervised", help=_help("unsupervised_anchors"))
                                    ] = _default("unsupervised_anchors"),
    exclude_pairs: Annotated[Path | None, InOpt("--exclude-pairs", help="Pairs never to mine again (anchor_id, "
                                                "negative_id; a csv, tsv, jsonl, json or parquet file), e.g. the false "
                                                "negatives marked in `inspect --html`.")] = None,
    text_column: Annotated[str | None, ColOpt("--text-column", help="Corpus text column.")] = None,
    id_column: Annotated[str | None, ColOpt("--id-column", help="Corpus id column.")] = None,
    domain_column: Annotated[str | None, ColOpt("--domain-column", help="Corpus domain column.")] = None,
    anchor_column: Annotated[str | None, ColOpt("--anchor-column", help="Pairs/NLI anchor column.")] = None,
    positive_column: Annotated[str | None, ColOpt("--positive-column", help="Pairs/NLI positive column.")] = None,
    negative_column: Annotated[str | None, ColOpt("--negative-column", help="NLI negative column.")] = None,
    model: Annotated[str | None, ModelOpt("--model", help="Model folder or name (default: offline MiniLM).")] = None,
    max_length: Annotated[int | None, ModelOpt("--max-length", help="Token limit when encoding.")] = None,
    batch_size: Annotated[int, ModelOpt("--batch-size", help=_help("batch_size"))] = _default("batch_size"),
    encode_runtime: Annotated[str, ModelOpt("--encode-runtime", help="torch, or openvino: CPU encoding on an fp32 "
                                            "OpenVINO graph of the model (the same embeddings; needs the openvino "
                                            "package).")] = "torch",
    bands: Annotated[list[str] | None, BandOpt("--bands", help="Bands, comma-separated or repeated (default: every "
                                                               "band the inputs allow).")] = None,
    num_negatives: Annotated[int, BandOpt("--num-negatives", help=_help("num_negatives"))] = _default("num_negatives"),
    range_min: Annotated[int, BandOpt("--range-min", help=_help("range_min"))] = _default("range_min"),
    unsupervised_range_min: Annotated[int, BandOpt("--unsupervised-range-min", help=_help("unsupervised_range_min"))
                                      ] = _default("unsupervised_range_min"),
    range_max: Annotated[int, BandOpt("--range-max", help=_help("range_max"))] = _default("range_max"),
    relative_margin: Annotated[float, BandOpt("--relative-margin", help=_help("relative_margin"))
                               ] = _default("relative_margin"),
    max_score: Annotated[float, BandOpt("--max-score", help=_help("max_score"))] = _default("max_score"),
    sampling: Annotated[str, BandOpt("--sampling", help=_help("sampling"))] = _default("sampling"),
    backend: Annotated[str, ScaleOpt("--backend", help=_help("backend"))] = _default("backend"),
    cache_dir: Annotated[Path | None, ScaleOpt("--cache-dir", help="Embeddings cache (default <out>/.cache).")] = None,
    shards: Annotated[int, ScaleOpt("--shards", min=1, help="Encode, search and mine in this many shards, each a "
                                    "task on a Dask (or Ray: --engine) cluster, a local one of this many worker "
                                    "processes unless --cluster; the triplets are those of --shards 1.")] = 1,
    cluster: Annotated[str | None, ScaleOpt("--cluster", help="The cluster for --shards: a Dask scheduler address "
                                            "(e.g. tcp://10.0.0.5:8786), or with --engine ray a Ray address "
                                            "(ray://HOST:10001 or auto); its workers need this package and the "
                                            "cache folder's file system.")] = None,
    engine: Annotated[str, ScaleOpt("--engine", help="What runs the shards: dask, or ray (needs the ray package).")
                      ] = "dask",
) -> None:
    """Mine negatives in difficulty bands from a corpus into Parquet triplets."""
    from mining.corpus import (
        CorpusSource,
        NliSource,
        PairSource,
        check_size,
        load_corpus,
    )
    from mining.exclusions import read_excluded_pairs

    if not quiet:
        _log_to_stderr()
    domains = domain or []
    corpus = corpus or []
    if domains and len(domains) != len(corpus):
        raise InputError(f"--domain given {len(domains)} times for {len(corpus)} --corpus files; give one label per "
                         f"corpus file, in order")
    _check_sharding(shards, cluster, engine)
    params = params_from_options(num_negatives=num_negatives, range_min=range_min, range_max=range_max,
                                 unsupervised_range_min=unsupervised_range_min, relative_margin=relative_margin,
                                 max_score=max_score, sampling=sampling, backend=backend, batch_size=batch_size,
                                 unsupervised_anchors=unsupervised_anchors)
    chosen = check_bands(_split(bands))
    sources = [CorpusSource(p, text_column=text_column, id_column=id_column, domain_column=domain_column,
                            domain=domains[i] if domains else None) for i, p in enumerate(corpus)]
    pair_sources = [PairSource(p, anchor_column=anchor_column, positive_column=positive_column) for p in pairs or []]
    nli_sources = [NliSource(p, anchor_column=anchor_column, positive_column=positive_column,
                             negative_column=negative_column) for p in nli or []]
    loaded = load_corpus(sources, pair_sources, nli_sources, unsupervised_anchors=params.unsupervised_anchors)
    check_size(loaded, params.num_negatives)
    excluded = read_excluded_pairs(exclude_pairs) if exclude_pairs is not None else None
    check_triplets_folder(out)

    from dataio.folder_lock import lock_folder
    from mining.encoders import load_encoder
    from mining.pipeline import mine
    from mining.shards import EncoderRef, sharded_mining

    encoder = load_encoder(model, max_length=max_length, encode_runtime=encode_runtime)
    try:
        owned = make_folder(out)
    except FileExistsError:  # made a file since the check above
        raise InputError("exists and is not a folder; choose another --out", path=out) from None
    try:
        lock = lock_folder(out, f"simcse-curriculum mine --out {out}")
        lock.__enter__()
    except BaseException:
        owned.remove_empty()  # refused: the mine holding it may have written in it, so only what is empty goes
        raise
    try:
        ref = EncoderRef.of(load_encoder, model, max_length=max_length, encode_runtime=encode_runtime)
        with sharded_mining(shards, ref, cluster, engine) as sharding:
            result = mine(loaded, encoder, out, round=round_, bands=chosen, params=params, seed=seed,
                          cache_dir=cache_dir, show_progress=not quiet, exclude_pairs=excluded, **sharding)
    except Exception:  # not on ^C: the folder's .cache/ embeddings are what a rerun reuses
        owned.remove()  # the folder if this command made it, then the parents it made while empty
        raise
    finally:
        lock.__exit__(None, None, None)
    _print_mined(result, out, as_json)

def inspect_command(
    triplets: Annotated[Path, typer.Argument(help="Triplets folder (the --out of mine).")],
    as_json: Annotated[bool, Opt("--json", help="Print the summary as JSON.")] = False,
    plots: Annotated[Path | None, Opt("--plots", help="Write similarity histograms (PNG) here.")] = None,
    samples: Annotated[int, Opt("--samples", min=0, help="Sample triplets per band.")] = 2,
    false_negatives: Annotated[int, Opt("--false-negatives", min=0, help="Highest-similarity negatives shown.")] = 10,
    seed: Annotated[int, Opt("--seed", help="Seed of the sample choice.")] = 0,
    html_path: Annotated[Path | None, Opt("--html", help="Write one self-contained HTML page here: rows per band, "
                                          "histograms, suspected false negatives, a filter, and marking of false "
                                          "negatives to download for `mine --exclude-pairs`.")] = None,
    rows: Annotated[int, Opt("--rows", min=1, help="With --html: rows shown per band (highest similarities, "
                                                   "then a random sample).")] = 200,
) -> None:
    """Rows per round and band, similarity histograms, suspected false negatives and sample triplets."""
    from mining.inspect import format_report, inspect_triplets, matplotlib_config_in_temp, to_json

    if html_path is not None and html_path.is_dir():
        raise InputError("is a folder; --html takes the path of the page to write, e.g. triplets.html", path=html_path)
    with matplotlib_config_in_temp() if plots is not None else contextlib.nullcontext():  # nothing under $HOME
        report = inspect_triplets(triplets, plots_dir=plots, false_negatives=false_negatives,
                                  samples=max(samples, rows) if html_path is not None else samples, seed=seed)
    typer.echo(to_json(report, max_samples=samples) if as_json else format_report(report, max_samples=samples))
    if html_path is not None:
        from mining.inspect_html import write_html

        typer.echo(f"page: {write_html(report, html_path, rows_per_band=rows)}", err=as_json)


def upgrade_command(
    folder: Annotated[Path, typer.Argument(help="A triplets folder written by an older version (or a run folder "
                                                 "holding one in triplets/).")],
) -> None:
    """Convert a triplets folder of an older version in place (round and band only in the path, the manifest
    named .manifest.json), so pandas, pyarrow and datasets read it in one line and this version reads it."""
    from dataio.triplet_upgrade import upgrade_folder
    from dataio.triplets import legacy_rounds

    if not folder.is_dir():
        raise InputError("no such folder; pass a triplets folder (the --out of mine) or a run folder", path=folder)
    root = folder / "triplets" if not legacy_rounds(folder) and (folder / "triplets").is_dir() else folder
    done = upgrade_folder(root)
    if done:
        typer.echo(f"upgraded round {', '.join(str(r) for r in done)}: {root}")
    else:
        typer.echo(f"nothing to upgrade: {root} holds no round of an older layout")


def register(app: typer.Typer) -> None:
    """Add `mine`, `inspect` and `triplets upgrade` to the app."""
    app.command("mine")(mine_command)
    app.command("inspect")(inspect_command)
    triplets = typer.Typer(help="Maintain triplet folders.", no_args_is_help=True)
    triplets.command("upgrade")(upgrade_command)
    app.add_typer(triplets, name="triplets")
