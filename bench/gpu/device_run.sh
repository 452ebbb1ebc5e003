#!/bin/bash
# One device call's worth of GPU measurements (see bench/results/gpu.md). The carried folder holds one or
# more binaries `hstu-NAME.xz` (`bench/gpu/carry_binary.sh NAME`: static build, strip, xz, so several fit the 64 MiB carry) with their commit in
# `hstu-NAME.commit`, ratings_seq.tsv.gz and a copy of this script; from the repository root on the device:
#   bash .device-carry/device_run.sh NAME:STAGE ...
# NAME `best` is the first binary of $CANDIDATES (e.g. "C B") whose `check` stage passed.
# Stages: check (gpu-check parity), swift (step bench of the three comparison configs, cfg1 dumped),
# swift-causal and torch-causal (cfg4: cfg3's model and batch under the full causal mask; Swift, and torch.compile + eager),
# order-ab (the attention CTA orders against each other: causal attention, cfg4 and cfg1-3 steps), check-order (gpu-check in block order over $ORDER pairs), order-sweep (cfg4 at 4, 16, 32 sequences in each order),
# swift-mma (the same with the mma.sync attention forward), swift-bwd-mma (with the mma.sync backward), attention-quick (causal attention at L = 4k, 16k),
# attention-short (causal attention at head dim 64, L = 128 … 2048, without and with rab^p),
# attention-pos (head dim 128 with rab^p, L = 1k, 4k, 16k), attention-long (semi-local and local-window attention at L = 4k … 64k), attention-128k (the same at 64k and 128k), attention-window (semi-local L = 16k at K1 = K2 = 64 … 1024), attention-sla (semi-local and local-window L = 1k, 4k, 16k without and with
# rab^p, causal 16k), sass (opcode histogram of $SASS_FUN),
# ncu-attn (ncu of one L = 16k wgmma attention forward: throughput, pipes, warp-stall reasons),
# torch-check (torch vs the dumped Swift step), torch-eager, torch-compile (the PyTorch peer; NAME ignored),
# breakdown (forward / backward / AdamW / host enqueue times), ncu, ncu2, ncu3, ncu4 (per-kernel times of cfg1, 2, 3, 4 steps; $NCU_BATCH sequences per step if set),
# ncu-loss (the loss kernels of cfg2 and cfg3 under ncu), ncu-bwd-source (stall samples per SASS instruction of the
# wgmma attention backward, L = 4096 with rab^p, semi-local or $NCU_MASK (e.g. causal); ncu-fwd-source the same for the forward, both with the
# kernel's details page: launch, occupancy, SM cycles active avg and max),
# ncu-elementwise (ncu sections of the LayerNorm and split/merge kernels of cfg2, forward and backward),
# attention (gpu-bench attention table), train (ML-1M 101 epochs, hstu and hstu-large), cpu-match (the CPU rows of
# ml-1m.md repeated on the GPU with seeds 42 (the CPU rows'), 7, 1: hstu-large capped at 10 epochs, hstu with early stopping), bench (ML-1M
# training tokens/s of hstu-large and ultra-hstu), datasets (hstu and SASRec on Amazon Beauty, hstu on ML-100K; beauty.txt.gz and u.data.gz carried),
# mfu-batch (cfg3 and cfg4 steps with 8, 16 and 32 sequences), nopos (the same shapes without rab^p), rabp-parts (rab^p's parts, patched binary), round-R (one round of an interleaved A/B: causal attention with rab^p, cfg4, cfg3), roundb-R (the same with cfg4 at 4 and 32 sequences), tuning-R (cfg4 at 32 sequences, cfg1, cfg3 with cuBLASLt's heuristic GEMM algorithms, then tuned), sasrec (ML-1M SASRec, the preset's epochs and patience),
# timebias (hstu with rab^t on the embedded ml-latest-small, which has timestamps).
# Every stage has a time cap and the whole call a budget ($BUDGET s); stages that would not fit are
# skipped and say so. Logs go to $OUT/logs; the summary is printed last.
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 HSTU_CACHE_DIR=/tmp/hc PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-570}
LOG=$OUT/logs; mkdir -p $LOG
CFG1="--dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG2="--dim 256 --layers 16 --heads 4 --head-dim 64 --length 200 --batch 128"
CFG3="--dim 512 --layers 8 --heads 4 --head-dim 128 --length 4096 --batch 4 --semi-local 256"
CFG4="--dim 512 --layers 8 --heads 4 --head-dim 128 --length 4096 --batch 4"   # cfg3 with HSTU's full causal mask
TORCH="python3 $ROOT/bench/gpu/torch_reference.py"
# warp-stall reasons per issued instruction (the ncu stages)
STALLS=smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_imc_miss_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio
# capped NAME SECONDS COMMAND...: runs COMMAND with stdout+stderr in $LOG/NAME.txt, capped by the time left.
capped() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  [ $cap -gt $left ] && cap=$left
  if [ $cap -lt 10 ]; then echo "SKIPPED $name (no time left)" | tee -a $LOG/summary.txt; return 1; fi
  local t0=$SECONDS
  timeout $cap "$@" > $LOG/$name.txt 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s: $(grep -v '^\s*$' $LOG/$name.txt | tail -1 | cut -c1-400)" >> $LOG/summary.txt
  return $rc
}
# trained NAME: a summary line of the training report $LOG/NAME.json (wall time, epoch 1's and the median later
# epoch's training tokens/s from $LOG/NAME.txt, test HR@10 and NDCG@10).
trained() {
  python3 - $LOG/$1.json $LOG/$1.txt <<'PY' | sed "s/^/$1: /" >> $LOG/summary.txt
import json, re, statistics, sys
r = json.load(open(sys.argv[1]))
rates = [float(m.group(1)) for m in re.finditer(r"^epoch \d+ +loss \S+ +(\d+) tokens/s", open(sys.argv[2]).read(), re.M)]
later = statistics.median(rates[1:]) if len(rates) > 1 else float("nan")
print(f"{r['wallSeconds']:.2f} s, epoch 1 {rates[0] if rates else float('nan'):.0f} tokens/s, median of later epochs {later:.0f}; "
      f"test HR@10 {r['test']['HR@10']:.4f} NDCG@10 {r['test']['NDCG@10']:.4f}, best epoch {r['bestEpoch']}")
PY
}
# training NAME CAP ARGS...: `hstu train --device cuda --data $DATA ARGS` ($DATA: ratings_seq.tsv.gz unless set) with its
# report in $LOG/NAME.json, capped at CAP seconds, then its `trained` summary line.
training() {
  local name=$1 cap=$2; shift 2
  capped $name $cap $exe train --device cuda --data ${DATA:-ratings_seq.tsv.gz} "$@" --output $LOG/$name.json && trained $name
}
# attention_table NAME CAP LABEL ARGS...: `gpu-bench ARGS` (the attention bench) capped at CAP seconds, its log in
# $LOG/NAME.txt, its rows (one per mask and L) into the summary as "LABEL: row".
attention_table() {
  local name=$1 cap=$2 label=$3; shift 3
  capped $name $cap $exe gpu-bench "$@" --out /tmp/$name
  grep -h "L=" $LOG/$name.txt | sed "s/^/$label: /" >> $LOG/summary.txt
}
# steps TAG [ARGS...]: `gpu-bench step` of the three comparison configs with ARGS, logs $bin-TAG-cfgN.
steps() {
  local tag=$1; shift
  capped $bin-$tag-cfg1 45 $exe gpu-bench step $CFG1 "$@"
  capped $bin-$tag-cfg2 45 $exe gpu-bench step $CFG2 "$@"
  capped $bin-$tag-cfg3 60 $exe gpu-bench step $CFG3 "$@"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $LOG/nvidia-smi.txt 2>&1
for spec in "$@"; do
  bin=${spec%%:*} stage=${spec#*:}
  if [ $bin = best ]; then
    bin=; for c in $CANDIDATES; do [ -f /tmp/passed-$c ] && { bin=$c; break; }; done
    [ -z "$bin" ] && { echo "SKIPPED $spec (no candidate passed check)" >> $LOG/summary.txt; continue; }
  fi
  exe=/tmp/bin/hstu-$bin
  export HSTU_COMMIT=$(cat hstu-$bin.commit 2>/dev/null || echo unknown)
  if [ ! -x $exe ]; then
    mkdir -p /tmp/bin
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" hstu-$bin.xz $exe && chmod +x $exe
  fi
  case $stage in
    check) capped $bin-gpu-check 240 $exe gpu-check && touch /tmp/passed-$bin ;;
    swift)
      capped $bin-swift-cfg1 45 $exe gpu-bench step $CFG1 --dump /tmp/dump-$bin
      capped $bin-swift-cfg2 45 $exe gpu-bench step $CFG2
      capped $bin-swift-cfg3 60 $exe gpu-bench step $CFG3 ;;
    ncu-attn)   # one causal L = 16k wgmma attention forward under ncu: throughput, pipes, warp-stall reasons
      capped $bin-ncu-attn 150 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:hstu_attention_forward_wgmma --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
        --metrics $STALLS,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__cycles_elapsed.avg \
        $exe gpu-bench --lengths 16384 --masks causal --repeats 3 --out /tmp/ncu-out ;;
    ncu-bwd)   # the attention backward under ncu at the step configs' shapes: head dim 64 causal L = 256, head dim 128 semi-local L = 4096
      for shape in "--lengths 256 --masks causal --attention-head-dim 64" "--lengths 4096 --masks semi-local"; do
        tag=$(echo $shape | tr -dc '0-9' | cut -c1-8)
        capped $bin-ncu-bwd-$tag 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:hstu_attention_backward --launch-skip 2 --launch-count 1 \
          --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats \
          --metrics $STALLS,smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__t_set_accesses_pipe_lsu_mem_global_op_red.sum,lts__t_sectors_op_red.sum \
          $exe gpu-bench $shape --repeats 3 --out /tmp/ncu-out
      done ;;
    ncu-bwd-long)   # the wgmma attention backward under ncu at 65 536 tokens: local window at L = 4k and 64k, semi-local at 64k (what grows with L)
      for shape in "4096 local" "65536 local" "65536 semi-local"; do
        read -r len mask <<< "$shape"
        capped $bin-ncu-bwd-long-$len-$mask 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:hstu_attention_backward_wgmma --launch-skip 2 --launch-count 1 \
          --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats \
          --metrics $STALLS,smsp__inst_executed.sum,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_elapsed.avg,lts__t_sector_hit_rate.pct,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
          $exe gpu-bench --tokens 65536 --lengths $len --masks $mask --repeats 3 --out /tmp/ncu-out
      done ;;
    ncu-bwd-source|ncu-fwd-source)   # where a wgmma attention kernel's warps stall, per SASS instruction (L = 4096, head dim 128, rab^p as in the step; mask ${NCU_MASK:-semi-local})
      dir=${stage#ncu-}; dir=${dir%-source}
      [ $dir = bwd ] && fun=hstu_attention_backward_wgmma || fun=hstu_attention_forward_wgmma
      capped $bin-ncu-$dir-source-run 150 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:$fun --launch-skip 2 --launch-count 1 \
        --section SourceCounters --section WarpStateStats --section LaunchStats --section Occupancy --section SpeedOfLight \
        --metrics $STALLS,smsp__inst_executed.sum,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_elapsed.avg,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
        -f -o /tmp/$dir-source $exe gpu-bench --lengths 4096 --masks ${NCU_MASK:-semi-local} --position-bias --repeats 3 --out /tmp/ncu-out
      /usr/local/cuda/bin/ncu --import /tmp/$dir-source.ncu-rep --page details > $LOG/$bin-ncu-$dir-details.txt 2>&1
      /usr/local/cuda/bin/ncu --import /tmp/$dir-source.ncu-rep --page source --csv --print-source sass > /tmp/$dir-source.csv 2> $LOG/$bin-ncu-$dir-source-err.txt
      python3 - /tmp/$dir-source.csv > $LOG/$bin-ncu-$dir-source.txt 2>&1 <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next(i for i, r in enumerate(rows) if any('Source' == c.strip() for c in r))
cols, rows = rows[head], [r for r in rows[head + 1:] if len(r) == len(rows[head])]
print('columns:', ' | '.join(cols))
src = cols.index('Source'); addr = next((i for i, c in enumerate(cols) if c.startswith('Address')), 0)
samp = next(i for i, c in enumerate(cols) if 'Sampling (All' in c)
nonissued = next((i for i, c in enumerate(cols) if 'Sampling (Not' in c), samp)
execd = next((i for i, c in enumerate(cols) if c.startswith('Instructions Executed')), None)
num = lambda x: float(x.replace(',', '') or 0)
total = sum(num(r[samp]) for r in rows)
print('instructions', len(rows), 'samples', total)
print('%6s %7s %7s %9s  %s' % ('addr', 'all%', 'stall%', 'executed', 'sass'))
for r in rows:
    if num(r[samp]) >= 0.002 * total:
        print('%6s %7.2f %7.2f %9s  %s' % (r[addr], 100 * num(r[samp]) / total, 100 * num(r[nonissued]) / total, r[execd] if execd is not None else '', r[src][:110]))
PY
      head -c 600 $LOG/$bin-ncu-$dir-source-err.txt >> $LOG/summary.txt ;;
    ncu-elementwise)   # LayerNorm and split/merge kernels of the 16-layer step under ncu, forward and backward (time, instructions, DRAM, warp-stall reasons); a 16 GiB arena keeps kernel replay cheap
      for part in forward:'layernorm_forward|uvqk_split' backward:'layernorm_backward|uvqk_merge'; do
        capped $bin-ncu-elementwise-${part%%:*} 100 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:"${part#*:}" \
          --launch-skip 40 --launch-count 6 --section SpeedOfLight --section Occupancy --section WarpStateStats \
          --metrics $STALLS,dram__bytes.sum,smsp__inst_executed.sum \
          $exe gpu-bench step $CFG2 --repeats 1 --gemm-size 0 --gpu-memory 16
        grep -E '^  [a-z_0-9]+.*\(|Duration|smsp__inst_executed.sum|DRAM Throughput|Compute \(SM\) Throughput' \
          $LOG/$bin-ncu-elementwise-${part%%:*}.txt | sed "s/^/$bin: /" >> $LOG/summary.txt
      done ;;
    ncu-loss)   # the sampled-softmax loss kernels of one cfg2 and one cfg3 step under ncu (time, DRAM bytes, L2 hit rate, occupancy, warp-stall reasons)
      for n in 2 3; do
        cfg=CFG$n
        capped $bin-ncu-loss-cfg$n 90 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:'loss_(rows|table|scatter)' \
          --launch-skip 6 --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
          --metrics $STALLS,gpu__time_duration.sum,dram__bytes.sum,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum \
          $exe gpu-bench step ${!cfg} --repeats 1 --gemm-size 0 --gpu-memory 16
        grep -E '^  [a-z_]+.*\(|Duration|dram__bytes.sum|lts__t_sector_hit_rate|Registers Per|Achieved Occupancy|Theoretical Occupancy|long_scoreboard|DRAM Throughput' \
          $LOG/$bin-ncu-loss-cfg$n.txt | sed "s/^/$bin cfg$n: /" >> $LOG/summary.txt
      done ;;
    attention-quick)   # the causal attention forward/backward at L = 4k and 16k only (a quick A/B of kernel changes)
      attention_table $bin-attention-quick 40 "$bin" --lengths 4096 16384 --masks causal ;;
    attention-short)   # causal attention at head dim 64 and short L: where the wgmma forward starts to win
      attention_table $bin-attention-short 40 "$bin" --lengths 128 256 512 1024 2048 --masks causal --attention-head-dim 64
      attention_table $bin-attention-short-pos 40 "$bin rab^p" --lengths 128 256 512 1024 2048 --masks causal --attention-head-dim 64 --position-bias ;;
    attention-sla)   # semi-local attention (K1 = K2 = 256) and its window alone (local K1 = 256) at head dim 128, L = 1k, 4k, 16k, without and with rab^p, and causal L = 16k
      attention_table $bin-attention-sla 60 "$bin" --lengths 1024 4096 16384 --masks semi-local local
      attention_table $bin-attention-sla-pos 60 "$bin rab^p" --lengths 1024 4096 16384 --masks semi-local local --position-bias
      attention_table $bin-attention-causal 40 "$bin" --lengths 16384 --masks causal ;;
    attention-window)   # semi-local attention at L = 16k, head dim 128, K1 = K2 = 64 … 1024: the forward's window CTAs walk about 3 … 18 key tiles (plus the tail rows' split runs), so time against tiles separates a CTA's fixed cost from its cost per tile
      attention_table $bin-attention-window 90 "$bin" --lengths 16384 --masks semi-local --windows 64 128 256 512 1024 ;;
    attention-long)   # semi-local (K1 = K2 = 256) and local-window attention per token out to L = 64k, 65 536 tokens per call, without and with rab^p
      attention_table $bin-attention-long 90 "$bin" --tokens 65536 --lengths 4096 16384 32768 65536 --masks semi-local local
      attention_table $bin-attention-long-pos 90 "$bin rab^p" --tokens 65536 --lengths 4096 16384 32768 65536 --masks semi-local local --position-bias ;;
    attention-128k)   # semi-local and local-window attention at L = 64k and 128k, 131 072 tokens per call: where the backward's list of query tiles (2 bytes of shared memory per 64 tokens of the longest sequence) must leave two CTAs per SM
      attention_table $bin-attention-128k 90 "$bin" --tokens 131072 --lengths 65536 131072 --masks semi-local local ;;
    mfu-batch)   # cfg3 and cfg4 with 8, 16 and 32 sequences per step (the model and L of the MFU target; 32k to 128k tokens)
      for b in 8 16 32; do
        capped $bin-mfu-cfg3-b$b 60 $exe gpu-bench step ${CFG3/--batch 4/--batch $b}
        capped $bin-mfu-cfg4-b$b 60 $exe gpu-bench step ${CFG4/--batch 4/--batch $b}
      done ;;
    attention-pos)   # attention at head dim 128 with the position bias rab^p (as HSTU layers run it)
      attention_table $bin-attention-pos 60 "$bin rab^p" --lengths 1024 4096 16384 --position-bias ;;
    sass)   # opcode histogram of a wgmma attention kernel ($SASS_FUN, default the forward; d = 128), from the cubin NVRTC cached
      capped $bin-sass-run 40 $exe gpu-bench --lengths 4096 --masks causal --repeats 1 --out /tmp/sass-out
      for c in $HSTU_CACHE_DIR/hstu_attention-*.cubin; do
        /usr/local/cuda/bin/cuobjdump -sass -fun ${SASS_FUN:-hstu_attention_forward_wgmma} $c > $LOG/$bin-sass-$(basename $c .cubin).txt 2>&1
      done
      python3 - $LOG/$bin-sass-hstu_attention-*.txt >> $LOG/summary.txt <<'PY'
