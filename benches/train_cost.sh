#!/usr/bin/env bash
# Training cost, PromptEmbedder modes against the LoRA baseline (LoRA on M), with the
# same data, batch (16 queries, their positives, 16 hard negatives) and sequence
# lengths (queries 32, documents 64 tokens), one after the other on this machine:
# median step time and peak memory (total, and above the loaded models and data).
#   MODES="prompt lora-m" STEPS=8 benches/train_cost.sh
# MODE:BACKBONE runs a mode on another Embedding LLM: `transfer:gemma3` (`smollm2`
# transferred, only A' trained) against `lora-m:gemma3` (LoRA on Gemma3 from scratch):
#   MODES="transfer:gemma3 lora-m:gemma3" BASE=lora-m:gemma3 benches/train_cost.sh
# A /N suffix trains with gradient caching, N texts per differentiated pass (the same
# gradients; `--grad-cache N`): its cost against the plain run, and the LoRA run that
# does not fit otherwise:
#   MODES="lora-m:gemma3 lora-m:gemma3/8 lora-m:qwen2.5/8" BASE=lora-m:gemma3 benches/train_cost.sh
# A training run in the background is paused (SIGSTOP) meanwhile and resumed after.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/train-cost; mkdir -p "$out"
data=bench-out/data; mkdir -p "$data"
[ -s "$data/train.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "train"' > "$data/train.jsonl"
cargo build --release --quiet
paused=$(pgrep -f "duetdb train" || true)
# A paused run keeps its memory: next to a paused LoRA run (15.6 GB) a LoRA mode here
# does not fit in 24 GB, and the kernel's OOM killer picks the paused run.
if [ -n "$paused" ] && [[ " ${MODES:-prompt lora-m} " == *" lora-m"* ]] && [ "$(awk '/MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo)" -lt 17 ]; then
  echo "a training run is resident (pid $paused) and less than 17 GB is free for the lora-m mode: stop it first" >&2
  exit 1
fi
[ -n "$paused" ] && kill -STOP $paused
trap '[ -n "$paused" ] && kill -CONT $paused' EXIT
for spec in ${MODES:-prompt lora-m}; do
  plain=${spec%%/*}; mode=${plain%%:*}; extra=()
  [ "$spec" != "$plain" ] && extra+=(--grad-cache "${spec#*/}")
  if [ "$plain" != "$mode" ]; then
    ./scripts/fetch-models.sh "${plain#*:}" >/dev/null
    extra+=(--backbone "${plain#*:}")
    [ "$mode" = transfer ] && extra+=(--from checkpoints/smollm2)
  fi
  dir=$out/${spec//\//-gc}
  rm -rf "${dir:?}"
  ./target/release/duetdb train --data "$data/train.jsonl" --group-field source --out "$dir" --mode "$mode" "${extra[@]}" \
    --steps "${STEPS:-8}" --batch 16 --max-doc-tokens 64 --max-query-tokens 32 --eval-every 0 --save-every 1000 --json \
    | tail -1 > "$dir.json"
done
BASE=${BASE:-lora-m} python3 - "$out" ${MODES:-prompt lora-m} <<'PY'
import json, os, sys, statistics
out, modes, base_mode = sys.argv[1], sys.argv[2:], os.environ["BASE"]
rows = {}
for m in modes:
    d = f"{out}/{m.replace('/', '-gc')}"
    s = json.load(open(f"{d}.json"))["summary"]
    log = [json.loads(l) for l in open(f"{d}/train/log.jsonl")]
    times = [l["step_s"] for l in log[1:]]  # the first step pays one-off allocations
    rows[m] = (statistics.median(times), min(times), max(times), s["peak_rss_mib"], s["peak_rss_mib"] - s["base_rss_mib"], s["parameters"])
base = rows.get(base_mode)
print(f"| mode | trainable values | step median (min-max) | vs {base_mode} | peak memory | vs {base_mode} | training memory (peak - loaded) | vs {base_mode} |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for m, (med, lo, hi, peak, train, n) in rows.items():
    r = lambda a, b: f"{a / b:.2f}x" if base else "-"
    print(f"| `{m}` | {n:,} | {med:.2f} s ({lo:.2f}-{hi:.2f}) | {r(med, base[0]) if base else '-'} | {peak:.0f} MiB | {r(peak, base[3]) if base else '-'} | {train:.0f} MiB | {r(train, base[4]) if base else '-'} |")
PY
