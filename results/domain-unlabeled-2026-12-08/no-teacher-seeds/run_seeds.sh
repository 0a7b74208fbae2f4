#!/bin/bash
# configs/domain_no_teacher.yaml as shipped, seeds 0-4: how often does the in-batch config hand over?
cd /work/snap-domain
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 SIMCSE_DATA_DIR=/work/shared/data PYTHONPATH=/work/snap-domain
for seed in 0 1 2 3 4; do
  cfg=configs/domain_no_teacher_seed$seed.yaml
  sed -e "s/^seed: 0$/seed: $seed/" -e "s|^output_dir: ../runs/domain_no_teacher$|output_dir: ../runs/domain_no_teacher_seed$seed|" configs/domain_no_teacher.yaml > $cfg
  PREFECT_HOME=/tmp/prefect-nt$seed /usr/bin/time -v /work/main/.venv/bin/python -m flows.cli run $cfg > /work/nt$seed.log 2>&1
  echo "seed $seed rc=$?" >> /work/seeds_nt.done
done
