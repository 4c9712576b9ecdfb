#!/usr/bin/env bash
# Reindex throughput against plain ingest with the same embedder and documents (goal
# >= 0.95x), and query p50/p99 during the reindex against the idle database (goal: p99
# <= 2x idle), measured in the same run (benches/reindex_bench.rs). Queries arrive at
# 10 per second during the reindex. Needs ../shared/data and scripts/fetch-models.sh.
#   N=300 Q=100 FROM=hash TO=default THREADS="1 2" benches/reindex.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/reindex; mkdir -p "$out"
N=${N:-300}; Q=${Q:-100}; FROM=${FROM:-hash}; TO=${TO:-default}
python3 - "$N" "$Q" "$out" <<'PY'
import gzip, json, sys
n, q, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt") if '"dev"' in l]
for name, key, k in (("docs", "description", n), ("queries", "summary", q)):
    with open(f"{out}/{name}.jsonl", "w") as f:
        for r in [r for r in rows if r[key].strip()][:k]: f.write(json.dumps({"text": r[key]}) + "\n")
PY
./scripts/fetch-models.sh >/dev/null
case "$FROM $TO" in *minilm*) ./scripts/fetch-models.sh minilm >/dev/null ;; esac
reindex_bench=$(benches/driver.sh reindex_bench)
for t in ${THREADS:-1 2}; do
  "$reindex_bench" "$out/docs.jsonl" "$out/queries.jsonl" "$N" "$FROM" "$TO" "$t" "$out" | tee "$out/threads-$t.json"
done
python3 - "$out" ${THREADS:-1 2} <<'PY'
import json, sys
out, ts = sys.argv[1], sys.argv[2:]
print(f"{'threads':>7} {'ingest/s':>9} {'reindex/s':>10} {'ratio':>6} {'idle p50':>9} {'idle p99':>9} {'busy p50':>9} {'busy p99':>9} {'p99 ratio':>9}")
for t in ts:
    r = json.load(open(f"{out}/threads-{t}.json"))
    print(f"{t:>7} {r['ingest_docs_per_s']:>9.2f} {r['reindex_docs_per_s']:>10.2f} {r['throughput_ratio']:>6.2f} {r['idle_p50_ms']:>9.1f} {r['idle_p99_ms']:>9.1f} {r['busy_p50_ms']:>9.1f} {r['busy_p99_ms']:>9.1f} {r['p99_ratio']:>9.2f}")
PY
