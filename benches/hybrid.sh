#!/usr/bin/env bash
# Query p50/p99 in each mode on 10k and 100k documents, ingest documents/s with and
# without the full-text index, and the index's size on disk (benches/hybrid_bench.rs),
# against rank_bm25 on the same documents and queries for the text side
# (benches/hybrid_bm25.py). Documents: Debian descriptions, then summaries (121k texts);
# queries: dev summaries. The `hash` embedder keeps the vector side cheap, so that the
# figures are the indexes' own (a model embedder adds its query embedding, the same in
# vector and hybrid modes). Needs ../shared/data and `pip install rank_bm25`.
#   SIZES="10000 100000" Q=200 benches/hybrid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/hybrid; mkdir -p "$out"
Q=${Q:-200}; SPEC=${SPEC:-hash}
python3 - "$Q" "$out" <<'PY'
import gzip, json, sys
q, out = int(sys.argv[1]), sys.argv[2]
rows = [json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt")]
texts = [r["description"] for r in rows if r["description"].strip()] + [r["summary"] for r in rows if r["summary"].strip()]
queries = [r["summary"] for r in rows if r["split"] == "dev" and r["summary"].strip()][:q]
for name, xs in (("docs", texts), ("queries", queries)):
    with open(f"{out}/{name}.jsonl", "w") as f:
        for t in xs: f.write(json.dumps({"text": t}) + "\n")
PY
python3 -c "import rank_bm25" 2>/dev/null || pip install -q rank_bm25
hybrid_bench=$(benches/driver.sh hybrid_bench)
for n in ${SIZES:-10000 100000}; do
  "$hybrid_bench" "$out/docs.jsonl" "$out/queries.jsonl" "$n" "$SPEC" "$out" > "$out/duetdb-$n.json"
  python3 benches/hybrid_bm25.py "$out/docs.jsonl" "$out/queries.jsonl" "$n" > "$out/bm25-$n.json"
done
python3 - "$out" ${SIZES:-10000 100000} <<'PY'
import json, sys
out, sizes = sys.argv[1], sys.argv[2:]
for n in sizes:
    d, b = json.load(open(f"{out}/duetdb-{n}.json")), json.load(open(f"{out}/bm25-{n}.json"))
    print(f"{n} documents ({d['embedder']} embedder): ingest {d['ingest_docs_per_s_without']:.0f} docs/s without the full-text index, "
          f"{d['ingest_docs_per_s_with_fulltext']:.0f} with ({d['ingest_docs_per_s_with_fulltext'] / d['ingest_docs_per_s_without']:.2f}x); "
          f"full-text index {d['fulltext_bytes'] / 2**20:.1f} MiB of {d['database_bytes'] / 2**20:.1f} MiB")
    for m in ("vector", "text", "hybrid"):
        print(f"  {m:<7} p50 {d[m + '_p50_ms']:8.2f} ms  p99 {d[m + '_p99_ms']:8.2f} ms")
    print(f"  rank_bm25 p50 {b['p50_ms']:8.2f} ms  p99 {b['p99_ms']:8.2f} ms (build {b['build_s']:.1f} s); "
          f"duetdb text mode {b['p50_ms'] / d['text_p50_ms']:.1f}x faster at p50")
PY
