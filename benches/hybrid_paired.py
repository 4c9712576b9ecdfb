#!/usr/bin/env python3
"""Hybrid search against its parts on the rankings `examples/fusion_tune.rs` dumps
(`FUSION_DUMP=DUMP LIMIT=100`): MRR@10 of the vector ranking, of BM25 and of the engine's
weighted fusion (min-max-normalised scores, `fuse` in src/db/query.rs) at the given vector
weights over 100 candidates; each ranking's top-1 misses and how many of them are a sibling
(a package of the same Debian source), MRR@10 with siblings taken out; and a paired
bootstrap (2000 resamples of the queries) of hybrid minus the better part.

Usage: python3 benches/hybrid_paired.py PAIRS.jsonl DUMP.jsonl [VECTOR_WEIGHT ...]
(default 0.55, the engine's)."""
import collections, json, random, sys

pairs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dump = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
weights = [float(w) for w in sys.argv[3:]] or [0.55]
src = [p.get("source") for p in pairs]

def norm(l):
    s = [x[1] for x in l]
    lo, hi = (min(s), max(s)) if s else (0, 0)
    return [(x - lo) / (hi - lo) if hi > lo else 1.0 for x in s]

def fuse(v, t, w):
    score = collections.defaultdict(float)
    for (row, _), n in zip(v, norm(v)):
        score[row] += w * n
    for (row, _), n in zip(t, norm(t)):
        score[row] += (1 - w) * n
    return [r for r, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))]

def rr(lists):
    return [next((1 / (k + 1) for k, x in enumerate(r[:10]) if x == i), 0.0) for i, r in enumerate(lists)]

def mean(x):
    return sum(x) / len(x)

rankings = {"vector": [[x[0] for x in d["v"][:100]] for d in dump], "text (BM25)": [[x[0] for x in d["t"][:100]] for d in dump]}
for w in weights:
    rankings[f"hybrid, vector weight {w}"] = [fuse(d["v"][:100], d["t"][:100], w) for d in dump]
for name, lists in rankings.items():
    misses = [i for i, r in enumerate(lists) if not r or r[0] != i]
    sib = [i for i in misses if lists[i] and src[lists[i][0]] == src[i]]
    alone = [[x for x in r if x == i or src[x] != src[i]] for i, r in enumerate(lists)]
    print(f"{name}: MRR@10 {mean(rr(lists)):.4f}; top-1 misses {len(misses)}, a sibling on top {len(sib)}; without siblings {mean(rr(alone)):.4f}")
parts = {k: rr(v) for k, v in list(rankings.items())[:2]}
better = max(parts, key=lambda k: mean(parts[k]))
rng = random.Random(0)
for name in list(rankings)[2:]:
    d = [a - b for a, b in zip(rr(rankings[name]), parts[better])]
    n = len(d)
    boot = sorted(mean([d[rng.randrange(n)] for _ in range(n)]) for _ in range(2000))
    print(f"{name} - {better}: {mean(d):+.4f}, 95% interval [{boot[50]:+.4f}, {boot[1949]:+.4f}]; better on {sum(x > 0 for x in d)} queries, worse on {sum(x < 0 for x in d)}")
