#!/usr/bin/env bash
# Trains the readout of issue 30 in runs/readout: a linear map from Gemma3's states at the
# soft positions (after blocks 15 and 18, each averaged over the five positions) to the
# vector, over the frozen default checkpoint (`--from`), on every source of
# scripts/fetch-data.sh (at most PAIRS pairs of each), one source per batch. The inputs are
# computed once and kept in $OUT/train/ (not in git): the same command again trains
# without embedding anything, and `--inputs-from DIR` takes the rows another run over the
# same checkpoint already computed. Hard negatives (10 candidates a query, one drawn into
# each batch) are mined in that cached space. Dev MRR@10: each source's whole dev split.
#   scripts/train-readout.sh                 # STEPS=1000 PAIRS=4500 FROM=checkpoints/general OUT=runs/readout
#   OUT=runs/readout-12k PAIRS=12000 STEPS=2000 scripts/train-readout.sh --inputs-from runs/readout
# PAIRS=all takes every pair of each source. EXTRA=1 adds train-extra.jsonl (training-only pairs of more wheels and WordNet) to the data.
set -euo pipefail
cd "$(dirname "$0")/.."
c=bench-out/corpus
[ -s "$c/train.jsonl" ] || scripts/fetch-data.sh
cat "$c"/dev-{debian,glossary,python,rust}.jsonl > "$c/dev-all.jsonl"
data="$c/train.jsonl"
if [ "${EXTRA:-0}" = 1 ]; then cat "$c/train.jsonl" "$c/train-extra.jsonl" > "$c/train-wide.jsonl"; data="$c/train-wide.jsonl"; fi
./scripts/fetch-models.sh
cargo build --release --quiet
exec ./target/release/duetdb train --mode readout --from "${FROM:-checkpoints/general}" \
  --data "$data" --group-field source --domain-field corpus \
  --dev "$c/dev-all.jsonl" --eval-size 600 --query-field summary --doc-field description \
  $([ "${PAIRS:-4500}" = all ] || echo --pairs-per-source "${PAIRS:-4500}") --readout-blocks 15,18 --batch 256 --steps "${STEPS:-1000}" \
  --lr 1e-3 --warmup 50 --temperature 0.05 --eval-every 100 --out "${OUT:-runs/readout}" --json "$@"