import collections, re, sys
for path in sys.argv[1:]:
    ops = collections.Counter()
    for line in open(path):
        m = re.match(r'\s*/\*[0-9a-f]{4,}\*/\s+(.*?);', line)
        if not m: continue
        words = m.group(1).split()
        if words and words[0].startswith('@'): words = words[1:]
        if words: ops[words[0].split('.')[0]] += 1
    print('==', path.split('/')[-1], sum(ops.values()), 'instructions:', ', '.join('%s %d' % kv for kv in ops.most_common(30)))
PY
      ;;
    swift-mma) steps swift-mma --attention-forward mmaSync ;;           # A/B against the wgmma forward in one call
    swift-bwd-mma) steps swift-bwd-mma --attention-backward mmaSync ;;  # A/B against the wgmma backward in one call
    swift-causal) capped $bin-swift-cfg4 60 $exe gpu-bench step $CFG4 ;;
    order-ab)   # the attention kernels' CTA order (HSTU_ATTENTION_ORDER=group: sequence by sequence; block: tile by tile across sequences and heads), interleaved: causal attention at 4k and 16k, cfg4 and cfg1-3 steps
      for round in 1 2; do
        for order in group block; do
          HSTU_ATTENTION_ORDER=$order attention_table $bin-order-$order-$round-attention 40 "$bin $order" --lengths 4096 16384 --masks causal
          HSTU_ATTENTION_ORDER=$order capped $bin-order-$order-$round-cfg4 60 $exe gpu-bench step $CFG4
        done
      done
      for order in group block; do HSTU_ATTENTION_ORDER=$order steps order-$order; done ;;
    round-*)   # one round of an interleaved A/B (A:round-1 B:round-1 A:round-2 B:round-2): causal attention with rab^p at L = 4k and 16k, cfg4 and cfg3 steps
      r=${stage#round-}
      attention_table $bin-round$r-attention 40 "$bin round $r" --lengths 4096 16384 --masks causal --position-bias
      capped $bin-round$r-cfg4 60 $exe gpu-bench step $CFG4
      capped $bin-round$r-cfg3 60 $exe gpu-bench step $CFG3 ;;
    roundb-*)   # one round of an interleaved A/B at the MFU figure's shapes: causal attention with rab^p at L = 4k and 16k, cfg4 with 4 and 32 sequences
      r=${stage#roundb-}
      attention_table $bin-roundb$r-attention 40 "$bin round $r" --lengths 4096 16384 --masks causal --position-bias
      capped $bin-roundb$r-cfg4 60 $exe gpu-bench step $CFG4
      capped $bin-roundb$r-cfg4-b32 60 $exe gpu-bench step ${CFG4/--batch 4/--batch 32} ;;
    tuning-*)   # one round of the GEMM tuning A/B in one binary: cfg4 at 32 sequences, cfg1 and cfg3, each with cuBLASLt's heuristic choice (--no-gemm-tuning), then tuned (the default)
      r=${stage#tuning-}
      for mode in heuristic tuned; do
        flag=; [ $mode = heuristic ] && flag=--no-gemm-tuning
        capped $bin-tuning$r-$mode-cfg4-b32 60 $exe gpu-bench step ${CFG4/--batch 4/--batch 32} $flag
        capped $bin-tuning$r-$mode-cfg1 45 $exe gpu-bench step $CFG1 $flag
        capped $bin-tuning$r-$mode-cfg3 60 $exe gpu-bench step $CFG3 $flag
      done ;;
    rabp-parts)   # what each part of rab^p costs causal attention at L = 4096, on a binary built with bench/results/gpu-runs/2026-11-30-s19-call1/exp-hooks.patch applied (HSTU_EXP bits: 1 no shuffle network, 2 no global atomics, 4 no entry loads in the backward, 8 none in the forward; timing only, the gradients are then wrong)
      attention_table $bin-rabp-none 40 "$bin no rab^p" --lengths 4096 --masks causal
      for e in 0 1 2 3 4 7 8; do HSTU_EXP=$e attention_table $bin-rabp-exp$e 40 "$bin rab^p EXP=$e" --lengths 4096 --masks causal --position-bias; done ;;
    clocks)   # cfg4 at 32 sequences per step (--breakdown) while nvidia-smi samples the SM clock, power and throttle reasons every 50 ms: does the sustained step run at the clock of the GEMM reference?
      nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader,nounits -lms 50 > $LOG/$bin-clocks-smi.txt 2>&1 &
      local_smi=$!
      capped $bin-clocks-cfg4-b32 90 $exe gpu-bench step ${CFG4/--batch 4/--batch 32} --repeats 20 --breakdown
      kill $local_smi; sleep 0.2
      python3 - $LOG/$bin-clocks-smi.txt <<'PY' | sed "s/^/$bin clocks: /" >> $LOG/summary.txt
