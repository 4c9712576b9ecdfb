#!/usr/bin/env python3
"""A train sample with as many sibling packages (the same Debian source) as the dev split:
whole sources of TRAIN, in a seeded random order, until N pairs. Most dev packages have a
sibling in the dev corpus; an every-k-th-line sample of train has almost none, so it
misjudges what ranking errors dev has (`benches/hybrid_paired.py` counts them in a dump).

Usage: python3 benches/siblings.py sample TRAIN.jsonl N SEED > SAMPLE.jsonl
       python3 benches/siblings.py holdout TRAIN.jsonl SAMPLE.jsonl > REST.jsonl
The second writes TRAIN less every line of a source (of the same corpus) that SAMPLE
holds: training data that has seen neither the sample's packages nor their siblings."""
import collections, json, random, sys

if len(sys.argv) == 4 and sys.argv[1] == "holdout":
    held = {(d.get("corpus"), d["source"]) for d in map(json.loads, open(sys.argv[3])) if d}
    for line in open(sys.argv[2]):
        if line.strip() and (lambda d: (d.get("corpus"), d["source"]) not in held)(json.loads(line)):
            sys.stdout.write(line)
    sys.exit(0)
if len(sys.argv) != 5 or sys.argv[1] != "sample":
    sys.exit(__doc__)
train = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
n, seed = int(sys.argv[3]), int(sys.argv[4])
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
