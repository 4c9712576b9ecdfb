#!/usr/bin/env python3
"""Paired bootstrap of two rows of benches/generalization.sh (or any two `duetdb eval
--json` outputs over the same files, or benches/e5_eval.py's): for each source and for
the macro-average, A's MRR@10 minus B's with a 95% interval from 10,000 resamples of the
queries (each source resampled on its own, the macro-average the mean of the resampled
sources; fixed seed). Both files must hold each query's rank (`ranks`), in the same order.

  python3 benches/paired_bootstrap.py bench-out/generalization/runs_general-vector.json \\
      bench-out/generalization/e5-small-vector.json
"""
import json
import sys

import numpy as np


def rr(ranks):
    return np.array([0.0 if r is None else 1.0 / (r + 1) for r in ranks])


def sources(path):
    d = json.load(open(path))
    return d["sources"] if "sources" in d else {"all": d}


def main(a_path, b_path, resamples=10_000):
    a, b = sources(a_path), sources(b_path)
    names = sorted(set(a) & set(b))
    if not names:
        sys.exit("paired_bootstrap: the two files share no source")
    rng = np.random.default_rng(20261205)
    boots = []
    print(f"A = {a_path}\nB = {b_path}\n")
    print("| source | A MRR@10 | B MRR@10 | A - B | 95% interval | A better / worse (queries) |")
    print("|---|---:|---:|---:|---|---:|")
    for s in names:
        ra, rb = rr(a[s]["ranks"]), rr(b[s]["ranks"])
        if len(ra) != len(rb):
            sys.exit(f"paired_bootstrap: {s}: {len(ra)} queries in A, {len(rb)} in B")
        d = ra - rb
        idx = rng.integers(0, len(d), size=(resamples, len(d)))
        bs = d[idx].mean(axis=1)
        boots.append(bs)
        lo, hi = np.percentile(bs, [2.5, 97.5])
        print(f"| {s} | {ra.mean():.4f} | {rb.mean():.4f} | {d.mean():+.4f} | [{lo:+.4f}, {hi:+.4f}] | {(d > 0).sum()} / {(d < 0).sum()} |")
    m = np.mean(boots, axis=0)
    lo, hi = np.percentile(m, [2.5, 97.5])
    ma = np.mean([rr(a[s]["ranks"]).mean() for s in names])
    mb = np.mean([rr(b[s]["ranks"]).mean() for s in names])
    print(f"| macro | {ma:.4f} | {mb:.4f} | {ma - mb:+.4f} | [{lo:+.4f}, {hi:+.4f}] | |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: paired_bootstrap.py A.json B.json")
    main(sys.argv[1], sys.argv[2])
