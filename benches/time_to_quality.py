#!/usr/bin/env python3
"""Time to quality of two training runs from their logs (train/log.jsonl), for the
transfer issue's goal: the transferred embedder reaches a dev MRR@10 in at most 1/4 of the
time LoRA on M' needs for the same value.

    python3 benches/time_to_quality.py TRANSFER_LOG[,MORE_LOGS] SECONDS_PER_STEP \
        LORA_LOG SECONDS_PER_STEP [QUALITY ...]

Step times come from a same-run bench (benches/train_cost.sh), not from the logs, whose
steps may have shared the machine. Several logs of one run (reruns with other evaluation
points; the same seed and settings) are merged. For each quality (every value the transfer
measured and any given, none below the lowest given), it prints the transfer's time to it as an upper bound (its first
evaluation at or above it) and LoRA's as a lower bound (its last evaluation below it: LoRA
got there later, if at all), so `ratio <=` is what the runs show for sure; then the same
with both crossings placed by linear interpolation between evaluations (an estimate).
"""
import json
import sys


def curve(paths):
    points = {0: None}
    for path in paths.split(","):
        for line in open(path):
            d = json.loads(line)
            if "dev_mrr10" in d:
                points[d["step"]] = d["dev_mrr10"]
    return sorted((s, m) for s, m in points.items() if m is not None)


def first_at_or_above(points, q):
    """(upper-bound step, interpolated step) of the first crossing of q, or None."""
    prev = None
    for s, m in points:
        if m >= q:
            if prev is None:  # above it at its first evaluation: no interval to interpolate in
                return s, None
            ps, pm = prev
            return s, ps + (s - ps) * (q - pm) / (m - pm)
        prev = (s, m)
    return None


def last_below(points, q):
    below = [s for s, m in points if m < q]
    above = [s for s, m in points if m >= q]
    # LoRA's crossing comes after its last evaluation below q that precedes the first above.
    limit = above[0] if above else float("inf")
    return max([s for s in below if s < limit], default=0)


def main():
    t_log, t_step, l_log, l_step = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    t, l = curve(t_log), curve(l_log)
    given = [float(q) for q in sys.argv[5:]]
    # A given quality is also the floor: the goal is about values at or above it.
    qs = sorted(q for q in set(given) | {m for _, m in t} if q >= min(given, default=0.0))
    print("transfer:", " ".join(f"{s}:{m:.4f}" for s, m in t))
    print("lora:    ", " ".join(f"{s}:{m:.4f}" for s, m in l))
    print(f"| dev MRR@10 | transfer reaches it by | LoRA not before | ratio <= | interpolated: transfer / LoRA | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for q in qs:
        tc = first_at_or_above(t, q)
        if tc is None:
            continue
        lc = first_at_or_above(l, q)
        lo = last_below(l, q)
        t_up = tc[0] * t_step
        l_lo = lo * l_step
        bound = f"{t_up / l_lo:.3f}" if l_lo > 0 else "-"
        reached = "" if lc else " (not reached)"
        if lc and lc[1] is not None and tc[1] is not None:
            est = f"{tc[1] * t_step / 60:.1f} / {lc[1] * l_step / 60:.1f} min | {tc[1] * t_step / (lc[1] * l_step):.3f}"
        else:
            est = "- | -"
        print(f"| {q:.4f} | step {tc[0]}, {t_up / 60:.1f} min | step {lo}{reached}, {l_lo / 60:.1f} min | {bound} | {est} |")


if __name__ == "__main__":
    main()
