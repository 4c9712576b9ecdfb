#!/usr/bin/env python3
"""Hybrid search against its parts on the rankings `benches/fusion_tune.rs` dumps
(`FUSION_DUMP=DUMP LIMIT=100`): MRR@10 of the vector ranking, of BM25 and of the engine's
weighted fusion (min-max-normalised scores, `fuse` in src/db/query.rs; `weighted` in
fusion_offline.py) at the given vector weights over 100 candidates; each ranking's top-1
misses and how many of them are a sibling (a package of the same Debian source), MRR@10
with siblings taken out; and a paired bootstrap (2000 resamples of the queries) of hybrid
minus the better part.

Usage: python3 benches/hybrid_paired.py PAIRS.jsonl DUMP.jsonl [VECTOR_WEIGHT ...]
(default 0.55, the engine's; needs numpy)."""
import json, random, sys
from fusion_offline import fused, load, mrr, rr, weighted

pairs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
data = load(sys.argv[2])
weights = [float(w) for w in sys.argv[3:]] or [0.55]
src = [p.get("source") for p in pairs]

def mean(x):
    return sum(x) / len(x)

rankings = {"vector": [vl[:100] for _, vl, _, _ in data], "text (BM25)": [tl[:100] for _, _, _, tl in data]}
for w in weights:
    rankings[f"hybrid, vector weight {w}"] = fused(data, weighted(w), 100)
for name, lists in rankings.items():
    misses = [i for i, r in enumerate(lists) if not r or r[0] != i]
    sib = [i for i in misses if lists[i] and src[lists[i][0]] == src[i]]
    alone = [[x for x in r if x == i or src[x] != src[i]] for i, r in enumerate(lists)]
    print(f"{name}: MRR@10 {mrr(lists):.4f}; top-1 misses {len(misses)}, a sibling on top {len(sib)}; without siblings {mrr(alone):.4f}")
parts = {k: rr(v) for k, v in list(rankings.items())[:2]}
better = max(parts, key=lambda k: mean(parts[k]))
rng = random.Random(0)
for name in list(rankings)[2:]:
    d = [a - b for a, b in zip(rr(rankings[name]), parts[better])]
    n = len(d)
    boot = sorted(mean([d[rng.randrange(n)] for _ in range(n)]) for _ in range(2000))
    print(f"{name} - {better}: {mean(d):+.4f}, 95% interval [{boot[50]:+.4f}, {boot[1949]:+.4f}]; better on {sum(x > 0 for x in d)} queries, worse on {sum(x < 0 for x in d)}")
