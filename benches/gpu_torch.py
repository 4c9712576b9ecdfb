#!/usr/bin/env python3
"""PyTorch anchor of benches/gpu_check.sh: Hugging Face transformers' Gemma3 text model of
Gemma3-270M's shape with random weights, batches of 64 x 83 positions on the GPU, in f32
and bf16 (as the duetdb driver does), documents/s. Prints one JSON line; exits non-zero
where torch, transformers or a GPU is missing.
    python3 benches/gpu_torch.py [LAYERS] [BATCHES]
"""
import json
import sys
import time

import torch
from transformers import Gemma3TextConfig, Gemma3TextModel

layers = int(sys.argv[1]) if len(sys.argv) > 1 else 18
batches = int(sys.argv[2]) if len(sys.argv) > 2 else 50
if not torch.cuda.is_available():
    sys.exit("no CUDA device for torch")
cfg = Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                       rope_theta=1_000_000.0, max_position_embeddings=32768)
rows, length = 64, 83
ids = torch.randint(0, cfg.vocab_size, (rows, length), device="cuda")
speed = {}
for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
    model = Gemma3TextModel(cfg).to("cuda", dtype).eval()
    with torch.inference_mode():
        for _ in range(2):
            model(input_ids=ids).last_hidden_state.mean(1).cpu()
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(batches):
            model(input_ids=ids).last_hidden_state.mean(1).cpu()
        s = time.time() - t
    speed[name] = {"docs_per_s": rows * batches / s, "tokens_per_s": rows * batches * length / s}
    del model
print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "layers": layers, "speed": speed}))
