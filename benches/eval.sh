#!/usr/bin/env bash
# Retrieval quality on the Debian dev split (summary -> description, 3026 pairs, the dev
# descriptions as the corpus) for each embedder spec, through `duetdb eval`; prints the
# README's table, each row with the command that produced it. Needs ../shared/data and
# scripts/fetch-models.sh (minilm: scripts/fetch-models.sh minilm).
#   SPECS="hash minilm m-mean m-last default prompt-text" benches/eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/eval; mkdir -p "$out"
zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "dev"' > "$out/dev.jsonl"
cargo build --release --quiet
for spec in ${SPECS:-hash minilm m-mean m-last untrained default prompt-text}; do
  [ -s "$out/$spec.json" ] && [ -z "${FORCE:-}" ] && continue
  ./target/release/duetdb eval "$out/dev.jsonl" --query-field summary --doc-field description --embedder "$spec" --json > "$out/$spec.json"
done
python3 - "$out" ${SPECS:-hash minilm m-mean m-last untrained default prompt-text} <<'PY'
import json, sys
out, specs = sys.argv[1], sys.argv[2:]
print("| embedder | MRR@10 | nDCG@10 | R@1 | R@10 | docs/s | queries/s | command |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for s in specs:
    r = json.load(open(f"{out}/{s}.json"))
    print(f"| `{s}` | {r['mrr10']:.4f} | {r['ndcg10']:.4f} | {r['recall1']:.4f} | {r['recall10']:.4f} | {r['docs_per_s']:.1f} | {r['queries_per_s']:.1f} | "
          f"`duetdb eval dev.jsonl --query-field summary --doc-field description --embedder {s}` |")
PY
