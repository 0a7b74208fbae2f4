"""What a model card costs when a model folder is saved (the offline MiniLM by default).

Measures: importing sentence-transformers (once per process, after simcse and transformers are loaded),
the first card of an architecture (sentence-transformers loads the folder once as a skeleton), a card after
that (rendering only), and a whole `SimCSEEncoder.save` against writing the same folder without a card.
A curriculum round writes two cards (the trainer's, then the closed round's).

It also times the alternative issue 13 asks about, writing and reading model folders through
sentence-transformers' own modules: `SentenceTransformer(path)` against `SimCSEEncoder.from_pretrained(path)`,
and `SentenceTransformer.save` (which writes its own card) against `SimCSEEncoder.save` (medians of `--repeats`).

    python -m bench.model_card_cost                 # all-MiniLM-L6-v2
    python -m bench.model_card_cost --model PATH --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import sys

    from simcse.model import SimCSEEncoder

    encoder = SimCSEEncoder.from_pretrained(args.model, device="cpu")
    already = "sentence_transformers" in sys.modules
    start = time.perf_counter()
    import sentence_transformers  # noqa: F401 - timed: the card's one-off import
    from sentence_transformers import SentenceTransformer

    from dataio.atomic import atomic_dir
    from simcse.card_writer import render_model_card
    from simcse.model_card import ModelCardInfo, describe_base

    out: dict[str, float | str | bool] = {"model": encoder.source, "import_was_done": already,
                                          "import_sentence_transformers_s": time.perf_counter() - start}
    info = describe_base(encoder.source).merged(ModelCardInfo(round=0, evaluation={"sts": {"dev": 80.0}}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        encoder.save(root / "first")
        out["first_save_s"] = time.perf_counter() - start  # includes the skeleton load
        renders = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            render_model_card(root / "first", info)
            renders.append(time.perf_counter() - start)
        # Interleaved (ours with card, ours without, sentence-transformers' save; then the two loads) so the
        # page-cache writeback that makes any 90 MB safetensors write vary several-fold hits every option alike.
        saves, plain, st_loads, our_loads, st_saves = [], [], [], [], []
        st = SentenceTransformer(str(root / "first"), device="cpu")
        for i in range(args.repeats):
            start = time.perf_counter()
            encoder.save(root / f"with-card-{i}")
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            with atomic_dir(root / f"without-card-{i}") as folder:
                encoder._write_folder(folder)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            st.save(str(root / f"st-save-{i}"))
            st_saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            st = SentenceTransformer(str(root / "first"), device="cpu")
            st_loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            SimCSEEncoder.from_pretrained(root / "first", device="cpu")
            our_loads.append(time.perf_counter() - start)
    for name, values in (("save_with_card", saves), ("save_without_card", plain), ("st_save", st_saves),
                         ("st_load", st_loads), ("our_load", our_loads)):
        out[f"{name}_s"] = statistics.median(values)
        out[f"{name}_min_max_s"] = f"{min(values):.3f}-{max(values):.3f}"
    out["card_render_s"] = statistics.median(renders)
    out["card_share_of_save_s"] = out["save_with_card_s"] - out["save_without_card_s"]
    out["machine"] = machine.text()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
