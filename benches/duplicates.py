#!/usr/bin/env python3
"""Near-duplicates in a database's vectors and in an eval file's documents.

HNSW search ranks exact duplicates arbitrarily and links them poorly (a neighbour list
keeps one of several identical points), so a database whose texts become identical after
the embedder's cut loses recall that exact search keeps. This prints how many rows have
another row within a cosine of 1 - 1e-5 (and 1e-3, 1e-2), and, for a JSON Lines file, how
many documents share their first N words with another document.

Usage: python3 benches/duplicates.py DB.duet [PAIRS.jsonl DOC_FIELD] (needs numpy)."""
import collections, glob, json, struct, sys
import numpy as np

def vectors(db):
    path = sorted(glob.glob(f"{db}/vectors/g*.vec"))[-1]
    b = open(path, "rb").read()
    dim, = struct.unpack("<I", b[12:16])
    prefix, = struct.unpack("<I", b[20:24])
    row = prefix + 4 * dim
    n = (len(b) - 64) // row
    raw = np.frombuffer(b[64:64 + n * row], dtype=np.uint8).reshape(n, row)[:, prefix:]
    return path, np.ascontiguousarray(raw).view("<f4").reshape(n, dim)

path, v = vectors(sys.argv[1])
best = np.full(len(v), -2.0, dtype=np.float32)
for s in range(0, len(v), 1024):  # blocks keep the Gram matrix small
    g = v[s:s + 1024] @ v.T
    for k in range(g.shape[0]):
        g[k, s + k] = -2.0
    best[s:s + 1024] = g.max(1)
print(f"{path}: {len(v)} rows of {v.shape[1]} dims")
for eps in (1e-5, 1e-3, 1e-2):
    print(f"  rows with another row at cosine > 1 - {eps:g}: {(best > 1 - eps).sum()}")
if len(sys.argv) > 3:
    docs = [json.loads(l)[sys.argv[3]] for l in open(sys.argv[2]) if l.strip()]
    for n in (20, 40, 60, 200):
        c = collections.Counter(" ".join(d.split()[:n]) for d in docs)
        print(f"  documents sharing their first {n} words with another: {sum(x for x in c.values() if x > 1)} of {len(docs)}")
