"""Sums `ncu --csv --metrics gpu__time_duration.sum` output (device_run.sh's ncu stage) by kernel
name and divides by the number of AdamW launches seen (one per training step):
    python3 bench/gpu/ncu_summary.py ncu-cfg1.txt"""
import csv
import sys
from collections import defaultdict

lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
total, count = defaultdict(float), defaultdict(int)
for row in csv.DictReader(lines[start:]):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = row["Kernel Name"].split("(")[0][:60]
    total[name] += float(row["Metric Value"].replace(",", ""))
    count[name] += 1
steps = max(1, sum(c for n, c in count.items() if n.startswith("adamw_step")))
grand = sum(total.values())
print(f"{steps} steps, {grand / steps / 1e6:.3f} ms of kernel time per step")
print("| kernel | launches/step | ms/step | share |\n|---|---|---|---|")
for name, ns in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"| {name} | {count[name] / steps:.1f} | {ns / steps / 1e6:.3f} | {100 * ns / grand:.1f}% |")
