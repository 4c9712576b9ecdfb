#!/usr/bin/env python3
"""The anchor for `minilm`: sentence-transformers' all-MiniLM-L6-v2 on PyTorch, CPU, the
same texts, batch size and maximum length (256 tokens) as `encoder_bench`.

    PYTHONPATH=/opt/anchors python3 benches/minilm_torch.py TEXTS.jsonl MODEL_DIR [THREADS=2] [REPEAT=1]

Prints one JSON line: {"docs", "seconds", "docs_per_s", "threads"} (best of REPEAT runs
after a warm-up batch). `encode` sorts texts by length itself, as `minilm` does.
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

texts = [json.loads(l)["text"] for l in open(sys.argv[1])]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 1
torch.set_num_threads(threads)
model = SentenceTransformer(sys.argv[2], device="cpu")
model.max_seq_length = 256
model.encode(texts[:32], batch_size=32)
best = float("inf")
for _ in range(repeat):
    t = time.time()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    best = min(best, time.time() - t)
print(json.dumps({"docs": len(texts), "seconds": best, "docs_per_s": len(texts) / best, "threads": threads}))
