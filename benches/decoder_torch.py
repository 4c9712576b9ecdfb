#!/usr/bin/env python3
"""PyTorch `transformers` anchor for benches/decoder.sh: the same GGUF (dequantised to
f32), the same batches of token ids (left-padded, attention mask), the same thread
count; hidden states only (no LM head), as duetdb computes."""
import json, statistics, sys, time
import torch
from transformers import AutoModelForCausalLM

models_dir, gguf, plan, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(models_dir, gguf_file=gguf, dtype=torch.float32).model.eval()
batches = json.load(open(plan))["batches"]
tokens = sum(len(s) for b in batches for s in b)
tensors = []
for b in batches:
    t = max(len(s) for s in b)
    ids = torch.tensor([[0] * (t - len(s)) + s for s in b])
    mask = torch.tensor([[0] * (t - len(s)) + [1] * len(s) for s in b])
    tensors.append((ids, mask))
def run():
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in tensors:
            model(input_ids=ids, attention_mask=mask)
    return tokens / (time.perf_counter() - t0)
run()
rates = [run() for _ in range(3)]
print(f"pytorch {torch.__version__}: tokens/s {[round(r) for r in rates]}, median {statistics.median(rates):.0f}", file=sys.stderr)
print(json.dumps({"tokens_per_s": rates, "median": statistics.median(rates), "torch": torch.__version__}))
