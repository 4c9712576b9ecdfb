#!/usr/bin/env bash
# ANN benchmark: duetdb's hnsw_rs graph vs hnswlib on the same 100k vectors of real text
# (the `hash` embedder over Debian descriptions and summaries), in the same run.
# Prints recall@10 / QPS curves and ratios; writes bench-out/ann-*.json.
# Needs ../shared/data and `pip install hnswlib numpy`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/ann; mkdir -p "$out"
N=${N:-100000}; M=${M:-16}; EFC=${EFC:-200}
python3 - "$N" "$out" <<'PY'
import gzip, json, sys
n, out = int(sys.argv[1]), sys.argv[2]
rows = [json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt")]
train = [r for r in rows if r["split"] == "train"]; dev = [r for r in rows if r["split"] == "dev"]
# Base: every description, then train summaries up to N texts; queries: 1000 dev summaries.
base = [(r["package"], r["description"]) for r in rows] + [(r["package"] + "#summary", r["summary"]) for r in train]
base = [(i, t) for i, t in base if t.strip()]
with open(f"{out}/base.jsonl", "w") as f:
    for i, t in base[:n]: f.write(json.dumps({"id": i, "text": t}) + "\n")
with open(f"{out}/queries.jsonl", "w") as f:
    for r in dev[:1000]: f.write(json.dumps({"id": r["package"], "text": r["summary"]}) + "\n")
PY
ann_bench=$(benches/driver.sh ann_bench)
"$ann_bench" "$out/base.jsonl" "$out/queries.jsonl" "$out" "$M" "$EFC" > "$out/ann-duetdb.json"
python3 benches/ann_hnswlib.py "$out" 384 "$M" "$EFC" > "$out/ann-hnswlib.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
d = json.load(open(f"{out}/ann-duetdb.json")); h = json.load(open(f"{out}/ann-hnswlib.json"))
def qps_at(curve, r):
    """hnswlib's QPS at recall r, interpolated on its curve (None outside it)."""
    pts = sorted((c["recall10"], c["qps"]) for c in curve)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= r <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (r - r0) / (r1 - r0)
    return None
print(f"n={d['n']} dim={d['dim']} M={d['m']} ef_construction={d['ef_construction']} queries={d['queries']}")
print(f"build: duetdb {d['build_s']:.1f}s  hnswlib {h['build_s']:.1f}s  ratio (hnswlib/duetdb time) {h['build_s']/d['build_s']:.2f}x")
print(f"{'ef':>5} {'duetdb recall':>14} {'duetdb QPS':>11} {'hnswlib recall':>15} {'hnswlib QPS':>12} {'QPS ratio @ same ef':>20} {'QPS ratio @ equal recall':>25}")
for a, b in zip(d["curve"], h["curve"]):
    eq = qps_at(h["curve"], a["recall10"])
    eqs = f"{a['qps']/eq:.2f}x" if eq else "n/a"
    print(f"{a['ef']:>5} {a['recall10']:>14.4f} {a['qps']:>11.0f} {b['recall10']:>15.4f} {b['qps']:>12.0f} {a['qps']/b['qps']:>19.2f}x {eqs:>25}")
db = d["db"]
print(f"database: ingest {db['ingest_s']:.1f}s, close {db['close_s']:.1f}s, open {db['open_s']:.2f}s, graph rebuilt on open: {db['open_rebuilt_graph']}, "
      f"end-to-end query QPS at ef 64 {db['query_qps_ef64']:.0f}, {db['bytes_on_disk']/1e6:.0f} MB on disk")
PY
