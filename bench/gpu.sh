#!/usr/bin/env bash
# One prepared GPU session (a lent H100/H200, no registry): run from the repo root on the GPU machine after
# `bash ../shared/gpu/prepare.sh` here, with .gpu carried. Trains several 30-epoch runs side by side (more seeds of the
# seed's recipe and the improved-recipe ablation) and writes $OUT/gpu_runs.tgz: each run's folder without model.pkl
# (and without checkpoint.pth where the run finished), its log's last lines, and the wall times.
# The lone faithful run's timing is bench/results and results/gpu-h200-seed42: 5.95 s an epoch, bound by the CPU side.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD FASTCIFAR_CACHE=/tmp/fccache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
R=/tmp/gpu_runs; mkdir -p $R
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; date -u; } | tee $R/gpu.txt
python3 -c "import fastai, albumentations, torch; print('imports ok', torch.__version__, fastai.__version__, albumentations.__version__)" | tee -a $R/gpu.txt || exit 1
python3 -c "from fastcifar.sources import load_cifar; load_cifar('.gpu/cifar10.tgz')" || exit 1  # extract + decode once
run() {  # name, then train flags; 2 DataLoader workers each: 8 runs share 16 cores
  local n=$1; shift; local t0=$(date +%s)
  timeout ${LIMIT:-500} python3 -m fastcifar.train --data .gpu/cifar10.tgz --out $R/$n --workers 2 "$@" > $R/$n.log 2>&1
  echo "$n rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a $R/walls.txt
}
for s in 1 2 3; do run seed$s --seed $s & done
run improved --recipe improved &
run ls0.1 --label-smoothing 0.1 &
run wd5e-4 --wd 5e-4 &
run improved-cutout0 --recipe improved --cutout 0 &
run improved-cutout8 --recipe improved --cutout 8 &
wait
for d in $R/*/; do rm -f $d/model.pkl; [ -f $d/results.json ] && rm -f $d/checkpoint.pth; done
for f in $R/*.log; do tr '\r' '\n' < $f | grep -v '^ *$' | tail -40 > $f.tail; rm $f; done
tar czf $OUT/gpu_runs.tgz -C /tmp gpu_runs
cat $R/walls.txt; grep -H -o '"final_test_accuracy": [0-9.]*' $R/*/results.json
