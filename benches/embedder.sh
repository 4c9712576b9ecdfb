#!/usr/bin/env bash
# Ingest documents/s and query latency p50/p99 of a database with the default embedder,
# in both conditioning modes (soft prompt from the instruction alone: `default`; from
# instruction and text: `prompt-text`), plus `hash` as the no-model reference. Each
# spec runs at each precision of PRECISIONS (`auto`: bfloat16 documents on CPUs with
# AVX-512 BF16; `f32`).
# Needs ../shared/data and scripts/fetch-models.sh.   N=10000 Q=200 benches/embedder.sh
#   SPECS="hash minilm default" PRECISIONS="auto f32" N=1000 benches/embedder.sh   (the README's table)
# INGESTS="stream batches" also runs each with the batches one after the other (no
# pipeline), for the pipeline's gain in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/embedder; mkdir -p "$out"
N=${N:-10000}; Q=${Q:-200}
python3 - "$N" "$Q" "$out" <<'PY'
import gzip, json, sys
n, q, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt")]
docs = [r["description"] for r in rows if r["description"].strip()][:n]
queries = [r["summary"] for r in rows if r["split"] == "dev" and r["summary"].strip()][:q]
for name, xs in (("docs", docs), ("queries", queries)):
    with open(f"{out}/{name}.jsonl", "w") as f:
        for t in xs: f.write(json.dumps({"text": t}) + "\n")
PY
./scripts/fetch-models.sh >/dev/null
embed_bench=$(benches/driver.sh embed_bench)
PRECISIONS=${PRECISIONS:-auto}; INGESTS=${INGESTS:-stream}
for spec in ${SPECS:-hash default prompt-text}; do
  for p in $PRECISIONS; do
    for i in $INGESTS; do
      INGEST=$i DUETDB_PRECISION=$p "$embed_bench" "$out/docs.jsonl" "$out/queries.jsonl" "$N" "$spec" "$out" > "$out/$spec-$p-$i.json"
    done
  done
done
python3 - "$out" "$PRECISIONS" "$INGESTS" ${SPECS:-hash default prompt-text} <<'PY'
import json, sys
out, precisions, ingests, specs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4:]
print(f"{'embedder':<12} {'precision':<9} {'ingest':<8} {'docs':>6} {'docs/s':>9} {'query p50 ms':>13} {'query p99 ms':>13}")
for s in specs:
    for p in precisions:
        for i in ingests:
            r = json.load(open(f"{out}/{s}-{p}-{i}.json"))
            print(f"{s:<12} {p:<9} {i:<8} {r['docs']:>6} {r['docs_per_s']:>9.1f} {r['p50_ms']:>13.1f} {r['p99_ms']:>13.1f}")
PY
