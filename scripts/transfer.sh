#!/usr/bin/env bash
# Transfers the shipped default embedder to a new backbone (or resumes that run): P and its
# adapters frozen, the new Embedding LLM frozen, only a fresh alignment trained, on the
# Debian train split with the same batch and sequence lengths as scripts/train.sh; dev
# MRR@10 on 300 dev pairs every 50 steps. The run directory runs/transfer-BACKBONE-INIT
# holds the transferred checkpoint and the small state a later session resumes from.
#   scripts/transfer.sh qwen2.5|gemma3 [lstsq|identity|zero|compose] [extra duetdb transfer flags]
#   FROM=runs/prompt-text scripts/transfer.sh gemma3 compose   (another source checkpoint:
#   the run directory is then runs/transfer-SOURCE-BACKBONE-INIT, SOURCE its last path part)
set -euo pipefail
cd "$(dirname "$0")/.."
backbone=${1:?usage: scripts/transfer.sh qwen2.5|gemma3 [lstsq|identity|zero|compose] [flags]}; shift
init=${1:-lstsq}; [ $# -gt 0 ] && shift
data=bench-out/data; mkdir -p "$data"
[ -s "$data/train.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "train"' > "$data/train.jsonl"
[ -s "$data/dev.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "dev"' > "$data/dev.jsonl"
./scripts/fetch-models.sh
./scripts/fetch-models.sh "$backbone"
cargo build --release --quiet
from=${FROM:-checkpoints/smollm2}
out=runs/transfer-$backbone-$init
[ "$from" = checkpoints/smollm2 ] || out=runs/transfer-$(basename "$from")-$backbone-$init
if [ -f "$out/train/latest" ]; then
  exec ./target/release/duetdb transfer --resume --out "$out" --json "$@"
fi
exec ./target/release/duetdb transfer --from "$from" --backbone "$backbone" --align-init "$init" \
  --data "$data/train.jsonl" --group-field source --dev "$data/dev.jsonl" \
  --query-field summary --doc-field description --out "$out" \
  --steps "${STEPS:-600}" --batch 16 --max-doc-tokens 64 --max-query-tokens 32 --lr-align 3e-3 --warmup 20 \
  --eval-every 50 --eval-size 300 --save-every 25 --json "$@"
