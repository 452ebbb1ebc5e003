#!/bin/bash
# One device call's worth of GPU measurements, run from the carried folder (see bench/results/gpu.md):
#   bash .device-carry/device_run.sh STAGE...
# Stages: check (gpu-check parity), swift (step bench of the three comparison configs, cfg1 dumped),
# torch-check (torch vs the dumped Swift step, blockwise-SLA self-check), torch-eager, torch-compile,
# breakdown (forward / backward / AdamW / host enqueue times), ncu (per-kernel times
# of cfg1 steps; nsys is not on the machine), attention (gpu-bench attention table), train (ML-1M 101 epochs, hstu and hstu-large).
# Every stage has a time cap; stages that would not fit the 10-minute call are skipped and say so.
# Logs and JSON go to /tmp/logs, packed into $OUT/logs.tar.gz (a call returns at most 8 files); the
# summary is printed last.
cd "$(dirname "$0")"
[ -x hstu ] || { gunzip -f hstu.gz; chmod +x hstu; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 HSTU_CACHE_DIR=/tmp/hc PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-570}
LOG=/tmp/logs; mkdir -p $LOG
CFG1="--dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG2="--dim 256 --layers 16 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG3="--dim 512 --layers 8 --heads 4 --head-dim 128 --length 4096 --batch 4 --semi-local 256"
# capped NAME SECONDS COMMAND...: runs COMMAND with stdout+stderr in $LOG/NAME.txt, capped by the time left.
capped() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  [ $cap -gt $left ] && cap=$left
  if [ $cap -lt 15 ]; then echo "SKIPPED $name (no time left)" | tee -a $LOG/summary.txt; return; fi
  local t0=$SECONDS
  timeout $cap "$@" > $LOG/$name.txt 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s: $(grep -v '^\s*$' $LOG/$name.txt | tail -1 | cut -c1-600)" >> $LOG/summary.txt
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $LOG/nvidia-smi.txt 2>&1
for stage in "$@"; do
  case $stage in
    check) capped gpu-check 120 ./hstu gpu-check ;;
    swift)
      capped swift-cfg1 60 ./hstu gpu-bench step $CFG1 --dump /tmp/dump
      capped swift-cfg2 60 ./hstu gpu-bench step $CFG2
      capped swift-cfg3 90 ./hstu gpu-bench step $CFG3 ;;
    torch-check)
      [ -f /tmp/dump/step.safetensors ] && capped torch-check 60 python3 torch_reference.py check --dump /tmp/dump
      capped torch-sla-check 60 python3 torch_reference.py sla-check ;;
    torch-eager)
      capped torch-eager-cfg3 120 python3 torch_reference.py time --mode eager $CFG3
      capped torch-eager-cfg1 45 python3 torch_reference.py time --mode eager $CFG1
      capped torch-eager-cfg2 60 python3 torch_reference.py time --mode eager $CFG2 ;;
    torch-compile)
      capped torch-compile-cfg3 200 python3 torch_reference.py time --mode compile $CFG3
      capped torch-compile-cfg1 100 python3 torch_reference.py time --mode compile $CFG1
      capped torch-compile-cfg2 150 python3 torch_reference.py time --mode compile $CFG2 ;;
    breakdown)
      capped breakdown-cfg1 60 ./hstu gpu-bench step $CFG1 --breakdown --gemm-size 0
      capped breakdown-cfg2 60 ./hstu gpu-bench step $CFG2 --breakdown --gemm-size 0
      capped breakdown-cfg3 60 ./hstu gpu-bench step $CFG3 --breakdown --gemm-size 0 ;;
    ncu)
      # Per-kernel GPU time of about three training steps of cfg1 (clocks left alone).
      capped ncu-cfg1 90 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        --launch-skip 100 --launch-count 270 ./hstu gpu-bench step $CFG1 --repeats 1 --gemm-size 0 ;;
    attention) capped gpu-bench-attention 90 ./hstu gpu-bench --out $LOG --commit "${COMMIT:-unknown}" ;;
    train)
      capped train-hstu 60 ./hstu train --device cuda --data ratings_seq.tsv.gz --preset hstu --patience 0 --output $LOG/train-hstu.json
      capped train-hstu-large 90 ./hstu train --device cuda --data ratings_seq.tsv.gz --preset hstu-large --patience 0 --output $LOG/train-hstu-large.json ;;
  esac
done
tar -C /tmp -czf $OUT/logs.tar.gz logs
cat $LOG/summary.txt
