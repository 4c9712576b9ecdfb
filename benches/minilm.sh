#!/usr/bin/env bash
# duetdb's `minilm` against sentence-transformers' all-MiniLM-L6-v2 on PyTorch (CPU,
# THREADS threads, batch 32, at most 256 tokens), on the same N Debian descriptions of the
# dev split; best of R runs each, interleaved. Needs ../shared/data,
# scripts/fetch-models.sh minilm, and torch + sentence-transformers importable (for
# example PYTHONPATH=/opt/anchors).
#   N=1000 R=3 THREADS=2 benches/minilm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/minilm; mkdir -p "$out"
N=${N:-1000}; R=${R:-3}; THREADS=${THREADS:-2}
python3 - "$N" "$out/texts.jsonl" <<'PY'
import gzip, json, sys
n, path = int(sys.argv[1]), sys.argv[2]
rows = (json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt"))
docs = [r["description"] for r in rows if r["split"] == "dev" and r["description"].strip()][:n]
with open(path, "w") as f:
    for t in docs: f.write(json.dumps({"text": t}) + "\n")
PY
bin=$(benches/driver.sh encoder_bench)
model=$(dirname "$(python3 -c 'import sys; print(sys.argv[1])' "$(ls -d models/all-MiniLM-L6-v2/config.json ~/.cache/duetdb/all-MiniLM-L6-v2/config.json 2>/dev/null | head -1)")")
for r in $(seq "$R"); do
  RAYON_NUM_THREADS=$THREADS "$bin" "$out/texts.jsonl" minilm 256 1 >> "$out/duetdb.jsonl"
  python3 benches/minilm_torch.py "$out/texts.jsonl" "$model" "$THREADS" 1 >> "$out/torch.jsonl"
done
python3 - "$out" "$R" <<'PY'
import json, sys
out, r = sys.argv[1], int(sys.argv[2])
best = lambda f: max(json.loads(l)["docs_per_s"] for l in open(f"{out}/{f}").readlines()[-r:])
d, t = best("duetdb.jsonl"), best("torch.jsonl")
print(f"{'embedder':<40} {'docs/s':>8}")
print(f"{'duetdb minilm':<40} {d:>8.1f}")
print(f"{'sentence-transformers (PyTorch)':<40} {t:>8.1f}")
print(f"ratio duetdb / PyTorch: {d / t:.2f}x")
PY