import collections, statistics, sys
rows = [l.split(", ") for l in open(sys.argv[1]) if l.count(",") >= 5]
busy = [r for r in rows if float(r[3]) > 200]   # samples while the GPU draws more than 200 W
print(f"{len(rows)} samples, {len(busy)} above 200 W")
for name, i in (("SM MHz", 1), ("memory MHz", 2), ("W", 3), ("C", 4)):
  v = sorted(float(r[i]) for r in busy) or [float("nan")]
  print(f"{name}: min {v[0]:.0f}, 10th pct {v[len(v) // 10]:.0f}, median {statistics.median(v):.0f}, max {v[-1]:.0f}")
print("throttle reasons (busy samples):", dict(collections.Counter(r[5].strip() for r in busy)))
PY
      ;;
    nopos)   # cfg4 at 4, 8, 16, 32 and cfg3 at 4, 32 sequences per step without rab^p (the layer of the ULTRA-HSTU paper's Eq. 1-5 and of DLRMv3, which NVIDIA's training MFU measures)
      for b in 4 8 16 32; do capped $bin-nopos-cfg4-b$b 60 $exe gpu-bench step ${CFG4/--batch 4/--batch $b} --no-position-bias; done
      for b in 4 32; do capped $bin-nopos-cfg3-b$b 60 $exe gpu-bench step ${CFG3/--batch 4/--batch $b} --no-position-bias; done ;;
    attention-orders)   # causal attention L = 1k … 16k in sequence order and in the default order (block order over G pairs from L = 1024)
      HSTU_ATTENTION_ORDER=group attention_table $bin-attention-order-group 40 "$bin group" --lengths 1024 2048 4096 8192 16384 --masks causal
      attention_table $bin-attention-order-default 40 "$bin default" --lengths 1024 2048 4096 8192 16384 --masks causal ;;
    check-order)   # gpu-check with every attention launch in block order over ${ORDER:-block} heads and sequences at a time (the default uses block order only without a window from L = 1024)
      HSTU_ATTENTION_ORDER=${ORDER:-block} capped $bin-gpu-check-order-${ORDER:-block} 240 $exe gpu-check ;;
    order-sweep)   # cfg4 at 4, 16 and 32 sequences per step in each CTA order: sequence order, block order over 4, 8, 16, 32 heads and sequences at a time, over all
      for b in 4 16 32; do
        for order in group 4 8 16 32 block; do
          HSTU_ATTENTION_ORDER=$order capped $bin-order-$order-b$b 60 $exe gpu-bench step ${CFG4/--batch 4/--batch $b}
        done
      done ;;
    torch-causal)
      capped torch-compile-cfg4 200 $TORCH time --mode compile $CFG4
      capped torch-eager-cfg4 120 $TORCH time --mode eager $CFG4 ;;
    torch-check) capped $bin-torch-check 60 $TORCH check --dump /tmp/dump-$bin ;;
    torch-eager)
      capped torch-eager-cfg1 45 $TORCH time --mode eager $CFG1
      capped torch-eager-cfg2 60 $TORCH time --mode eager $CFG2
      capped torch-eager-cfg3 120 $TORCH time --mode eager $CFG3 ;;
    torch-compile)
      capped torch-compile-cfg1 100 $TORCH time --mode compile $CFG1
      capped torch-compile-cfg2 150 $TORCH time --mode compile $CFG2
      capped torch-compile-cfg3 200 $TORCH time --mode compile $CFG3 ;;
    breakdown)
      capped $bin-breakdown-cfg1 60 $exe gpu-bench step $CFG1 --breakdown --gemm-size 0
      capped $bin-breakdown-cfg2 60 $exe gpu-bench step $CFG2 --breakdown --gemm-size 0
      capped $bin-breakdown-cfg3 60 $exe gpu-bench step $CFG3 --breakdown --gemm-size 0 ;;
    ncu|ncu2|ncu3|ncu4)
      n=${stage#ncu}; n=${n:-1}; cfg=CFG$n; count=$((n == 1 ? 400 : 1200)); args=${!cfg}
      [ -n "$NCU_BATCH" ] && { args=$(sed "s/--batch [0-9]*/--batch $NCU_BATCH/" <<< "$args"); n=$n-b$NCU_BATCH; }   # e.g. NCU_BATCH=32: cfg4 at the MFU figure's batch
      capped $bin-ncu-cfg$n 120 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        --launch-skip 100 --launch-count $count $exe gpu-bench step $args --repeats 1 --gemm-size 0
      python3 $ROOT/bench/gpu/ncu_summary.py $LOG/$bin-ncu-cfg$n.txt > $LOG/$bin-ncu-cfg$n-summary.md 2>&1
      head -16 $LOG/$bin-ncu-cfg$n-summary.md >> $LOG/summary.txt ;;
    attention) capped $bin-gpu-bench-attention 90 $exe gpu-bench --out $LOG --commit "${HSTU_COMMIT:-unknown}" ;;
    train)
      training $bin-train-hstu 60 --preset hstu --patience 0
      training $bin-train-hstu-large 90 --preset hstu-large --patience 0 ;;
    datasets)   # beyond ML-1M: hstu and SASRec on Amazon Beauty (beauty.txt.gz), hstu on ML-100K (u.data.gz), 40 epochs, seed 42, as the CPU runs of gpu.md
      DATA=beauty.txt.gz training $bin-beauty-hstu 90 --preset hstu --epochs 40 --patience 0 --seed 42
      DATA=beauty.txt.gz training $bin-beauty-sasrec 90 --preset sasrec --epochs 40 --patience 0 --seed 42
      DATA=u.data.gz training $bin-ml100k-hstu 60 --preset hstu --epochs 40 --patience 0 --seed 42 ;;
    cpu-match)   # the CPU rows of ml-1m.md on the GPU, three seeds each: hstu-large capped at 10 epochs, hstu with the preset's early stopping
      for seed in 42 7 1; do
        training $bin-cpu-match-hstu-large-s$seed 40 --preset hstu-large --epochs 10 --seed $seed
        training $bin-cpu-match-hstu-s$seed 60 --preset hstu --seed $seed
      done ;;
    bench)
      capped $bin-bench-hstu-large 45 $exe bench train --device cuda --data ratings_seq.tsv.gz --preset hstu-large --output $LOG/$bin-gpu-train-hstu-large.json
      capped $bin-bench-ultra-hstu 45 $exe bench train --device cuda --data ratings_seq.tsv.gz --preset ultra-hstu --output $LOG/$bin-gpu-train-ultra-hstu.json ;;
    sasrec) capped $bin-train-sasrec 150 $exe train --device cuda --data ratings_seq.tsv.gz --preset sasrec --output $LOG/$bin-train-sasrec.json ;;
    timebias) capped $bin-train-hstu-rabt 150 $exe train --device cuda --preset hstu --time-bias --output $LOG/$bin-train-hstu-rabt.json ;;
    *) echo "unknown stage $stage" >> $LOG/summary.txt ;;
  esac
done
cat $LOG/summary.txt
