#!/usr/bin/env python3
"""Sibling packages (the same Debian source) in retrieval: how much of a ranking's loss
they are, and a train sample that has as many of them as the dev split.

  python3 benches/siblings.py sample TRAIN.jsonl N SEED > SAMPLE.jsonl
      whole sources of TRAIN, in a seeded random order, until N pairs (the dev split's
      structure: most packages have siblings in the corpus; an every-k-th-line sample has
      almost none)
  python3 benches/siblings.py misses PAIRS.jsonl DUMP.jsonl [v|t]
      for the rankings that `FUSION_DUMP=DUMP examples/fusion_tune` wrote (v: vector,
      t: BM25), MRR@10, the top-1 misses, how many of them are a sibling, and MRR@10
      with the siblings taken out of every ranking (what telling siblings apart is worth)"""
import collections, json, random, sys

def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]

def mrr(lists):
    return sum(next((1 / (k + 1) for k, x in enumerate(r[:10]) if x == i), 0) for i, r in enumerate(lists)) / len(lists)

if sys.argv[1] == "sample":
    train, n, seed = rows(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    by = collections.defaultdict(list)
    for d in train:
        by[d["source"]].append(d)
    sources = sorted(by)
    random.Random(seed).shuffle(sources)
    out = []
    for s in sources:
        if len(out) >= n:
            break
        out += by[s]
    sys.stdout.write("".join(json.dumps(d) + "\n" for d in out))
else:
    pairs, dump = rows(sys.argv[2]), rows(sys.argv[3])
    key = sys.argv[4] if len(sys.argv) > 4 else "t"
    src = [p["source"] for p in pairs]
    count = collections.Counter(src)
    lists = [[x[0] for x in d[key]] for d in dump]
    misses = [i for i, r in enumerate(lists) if not r or r[0] != i]
    sib = [i for i in misses if lists[i] and src[lists[i][0]] == src[i]]
    alone = [[x for x in r if x == i or src[x] != src[i]] for i, r in enumerate(lists)]
    print(f"pairs {len(pairs)}, with a sibling in the corpus {sum(1 for s in src if count[s] > 1)}")
    print(f"MRR@10 {mrr(lists):.4f}; top-1 misses {len(misses)}, a sibling on top {len(sib)}; MRR@10 without siblings {mrr(alone):.4f}")
