#!/usr/bin/env bash
# Trains (or resumes) one run on the Debian train split, dev MRR@10 on 300 dev pairs at
# evaluation points. The run directory runs/MODE holds the checkpoint and the small state
# a later session resumes from (commit it): `scripts/train.sh MODE` again continues it.
#   scripts/train.sh prompt|prompt-prefix|prompt-text|lora-m [extra duetdb train flags]
#   BACKBONE=gemma3 scripts/train.sh lora-m   (LoRA on another backbone from scratch, in
#   runs/lora-m-gemma3: the baseline of a transfer; EVAL_EVERY sets the evaluation interval)
#   GRAD_CACHE=16 BACKBONE=qwen2.5 EVAL_EVERY=25 scripts/train.sh lora-m   (gradient caching,
#   16 texts per differentiated pass: the same gradients in less memory; LoRA on Qwen2.5
#   does not fit in 24 GB without it. A new run's setting: a resume keeps the saved one)
# Needs ../shared/data (the Debian descriptions) and scripts/fetch-models.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/train.sh MODE [flags]}; shift
data=bench-out/data; mkdir -p "$data"
[ -s "$data/train.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "train"' > "$data/train.jsonl"
[ -s "$data/dev.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "dev"' > "$data/dev.jsonl"
./scripts/fetch-models.sh
extra=(); out=runs/$mode
[ -n "${GRAD_CACHE:-}" ] && extra+=(--grad-cache "$GRAD_CACHE")
if [ -n "${BACKBONE:-}" ]; then
  ./scripts/fetch-models.sh "$BACKBONE"
  extra+=(--backbone "$BACKBONE"); out=runs/$mode-$BACKBONE
fi
cargo build --release --quiet
if [ -f "$out/train/latest" ]; then
  exec ./target/release/duetdb train --resume --out "$out" --json "$@"
fi
# Settings shared by every mode, so that their rows compare: same data order, steps,
# batch and sequence lengths.
exec ./target/release/duetdb train --data "$data/train.jsonl" --group-field source --dev "$data/dev.jsonl" \
  --query-field summary --doc-field description --out "$out" --mode "$mode" \
  --steps "${STEPS:-1200}" --batch 16 --max-doc-tokens 64 --max-query-tokens 32 --eval-every "${EVAL_EVERY:-100}" --eval-size 300 \
  --save-every 25 --json "${extra[@]}" "$@"
