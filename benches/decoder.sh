#!/usr/bin/env bash
# Decoder throughput: duetdb's fast-path forward against PyTorch `transformers` and
# llama.cpp on the same model, texts, batches and thread count, plus this machine's f32
# matmul peak as the physical limit. Needs ../shared/data, the model
# (scripts/fetch-models.sh), and `pip install --target /opt/anchors torch transformers
# gguf accelerate` and `pip install --target /opt/llamacpp llama-cpp-python`.
#   MODEL=SmolLM2-135M-Instruct.Q4_1.gguf N=256 BUDGET=2048 MAX_TOKENS=256 benches/decoder.sh
#   MODEL=gemma-3-270m-q4_k_m.gguf TOKENIZER=models/gemma3-tokenizer.json benches/decoder.sh   (the default's M)
# duetdb's forward runs as documents are embedded: DUETDB_PRECISION=f32 for the f32 path,
# auto (the default) for bfloat16 on CPUs with AVX-512 BF16. Two duetdb rows: the whole
# forward over the padded batches (every position's output, as PyTorch computes it), and
# the embedding forward (each row's last 5 positions read, padding skipped). The f32
# peak is measured before each round; the bound uses their median.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/decoder; mkdir -p "$out"
MODEL=${MODEL:-SmolLM2-135M-Instruct.Q4_1.gguf}; N=${N:-256}; BUDGET=${BUDGET:-2048}; MAX_TOKENS=${MAX_TOKENS:-256}; R=${R:-2}
THREADS=$(nproc)
python3 - "$N" "$out" <<'PY'
import gzip, json, sys
n, out = int(sys.argv[1]), sys.argv[2]
dev = [json.loads(l) for l in gzip.open("../shared/data/debian-descriptions.jsonl.gz", "rt") if '"split": "dev"' in l]
with open(f"{out}/texts.jsonl", "w") as f:
    for d in [d for d in dev if d["description"].strip()][:n]:
        f.write(json.dumps({"text": d["description"]}) + "\n")
PY
decoder_bench=$(benches/driver.sh decoder_bench)
# R rounds, duetdb then PyTorch in each: on a shared machine the speed moves by up to
# 1.5x within minutes, so each round's ratios are taken within the round.
for r in $(seq "$R"); do
  "$decoder_bench" "models/$MODEL" "$out/texts.jsonl" "$out/plan.json" "$BUDGET" "$MAX_TOKENS" > "$out/duetdb-$r.json"
  PYTHONPATH=/opt/anchors python3 benches/decoder_torch.py models "$MODEL" "$out/plan.json" "$THREADS" > "$out/torch-$r.json"
done
if PYTHONPATH=/opt/llamacpp python3 -c "import llama_cpp" 2>/dev/null; then
  PYTHONPATH=/opt/llamacpp python3 benches/decoder_llamacpp.py "models/$MODEL" "$out/plan.json" "$THREADS" "$BUDGET" > "$out/llamacpp.json"
else
  echo '{"median": null}' > "$out/llamacpp.json"; echo "llama-cpp-python not installed: no llama.cpp anchor" >&2
fi
python3 - "$out" "$MODEL" "$THREADS" "$R" <<'PY'
import json, os, statistics, sys
out, model, threads, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ds = [json.load(open(f"{out}/duetdb-{r}.json")) for r in range(1, rounds + 1)]
ts = [json.load(open(f"{out}/torch-{r}.json")) for r in range(1, rounds + 1)]
l = json.load(open(f"{out}/llamacpp.json"))
d = ds[0]
prec = os.environ.get("DUETDB_PRECISION", "auto")
print(f"{model}: {d['tokens']} real tokens of Debian descriptions in {d['batches']} batches (budget {d['budget']}), {threads} threads, {rounds} rounds")
print(f"duetdb ({prec}): whole = the forward over the padded batches; embedding = each row's last 5 positions, no padding")
print(f"{'round':>5} {'peak GFLOP/s':>12} {'bound':>6} {'whole':>6} {'embedding':>9} {'PyTorch f32':>11} {'whole/bound':>11} {'emb/bound':>9} {'whole/PT':>8} {'emb/PT':>6}")
rows = []
for r, (d, t) in enumerate(zip(ds, ts), 1):
    b = d["bound_tokens_per_s"]
    row = (d["median"] / b, d["tail_median"] / b, d["median"] / t["median"], d["tail_median"] / t["median"])
    rows.append(row)
    print(f"{r:>5} {d['matmul_gflops']:>12.1f} {b:>6.0f} {d['median']:>6.0f} {d['tail_median']:>9.0f} {t['median']:>11.0f} {row[0]:>11.0%} {row[1]:>9.0%} {row[2]:>7.2f}x {row[3]:>5.2f}x")
med = [statistics.median(c) for c in zip(*rows)]
print(f"{'median':>5} {'':>12} {'':>6} {'':>6} {'':>9} {'':>11} {med[0]:>11.0%} {med[1]:>9.0%} {med[2]:>7.2f}x {med[3]:>5.2f}x")
if l["median"]:
    print(f"llama.cpp (quantised) {l['median']:.0f} tokens/s -> duetdb/llama.cpp {ds[-1]['median']/l['median']:.2f}x whole")
PY
