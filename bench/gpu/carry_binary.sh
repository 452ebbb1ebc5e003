#!/bin/bash
# carry_binary.sh NAME: builds the checked-out commit as one static binary and packs it for a device call:
# .device-carry/hstu-NAME.xz (stripped, xz) and .device-carry/hstu-NAME.commit, next to a copy of device_run.sh.
# Then, on the device machine: bash .device-carry/device_run.sh NAME:check NAME:swift … (see device_run.sh).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bench/gpu/carry_binary.sh NAME" >&2; exit 2; }
cd "$(dirname "$0")/../.."
mkdir -p .device-carry
swift build -c release --static-swift-stdlib --scratch-path .build-static 2>&1 | grep -E "error|warning: unre|Build complete" | tail -3
strip -o ".device-carry/hstu-$1" .build-static/x86_64-unknown-linux-gnu/release/hstu
xz -T0 -6 -f ".device-carry/hstu-$1"
git rev-parse --short HEAD > ".device-carry/hstu-$1.commit"
cp bench/gpu/device_run.sh .device-carry/
ls -la ".device-carry/hstu-$1.xz"
