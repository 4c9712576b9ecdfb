#!/usr/bin/env python3
"""Other hybrid fusions, tried offline on the rankings `benches/fusion_tune.rs` dumps
(FUSION_DUMP=F LIMIT=300): min-max, z-score and max-normalised weighted sums, with and
without filling a missing score from the deeper list, and gap-following weights.
Usage: python3 benches/fusion_offline.py DUMP.jsonl (needs numpy)."""
import json, sys, math
import numpy as np

def load(p):
    out = []
    for l in open(p):
        d = json.loads(l)
        out.append(({int(i): s for i, s in d["v"]}, [int(i) for i, _ in d["v"]], {int(i): s for i, s in d["t"]}, [int(i) for i, _ in d["t"]]))
    return out

def rr(ranked):
    """Reciprocal rank at 10 of each query's relevant document (query i's is document i)."""
    return [next((1 / (p + 1) for p, d in enumerate(r[:10]) if d == i), 0.0) for i, r in enumerate(ranked)]

def mrr(ranked):
    return sum(rr(ranked)) / len(ranked)

def fuse(data, f, c=100, fill=False):
    return mrr(fused(data, f, c, fill))

def fused(data, f, c=100, fill=False):
    """Each query's ranking under fusion `f` of the two rankings' top `c`."""
    ranked = []
    for i, (vs, vl, ts, tl) in enumerate(data):
        vl_c, tl_c = vl[:c], tl[:c]
        cand = set(vl_c) | set(tl_c)
        vsc = {d: vs[d] for d in vl_c}
        tsc = {d: ts[d] for d in tl_c}
        if fill:
            for d in cand:
                if d not in vsc and d in vs: vsc[d] = vs[d]
                if d not in tsc and d in ts: tsc[d] = ts[d]
        sc = f(vsc, tsc, cand, vl_c, tl_c)
        ranked.append(sorted(cand, key=lambda d: (-sc[d], d)))
    return ranked

def minmax(s, keys_for_range):
    vals = [s[k] for k in keys_for_range] or [0]
    lo, hi = min(vals), max(vals)
    return lambda d: ((s[d] - lo) / (hi - lo) if hi > lo else 1.0) if d in s else 0.0

def weighted(w):
    def f(vsc, tsc, cand, vl, tl):
        vn, tn = minmax(vsc, list(vsc)), minmax(tsc, list(tsc))
        return {d: w * vn(d) + (1 - w) * tn(d) for d in cand}
    return f

def zscore(w):
    def f(vsc, tsc, cand, vl, tl):
        def z(s):
            v = np.array(list(s.values()) or [0.0]); m, sd = v.mean(), v.std() or 1.0
            lo = (v.min() - m) / sd
            return lambda d: (s[d] - m) / sd if d in s else lo
        vz, tz = z(vsc), z(tsc)
        return {d: w * vz(d) + (1 - w) * tz(d) for d in cand}
    return f

def maxnorm(w):
    # cosine raw; bm25 / max bm25
    def f(vsc, tsc, cand, vl, tl):
        tmax = max(tsc.values()) if tsc else 1.0
        vmin = min(vsc.values()) if vsc else 0.0
        return {d: w * vsc.get(d, vmin) + (1 - w) * tsc.get(d, 0.0) / tmax for d in cand}
    return f


def prep(data, c=100):
    out = []
    for i, (vs, vl, ts, tl) in enumerate(data):
        cand = sorted(set(vl[:c]) | set(tl[:c]))
        idx = {d: j for j, d in enumerate(cand)}
        def norm(lst, s):
            x = np.zeros(len(cand)); present = np.zeros(len(cand), bool)
            vals = np.array([s[d] for d in lst[:c]]) if lst else np.zeros(1)
            lo, hi = vals.min(), vals.max()
            for d in lst[:c]:
                x[idx[d]] = (s[d] - lo) / (hi - lo) if hi > lo else 1.0; present[idx[d]] = True
            srt = np.sort(vals)[::-1]
            gap = (srt[0] - srt[1]) / (hi - lo) if len(srt) > 1 and hi > lo else 0.0
            return x, gap
        vn, vg = norm(vl, vs); tn, tg = norm(tl, ts)
        rel = idx.get(i, -1)
        out.append((np.array(cand), vn, tn, vg, tg, rel))
    return out

def mrr_scored(P, scorefn):
    tot = 0.0
    for cand, vn, tn, vg, tg, rel in P:
        if rel < 0: continue
        s = scorefn(vn, tn, vg, tg)
        r = s[rel]
        # rank: count strictly greater + ties with smaller id
        better = np.sum(s > r) + np.sum((s == r) & (cand < cand[rel]))
        if better < 10: tot += 1 / (better + 1)
    return tot / len(P)

def gap_and_power(path):
    data = load(path); P = prep(data)
    for w in [0.35, 0.45, 0.5, 0.55, 0.6]:
        print("static", w, round(mrr_scored(P, lambda vn, tn, vg, tg: w * vn + (1 - w) * tn), 4))
    best = (0,)
    for w in [0.4, 0.5, 0.6]:
        for a in [0.0, 0.5, 1.0, 2.0, 4.0]:
            m = mrr_scored(P, lambda vn, tn, vg, tg: w * (1 + a * vg) * vn + (1 - w) * (1 + a * tg) * tn)
            best = max(best, (m, w, a))
    print("dyn gap", best)
    best = (0,)
    for w in [0.4, 0.5, 0.6]:
        for p in [0.5, 1.0, 2.0, 3.0]:
            m = mrr_scored(P, lambda vn, tn, vg, tg: w * vn ** p + (1 - w) * tn ** p)
            best = max(best, (m, w, p))
    print("power", best)
if __name__ == "__main__":
    data = load(sys.argv[1])
    print("n", len(data))
    print("vector", mrr([x[1] for x in data]), "text", mrr([x[3] for x in data]))
    for name, mk in [("minmax", weighted), ("zscore", zscore), ("maxnorm", maxnorm)]:
        for fill in [False, True]:
            best = max((fuse(data, mk(w / 20), c, fill), w / 20, c) for c in [20, 50, 100] for w in range(0, 21))
            print(name, "fill" if fill else "", best, "w0.35c100:", fuse(data, mk(0.35), 100, fill))
    gap_and_power(sys.argv[1])
