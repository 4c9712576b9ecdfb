#!/usr/bin/env bash
# Load on `duetdb serve`: 1, 8 and 32 concurrent clients, a fixed number of requests
# each, ingest (POST /ingest) and query embeddings (POST /v1/embeddings), on the `hash`
# embedder and on the default; requests/s, documents/s, p50/p99 latency and errors. The
# anchor, measured in the same run: `duetdb ingest` of the documents the 8 ingest clients
# send, on the same machine (shared batching must not lose throughput against it).
#
#   benches/serve.sh                         # both embedders
#   SPECS=hash benches/serve.sh              # one; R_hash / R_default set requests per client
# Needs fixtures/ only (texts of fixtures/debian-sample.jsonl, reused under new ids).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p duetdb-cli
bin=target/release/duetdb
out=bench-out/serve; rm -rf "$out"; mkdir -p "$out"
texts=fixtures/debian-sample.jsonl
PER=${PER:-8}
for spec in ${SPECS:-hash default}; do
  case $spec in hash) R=${R_hash:-100};; *) R=${R_default:-2};; esac
  db=$out/db-$spec
  "$bin" serve "$db" --embedder "$spec" --addr 127.0.0.1:0 > "$out/serve-$spec.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$out/serve-$spec.log" && break; sleep 0.2; done
  url=$(head -1 "$out/serve-$spec.log" | awk '{print $3}')
  for kind in ingest embed; do
    for c in 1 8 32; do
      python3 benches/serve_load.py "$url" "$kind" "$c" "$R" "$PER" "$texts" "$kind-c$c" | tee -a "$out/$spec.jsonl" | sed "s/^/$spec /"
    done
  done
  kill -TERM "$pid"; wait "$pid" || true
  # The anchor: the same documents the 8 ingest clients sent, through `duetdb ingest`.
  python3 - "$texts" $((8 * R * PER)) > "$out/anchor-$spec.jsonl" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1])]
for i in range(int(sys.argv[2])):
    print(json.dumps({"id": f"a-{i}", "text": texts[i % len(texts)]}))
PY
  python3 - "$bin" "$out/anchor-db-$spec" "$out/anchor-$spec.jsonl" "$spec" $((8 * R * PER)) <<'PY' | tee -a "$out/$spec.jsonl" | sed "s/^/$spec /"
import json, subprocess, sys, time
bin, db, docs, spec, n = sys.argv[1:6]
t = time.perf_counter()
subprocess.run([bin, "ingest", db, docs, "--embedder", spec], check=True, stdout=subprocess.DEVNULL)
s = time.perf_counter() - t
print(json.dumps({"kind": "duetdb ingest", "docs": int(n), "seconds": round(s, 3), "docs_per_s": round(int(n) / s, 2)}))
PY
done
python3 - "$out" ${SPECS:-hash default} <<'PY'
import json, sys
out, specs = sys.argv[1], sys.argv[2:]
print(f"\n{'embedder':<9} {'workload':<14} {'clients':>7} {'req/s':>9} {'docs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
for s in specs:
    rows = [json.loads(l) for l in open(f"{out}/{s}.jsonl")]
    anchor = next(r for r in rows if r["kind"] == "duetdb ingest")
    for r in rows:
        if r["kind"] == "duetdb ingest":
            continue
        print(f"{s:<9} {r['kind']:<14} {r['clients']:>7} {r['requests_per_s']:>9.1f} {r['docs_per_s']:>9.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6}")
    eight = next(r for r in rows if r["kind"] == "ingest" and r["clients"] == 8)
    print(f"{s:<9} {'duetdb ingest':<14} {'':>7} {'':>9} {anchor['docs_per_s']:>9.1f}   ratio of 8 ingest clients to it: {eight['docs_per_s'] / anchor['docs_per_s']:.2f}x")
PY
