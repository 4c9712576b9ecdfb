#!/usr/bin/env python3
"""llama.cpp anchor (llama-cpp-python, embedding mode) for benches/decoder.sh: the same
GGUF, run as llama.cpp runs it (quantised weights, its own kernels), the same texts in
the same batches, the same thread count. Token ids are turned back into text and
re-tokenized by llama.cpp; the rate counts llama.cpp's own tokens."""
import json, statistics, sys, time
from llama_cpp import Llama

gguf, plan, threads, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batches = json.load(open(plan))["batches"]
llm = Llama(model_path=gguf, embedding=True, n_threads=threads, n_threads_batch=threads, n_ctx=max(budget, 512),
            n_batch=max(budget, 512), n_ubatch=max(budget, 512), verbose=False)
texts = [[llm.detokenize(s).decode("utf-8", "replace") for s in b] for b in batches]
tokens = sum(len(llm.tokenize(t.encode(), add_bos=False, special=False)) for b in texts for t in b)
def run():
    t0 = time.perf_counter()
    for b in texts:
        llm.embed(b, normalize=False, truncate=True)
    return tokens / (time.perf_counter() - t0)
run()
rates = [run() for _ in range(3)]
print(f"llama.cpp: {tokens} tokens, tokens/s {[round(r) for r in rates]}, median {statistics.median(rates):.0f}", file=sys.stderr)
print(json.dumps({"tokens": tokens, "tokens_per_s": rates, "median": statistics.median(rates)}))
