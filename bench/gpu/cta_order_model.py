#!/usr/bin/env python3
"""Makespan of the causal attention backward's CTAs under two launch orders: a model, not a measurement.

Each backward CTA owns 64 keys of one (sequence, head) and walks the query tiles (64 rows) from its own
to the sequence's last: key block kb of an L-token sequence walks L/64 - kb tiles, plus a fixed cost
(`--fixed`, in tiles) for its loads and stores. CTAs are dispatched in launch order to the first free of
`--slots` slots (132 SMs x 2 CTAs). Orders:
  group: the launch grid's (key block, head, sequence) with the key block fastest (sequence order, which the
         kernels keep for windowed masks and L < 1024);
  block: every sequence's and head's key block 0 first, then block 1, ... (longest first across groups).
Prints the makespan of each order over the ideal (total work / slots), per shape. The model has no caches: the
kernels take block order over G heads and sequences at a time (`gridOrderArgument` in Attention.swift), as block
order over every pair lost once the pairs' operands no longer fit the L2 cache (bench/results/gpu.md, eighteenth
session).

    python3 bench/gpu/cta_order_model.py --shapes 4x4096 8x4096 2x16384 128x256
"""
import argparse
import heapq


def makespan(costs, slots):
    free = [0.0] * slots
    end = 0.0
    for cost in costs:
        t = heapq.heappop(free) + cost
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def costs(batch, length, heads, order, fixed):
    tiles = (length + 63) // 64
    groups = [(b, h) for b in range(batch) for h in range(heads)]
    if order == "group":
        return [fixed + tiles - kb for _ in groups for kb in range(tiles)]
    return [fixed + tiles - kb for kb in range(tiles) for _ in groups]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["4x4096", "8x4096", "2x16384", "128x256"],
                        help="BATCHxL per shape")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--slots", type=int, default=264)
    parser.add_argument("--fixed", type=float, default=2.0)
    args = parser.parse_args()
    for shape in args.shapes:
        batch, length = (int(v) for v in shape.split("x"))
        orders = {o: costs(batch, length, args.heads, o, args.fixed) for o in ("group", "block")}
        ideal = sum(orders["group"]) / args.slots
        spans = {o: makespan(work, args.slots) / ideal for o, work in orders.items()}
        print(f"batch {batch:4d} L {length:6d}: group {spans['group']:.3f}  block {spans['block']:.3f}  (x ideal)")


if __name__ == "__main__":
    main()
