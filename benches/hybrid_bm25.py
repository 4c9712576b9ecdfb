"""The anchor of benches/hybrid.sh: rank_bm25 (BM25Okapi) over the same documents and
queries, words split on non-alphanumerics and lowercased; prints build time and query
p50/p99 in ms as JSON."""
import json, re, sys, time
from rank_bm25 import BM25Okapi

docs = [json.loads(l)["text"] for l in open(sys.argv[1])][: int(sys.argv[3])]
queries = [json.loads(l)["text"] for l in open(sys.argv[2])]
tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())
t = time.perf_counter()
bm25 = BM25Okapi([tok(d) for d in docs])
build_s = time.perf_counter() - t
ms = []
for q in queries:
    t = time.perf_counter()
    bm25.get_top_n(tok(q), docs, n=10)
    ms.append((time.perf_counter() - t) * 1e3)
ms.sort()
pick = lambda p: ms[round((len(ms) - 1) * p)]
print(json.dumps({"docs": len(docs), "build_s": build_s, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}))
