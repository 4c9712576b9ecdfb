#!/usr/bin/env bash
# Issue 29's end-to-end goal: documents/s of `duetdb eval --mode vector` (ingest into a
# fresh database, then the queries) on the first N Debian dev pairs, the default embedder,
# this checkout's binary against the one of REV (the commit before issue 29's first
# change), interleaved, R rounds, medians. This checkout runs in each precision the CPU
# has: f32, bf16 with AVX-512 only (DUETDB_AMX=0) and auto (AMX tiles where there are).
# REV is built once in a worktree that shares target/ (only the two crates recompile).
#   N=300 R=2 benches/end_to_end.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${REV:-92e74f9}; N=${N:-300}; R=${R:-2}
out=bench-out/end_to_end; mkdir -p "$out"
data=bench-out/corpus/dev-debian.jsonl
[ -s "$data" ] || scripts/fetch-data.sh
./scripts/fetch-models.sh >/dev/null
target=$PWD/target
old=$out/duetdb-$REV
if [ ! -x "$old" ]; then
  wt=$out/worktree-$REV
  git worktree add -f --detach "$wt" "$REV" >/dev/null
  (cd "$wt" && CARGO_TARGET_DIR=$target cargo build --release --quiet -p duetdb-cli)
  cp "$target/release/duetdb" "$old"
  git worktree remove --force "$wt"
fi
# After REV's build: this checkout's binary again (cargo links it back into place).
cargo build --release --quiet -p duetdb-cli
new=$out/duetdb-new; cp "$target/release/duetdb" "$new"
run() { # label, binary, env...
  local label=$1 bin=$2; shift 2
  env "$@" "$bin" eval "$data" --limit "$N" --query-field summary --doc-field description --mode vector --json 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); d["label"]=sys.argv[1]; print(json.dumps(d))' "$label" >> "$out/runs.jsonl"
}
: > "$out/runs.jsonl"
amx=$(grep -q amx_bf16 /proc/cpuinfo && echo yes || echo no)
for r in $(seq "$R"); do
  run "at $REV (issue 29 filed)" "$old"
  run "now, f32" "$new" DUETDB_PRECISION=f32
  if grep -q avx512_bf16 /proc/cpuinfo; then
    run "now, bf16 (AVX-512)" "$new" DUETDB_PRECISION=bf16 DUETDB_AMX=0
    [ "$amx" = yes ] && run "now, bf16 (AMX tiles)" "$new" DUETDB_PRECISION=bf16
  fi
done
python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = list(dict.fromkeys(r["label"] for r in rows))
med = {l: statistics.median(r["docs_per_s"] for r in rows if r["label"] == l) for l in labels}
base = med[labels[0]]
print(f"{'binary':<32} {'documents/s':>12} {'runs':>22} {'MRR@10':>8} {'x then':>7}")
for l in labels:
    rs = [r for r in rows if r["label"] == l]
    each = " / ".join(f"{r['docs_per_s']:.2f}" for r in rs)
    print(f"{l:<32} {med[l]:>12.2f} {each:>22} {rs[0]['mrr10']:>8.4f} {med[l] / base:>6.2f}x")
PY
