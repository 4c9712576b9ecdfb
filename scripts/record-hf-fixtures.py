#!/usr/bin/env python3
"""Records Hugging Face `transformers` (PyTorch, CPU, f32) outputs on our GGUF files into
fixtures/, as an independent reference for tests/hf_reference.rs.

    PYTHONPATH=/opt/anchors python3 scripts/record-hf-fixtures.py [smollm2|qwen2.5]

Needs `pip install torch transformers gguf`. transformers dequantises the GGUF itself and
tokenizes with its own GGUF tokenizer converter, so both the ids and the hidden states
are independent of our code. Stored: token ids and the final-normed last-layer hidden
states of every position, rounded to 6 significant digits.
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5": "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
}
SENTENCES = [
    "The capital of France is",
    "ripgrep recursively searches directories for a regex pattern while respecting your gitignore.",
    "Instruct: Represent this search query for finding software packages\nQuery: play music from the command line",
    "Don't panic: 42 tests, 3 failures, 1.5 seconds.",
]

name = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained("models", gguf_file=MODELS[name])
model = AutoModelForCausalLM.from_pretrained("models", gguf_file=MODELS[name], torch_dtype=torch.float32)
model.eval()
out = {"model": MODELS[name], "transformers": __import__("transformers").__version__, "torch": torch.__version__, "cases": []}
for s in SENTENCES:
    ids = tok(s, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        r = model(torch.tensor([ids]), output_hidden_states=True)
    hidden = r.hidden_states[-1][0]  # after the final norm
    out["cases"].append({
        "text": s,
        "ids": ids,
        "hidden": [[float(f"{x:.6g}") for x in row] for row in hidden.tolist()],
        "next_token": tok.decode([int(r.logits[0, -1].argmax())]),
    })
path = f"fixtures/hf-{name}.json"
json.dump(out, open(path, "w"))
print(f"wrote {path}: {[c['next_token'] for c in out['cases']]}")
