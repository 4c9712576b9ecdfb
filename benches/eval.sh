#!/usr/bin/env bash
# Retrieval quality on the Debian dev split (summary -> description, 3026 pairs, the dev
# descriptions as the corpus) for each embedder spec and query mode, through `duetdb eval`;
# prints the README's table, each row with the command that produced it. Each spec's
# database is kept (`--db`), so its other modes cost no embedding. Needs ../shared/data and
# scripts/fetch-models.sh (minilm: scripts/fetch-models.sh minilm).
#   SPECS="hash minilm default" MODES="vector text hybrid" benches/eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/eval; mkdir -p "$out"
zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "dev"' > "$out/dev.jsonl"
cargo build --release --quiet
SPECS=${SPECS:-hash minilm m-mean m-last untrained smollm2 default prompt-text}; MODES=${MODES:-vector}
for spec in $SPECS; do
  for mode in $MODES; do
    [ -s "$out/$spec-$mode.json" ] && [ -z "${FORCE:-}" ] && continue
    ./target/release/duetdb eval "$out/dev.jsonl" --query-field summary --doc-field description --embedder "$spec" \
      --db "$out/$spec.duet" --mode "$mode" --json > "$out/$spec-$mode.json"
  done
done
python3 - "$out" "$MODES" $SPECS <<'PY'
import json, sys
out, modes, specs = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
print("| embedder | mode | MRR@10 | nDCG@10 | R@1 | R@10 | queries/s | command |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for s in specs:
    for m in modes:
        r = json.load(open(f"{out}/{s}-{m}.json"))
        print(f"| `{s}` | {m} | {r['mrr10']:.4f} | {r['ndcg10']:.4f} | {r['recall1']:.4f} | {r['recall10']:.4f} | {r['queries_per_s']:.1f} | "
              f"`duetdb eval dev.jsonl --query-field summary --doc-field description --embedder {s} --mode {m}` |")
PY
