"""Sums `ncu --csv --metrics gpu__time_duration.sum` output (device_run.sh's ncu stage) by kernel
name over the whole training steps in the window: the launches from the first `loss_rows` (one per
step) up to the last one, divided by the steps between them (each span holds one step's backward and
AdamW and the next step's forward and loss: every kernel of a step once):
    python3 bench/gpu/ncu_summary.py ncu-cfg1.txt"""
import csv
import sys
from collections import defaultdict

lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
launches = [(row["Kernel Name"].split("(")[0][:60], float(row["Metric Value"].replace(",", "")))
            for row in csv.DictReader(lines[start:]) if row.get("Metric Name") == "gpu__time_duration.sum"]
ends = [i for i, (name, _) in enumerate(launches) if name == "loss_rows"]
if len(ends) < 2:
    sys.exit("fewer than two loss_rows launches in the window: no whole step to sum")
steps = len(ends) - 1
total, count = defaultdict(float), defaultdict(int)
for name, ns in launches[ends[0]:ends[-1]]:
    total[name] += ns
    count[name] += 1
grand = sum(total.values())
print(f"{steps} steps, {grand / steps / 1e6:.3f} ms of kernel time per step")
print("| kernel | launches/step | ms/step | share |\n|---|---|---|---|")
for name, ns in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"| {name} | {count[name] / steps:.1f} | {ns / steps / 1e6:.3f} | {100 * ns / grand:.1f}% |")
