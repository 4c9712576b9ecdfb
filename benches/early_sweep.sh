#!/usr/bin/env bash
# Early curves of the transfer and of LoRA on M' from scratch under several peak learning
# rates and warm-ups, for the transfer issue's time goal at 97% of the source: each method
# gets the same grid, and the best of each is compared (a fair race needs both tuned, not
# one). Every run uses the settings of scripts/transfer.sh and scripts/train.sh (data order,
# seed, batch 16, queries cut to 32 tokens, documents to 64) except its learning rate and
# warm-up, stops after STOP steps and measures dev MRR@10 on the first 300 dev pairs every
# EVAL steps. Runs land in runs/early-sweep-MODE-BACKBONE-lrLR-wWARMUP (their settings and
# log are committed; a rerun resumes or skips a finished one). PREFIX=NAME puts them in
# runs/NAME-MODE-... instead (a second grid with other STOP or EVAL beside the first).
#   SPECS="transfer:gemma3:3e-3:0 lora-m:gemma3:1e-3:0" STOP=10 EVAL=2 benches/early_sweep.sh
# Then the summary alone, with the step times of a same-run benches/train_cost.sh:
#   T_TRANSFER=5.53 T_LORA=11.70 Q=0.6804 benches/early_sweep.sh summary [RUN_DIR ...]
# (RUN_DIR: any run directories with a train/log.jsonl, default runs/early-*gemma3*).
set -euo pipefail
cd "$(dirname "$0")/.."

summary() {
  python3 - "$@" <<'PY'
import json, os, sys
sys.path.insert(0, "benches")
from time_to_quality import curve, first_at_or_above

q = float(os.environ.get("Q", "0.6804"))
step_s = {"transfer": float(os.environ.get("T_TRANSFER", "5.53")), "lora-m": float(os.environ.get("T_LORA", "11.70"))}
rows = []
for d in sys.argv[1:]:
    cfg = json.load(open(f"{d}/train/config.json"))
    mode, opt = cfg["mode"], cfg["optim"]
    lr = opt["lr_align"] if mode == "transfer" else opt["lr"]
    points = curve(f"{d}/train/log.jsonl")
    hit = first_at_or_above(points, q)
    # Interpolated crossing where there is an interval; the evaluation step otherwise (an upper bound).
    step = None if hit is None else (hit[1] if hit[1] is not None else hit[0])
    t = None if step is None else step * step_s[mode] / 60
    rows.append((mode, lr, opt["warmup"], d, points, step, t))
print(f"quality {q:.4f}; step times: transfer {step_s['transfer']} s, LoRA {step_s['lora-m']} s")
print("| run | mode | peak lr | warm-up | dev MRR@10 by step | crosses at step | minutes |")
print("|---|---|---:|---:|---|---:|---:|")
for mode, lr, w, d, points, step, t in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
    curve_s = " ".join(f"{s}:{m:.3f}" for s, m in points)
    print(f"| `{d}` | {mode} | {lr:g} | {w} | {curve_s} | {'-' if step is None else f'{step:.1f}'} | {'-' if t is None else f'{t:.2f}'} |")
best = {}
for mode, lr, w, d, points, step, t in rows:
    if t is not None and (mode not in best or t < best[mode][0]):
        best[mode] = (t, d)
if "transfer" in best and "lora-m" in best:
    (tt, td), (lt, ld) = best["transfer"], best["lora-m"]
    print(f"best transfer {td}: {tt:.2f} min; best LoRA {ld}: {lt:.2f} min; ratio {tt / lt:.3f}")
PY
}

if [ "${1:-}" = summary ]; then
  shift
  if [ $# -eq 0 ]; then set -- $(ls -d runs/early-*gemma3* 2>/dev/null); fi
  summary "$@"
  exit 0
fi

data=bench-out/data; mkdir -p "$data"
[ -s "$data/train.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "train"' > "$data/train.jsonl"
[ -s "$data/dev.jsonl" ] || zcat ../shared/data/debian-descriptions.jsonl.gz | grep '"split": "dev"' > "$data/dev.jsonl"
./scripts/fetch-models.sh >/dev/null
cargo build --release --quiet
stop=${STOP:-10}; every=${EVAL:-2}
dirs=()
for spec in ${SPECS:?SPECS=\"MODE:BACKBONE:LR:WARMUP ...\"}; do
  IFS=: read -r mode backbone lr warmup <<<"$spec"
  ./scripts/fetch-models.sh "$backbone" >/dev/null
  out=runs/${PREFIX:-early-sweep}-$mode-$backbone-lr$lr-w$warmup
  dirs+=("$out")
  if [ -f "$out/train/latest" ]; then
    ./target/release/duetdb train --resume --out "$out" --stop-at "$stop" --eval-every "$every" --json
    continue
  fi
  common=(--data "$data/train.jsonl" --group-field source --dev "$data/dev.jsonl" --query-field summary
    --doc-field description --out "$out" --batch 16 --max-doc-tokens 64 --max-query-tokens 32
    --warmup "$warmup" --eval-every "$every" --eval-size 300 --save-every 25 --stop-at "$stop" --json)
  case $mode in
    transfer) ./target/release/duetdb transfer --from checkpoints/smollm2 --backbone "$backbone" --align-init lstsq \
                --steps 600 --lr-align "$lr" "${common[@]}" ;;
    lora-m) ./target/release/duetdb train --mode lora-m --backbone "$backbone" --steps 1200 --lr "$lr" \
              ${GRAD_CACHE:+--grad-cache "$GRAD_CACHE"} "${common[@]}" ;;
    *) echo "unknown mode $mode (transfer or lora-m)" >&2; exit 2 ;;
  esac
done
summary "${dirs[@]}"
