#!/usr/bin/env bash
# End to end, with real models: a database of Debian package descriptions built with one
# embedder is moved to another by `duetdb reindex` while it stays usable, then rolled
# back; retrieval quality (MRR@10, summaries as queries) is measured before, after and
# after the rollback. Needs ../shared/data and the models (scripts/fetch-models.sh all).
#   N=1000 FROM=minilm TO=default MODE=hybrid examples/reindex_debian.sh   (MODE: vector, text or hybrid)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}; FROM=${FROM:-minilm}; TO=${TO:-default}; MODE=${MODE:-hybrid}
out=bench-out/reindex-debian; mkdir -p "$out"
grep -m "$N" '"split": "dev"' <(zcat ../shared/data/debian-descriptions.jsonl.gz) > "$out/dev.jsonl"
./scripts/fetch-models.sh smollm2 >/dev/null
case "$FROM $TO" in *minilm*) ./scripts/fetch-models.sh minilm >/dev/null ;; esac
cargo build --release --quiet
bin=./target/release/duetdb
db="$out/db.duet"; rm -rf "$db"
eval_db() { $bin eval "$out/dev.jsonl" --query-field summary --doc-field description --db "$db" --mode "$MODE" "$@" --json; }
before=$(eval_db --embedder "$FROM")
start=$(date +%s%N)
$bin reindex "$db" --embedder "$TO" --json | tail -n 1
reindex_ms=$(( ($(date +%s%N) - start) / 1000000 ))
after=$(eval_db)
start=$(date +%s%N)
$bin reindex "$db" --rollback --json | tail -n 1
rollback_ms=$(( ($(date +%s%N) - start) / 1000000 ))
rolled=$(eval_db)
python3 - "$FROM" "$TO" "$N" "$reindex_ms" "$rollback_ms" "$MODE" "$before" "$after" "$rolled" <<'PY'
import json, sys
frm, to, n, rs, rb, mode = sys.argv[1:7]
b, a, r = (json.loads(x) for x in sys.argv[7:10])
print(f"{n} Debian dev pairs: {frm} -> {to} -> rollback, {mode} mode")
for name, x in ((f"before ({frm})", b), (f"after reindex ({to})", a), (f"after rollback ({frm})", r)):
    print(f"  {name:<28} MRR@10 {x['mrr10']:.4f}  R@1 {x['recall1']:.4f}  R@10 {x['recall10']:.4f}")
print(f"  reindex {int(rs) / 1000:.1f} s, rollback {int(rb) / 1000:.1f} s")
PY
