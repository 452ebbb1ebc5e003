#!/bin/bash
# One-off experiment of the eleventh session (call 6): split size and warpgroups of the wgmma forward, read once from the environment.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 HSTU_CACHE_DIR=/tmp/hc
B=/tmp/hstu-S
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" .device-carry/hstu-S.xz $B && chmod +x $B
CFG1="--dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG2="--dim 256 --layers 16 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG3="--dim 512 --layers 8 --heads 4 --head-dim 128 --length 4096 --batch 4 --semi-local 256"
SLA="--lengths 1024 4096 16384 --masks semi-local --out /tmp/x"
step() { timeout 60 $B gpu-bench step "$@" | tail -1 | python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print('step', j['d'], j['layers'], j['L'], j['semi_local'], j['swift_cuda_ms_per_step'])"; }
$B gpu-bench --lengths 1024 --masks causal --out /tmp/x > /dev/null 2>&1   # warm the kernel cache
for split in 16 8 12 16 8 12; do
  echo "== HSTU_SPLIT_TILES=$split"
  export HSTU_SPLIT_TILES=$split
  timeout 60 $B gpu-bench $SLA | grep semi
  timeout 60 $B gpu-bench $SLA --position-bias | grep semi
  step $CFG3
done
unset HSTU_SPLIT_TILES
for round in 1 2; do
  for wg in 2 1; do
    echo "== HSTU_FWD_WG=$wg (causal attention), round $round"
    HSTU_FWD_WG=$wg timeout 60 $B gpu-bench --lengths 1024 2048 4096 --masks causal --out /tmp/x | grep causal
  done
  echo "== default, cfg1 cfg2"; step $CFG1; step $CFG2
  echo "== HSTU_WGMMA_MIN=128 HSTU_FWD_WG=1, cfg1 cfg2"; HSTU_WGMMA_MIN=128 HSTU_FWD_WG=1 step $CFG1; HSTU_WGMMA_MIN=128 HSTU_FWD_WG=1 step $CFG2
  echo "== HSTU_WGMMA_MIN=128, cfg1 cfg2"; HSTU_WGMMA_MIN=128 step $CFG1; HSTU_WGMMA_MIN=128 step $CFG2
done
