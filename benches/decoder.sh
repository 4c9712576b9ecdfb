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
MODEL=${MODEL:-SmolLM2-135M-Instruct.Q4_1.gguf}; N=${N:-256}; BUDGET=${BUDGET:-2048}; MAX_TOKENS=${MAX_TOKENS:-256}
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
"$decoder_bench" "models/$MODEL" "$out/texts.jsonl" "$out/plan.json" "$BUDGET" "$MAX_TOKENS" > "$out/duetdb.json"
PYTHONPATH=/opt/anchors python3 benches/decoder_torch.py models "$MODEL" "$out/plan.json" "$THREADS" > "$out/torch.json"
if PYTHONPATH=/opt/llamacpp python3 -c "import llama_cpp" 2>/dev/null; then
  PYTHONPATH=/opt/llamacpp python3 benches/decoder_llamacpp.py "models/$MODEL" "$out/plan.json" "$THREADS" "$BUDGET" > "$out/llamacpp.json"
else
  echo '{"median": null}' > "$out/llamacpp.json"; echo "llama-cpp-python not installed: no llama.cpp anchor" >&2
fi
python3 - "$out" "$MODEL" "$THREADS" <<'PY'
import json, sys
out, model, threads = sys.argv[1:]
d, t, l = (json.load(open(f"{out}/{n}.json")) for n in ("duetdb", "torch", "llamacpp"))
print(f"{model}: {d['tokens']} real tokens of Debian descriptions in {d['batches']} batches (budget {d['budget']}), {threads} threads")
print(f"f32 matmul peak {d['matmul_gflops']:.1f} GFLOP/s -> bound {d['bound_tokens_per_s']:.0f} tokens/s at 2 x {d['matmul_params']/1e6:.1f}M FLOPs/token")
import os
prec = os.environ.get("DUETDB_PRECISION", "auto")
print(f"duetdb ({prec:<4}), whole     {d['median']:8.0f} tokens/s  ({d['median']/d['bound_tokens_per_s']:.0%} of the f32 bound)")
print(f"duetdb ({prec:<4}), embedding {d['tail_median']:8.0f} tokens/s  ({d['tail_median']/d['bound_tokens_per_s']:.0%} of the f32 bound; last 5 positions, no padding)")
print(f"PyTorch transformers f32  {t['median']:8.0f} tokens/s  -> duetdb/PyTorch   {d['median']/t['median']:.2f}x whole, {d['tail_median']/t['median']:.2f}x embedding")
if l["median"]:
    print(f"llama.cpp (quantised)     {l['median']:8.0f} tokens/s  -> duetdb/llama.cpp {d['median']/l['median']:.2f}x")
PY
