#!/bin/bash
# device_run.sh for comparing binaries in one device call (branch perf): the carried folder holds
# hstu-NAME.xz binaries (strip + xz -9; several fit the 64 MiB carry limit where gzip does not);
# each stage is NAME:STAGE, e.g.
#   bash .device-carry-perf/device_run_perf.sh new:check base:swift new:swift new:ncu
# Stages as in device_run.sh: check, swift, torch-check (needs NAME:swift first, for the dump), ncu.
# Logs go to /tmp/logs/NAME-*.txt, packed into $OUT/logs.tar.gz; the summary is printed last.
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 HSTU_CACHE_DIR=/tmp/hc PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-230}
LOG=/tmp/logs; mkdir -p $LOG
CFG1="--dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG2="--dim 256 --layers 16 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG3="--dim 512 --layers 8 --heads 4 --head-dim 128 --length 4096 --batch 4 --semi-local 256"
capped() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  [ $cap -gt $left ] && cap=$left
  if [ $cap -lt 10 ]; then echo "SKIPPED $name (no time left)" | tee -a $LOG/summary.txt; return; fi
  local t0=$SECONDS
  timeout $cap "$@" > $LOG/$name.txt 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s: $(grep -v '^\s*$' $LOG/$name.txt | tail -1 | cut -c1-400)" >> $LOG/summary.txt
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $LOG/nvidia-smi.txt 2>&1
for spec in "$@"; do
  bin=${spec%%:*} stage=${spec#*:} exe=/tmp/bin/hstu-$bin
  if [ ! -x $exe ]; then
    mkdir -p /tmp/bin
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" hstu-$bin.xz $exe && chmod +x $exe
  fi
  case $stage in
    check) capped $bin-gpu-check 60 $exe gpu-check ;;
    swift)
      capped $bin-swift-cfg1 40 $exe gpu-bench step $CFG1 --dump /tmp/dump-$bin
      capped $bin-swift-cfg2 40 $exe gpu-bench step $CFG2
      capped $bin-swift-cfg3 50 $exe gpu-bench step $CFG3 ;;
    torch-check) capped $bin-torch-check 60 python3 $ROOT/bench/gpu/torch_reference.py check --dump /tmp/dump-$bin ;;
    ncu)
      capped $bin-ncu-cfg1 60 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        --launch-skip 100 --launch-count 300 $exe gpu-bench step $CFG1 --repeats 1 --gemm-size 0
      python3 $ROOT/bench/gpu/ncu_summary.py $LOG/$bin-ncu-cfg1.txt > $LOG/$bin-ncu-cfg1-summary.md 2>&1
      head -12 $LOG/$bin-ncu-cfg1-summary.md >> $LOG/summary.txt ;;
  esac
done
tar -C /tmp -czf $OUT/logs.tar.gz logs
cat $LOG/summary.txt
