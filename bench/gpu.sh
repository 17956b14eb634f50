#!/usr/bin/env bash
# One prepared GPU session (a lent H100/H200, no registry): run from the repo root on the GPU machine after
# `bash ../shared/gpu/prepare.sh` here, with .gpu carried. Writes $OUT/gpu_runs.tgz (figures, histories, plots, logs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD FASTCIFAR_CACHE=/tmp/fccache PYTHONUNBUFFERED=1
R=/tmp/gpu_runs; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/gpu.txt
python3 -c "import fastai, albumentations, torch, fastcifar.train; print('imports ok', torch.__version__, fastai.__version__, albumentations.__version__)" | tee -a $R/gpu.txt || exit 1
nproc | tee -a $R/gpu.txt
python3 -m bench.compute --device cuda --steps 50 --out $R/compute_gpu.json 2>&1 | tee $R/compute_gpu.txt
python3 -c "from fastcifar.sources import load_cifar; load_cifar('.gpu/cifar10.tgz')" || exit 1
run() {  # name, then train flags
  local n=$1; shift; local t0=$(date +%s)
  timeout ${LIMIT:-400} python3 -m fastcifar.train --data .gpu/cifar10.tgz --out $R/$n "$@" > $R/$n.log 2>&1
  echo "$n rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a $R/walls.txt
}
# 1. the faithful recipe alone on the GPU: the timing figure. Seen 2026-11-26 on an H200: ~7 s an epoch, bound by the
#    per-item CPU data path (12 workers), against ~2 s at the compute bound; a 200 s limit stopped it at epoch 22.
LIMIT=300 run seed42 --workers 15
# 2. more seeds and the improved-recipe ablation, side by side (each slower: they share the CPU cores)
export OMP_NUM_THREADS=1
run seed1 --seed 1 --workers 2 &
run seed2 --seed 2 --workers 2 &
run ls --label-smoothing 0.1 --workers 2 &
run wd5e-4 --wd 5e-4 --workers 2 &
run improved --recipe improved --workers 2 &
wait
rm -f $R/*/model.pkl $R/*/checkpoint.pth
for f in $R/*.log; do tr '\r' '\n' < $f | grep -v '^ *$' | grep -v ' [0-9.]*% \['  | tail -60 > $f.tail; rm $f; done
tar czf $OUT/gpu_runs.tgz -C /tmp gpu_runs
cat $R/walls.txt; grep -h final_test_accuracy $R/*/results.json
