#!/usr/bin/env bash
# Trains (or resumes) the multi-source run of issue 30 in runs/general: the default
# checkpoint goes on training (prompt mode: P's adapters and the alignment) on every source
# of scripts/fetch-data.sh, one source per batch, hard negatives from the batch's source,
# dev MRR@10 averaged over the sources (EVAL_SIZE pairs of each) at evaluation points.
#   scripts/train-general.sh               # STEPS=100 LR=3e-4 EVAL_EVERY=100 EVAL_SIZE=150 (runs/general)
#   RUN=general-k10 scripts/train-general.sh --soft-tokens 10   # another run dir; FROM= another start
set -euo pipefail
cd "$(dirname "$0")/.."
c=bench-out/corpus
[ -s "$c/train.jsonl" ] || scripts/fetch-data.sh
cat "$c"/dev-*.jsonl > "$c/dev-all.jsonl"
./scripts/fetch-models.sh
cargo build --release --quiet
out=runs/${RUN:-general}
if [ -f "$out/train/latest" ]; then
  exec ./target/release/duetdb train --resume --out "$out" --json "$@"
fi
exec ./target/release/duetdb train --data "$c/train.jsonl" --group-field source --domain-field corpus \
  --dev "$c/dev-all.jsonl" --query-field summary --doc-field description --out "$out" --mode prompt \
  --from "${FROM:-checkpoints/debian}" --steps "${STEPS:-100}" --lr "${LR:-3e-4}" --lr-align "${LR:-3e-4}" --warmup 20 \
  --batch 16 --max-doc-tokens 64 --max-query-tokens 32 --eval-every "${EVAL_EVERY:-100}" \
  --eval-size "${EVAL_SIZE:-150}" --save-every 25 --json "$@"
