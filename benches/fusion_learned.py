#!/usr/bin/env python3
"""A learned hybrid fusion, tried offline: logistic regression over each candidate's
features (the engine's two min-max normalised scores, the share of the query's words the
document holds, the same share in its first sentence, ranks, lengths), scored by MRR@10
with 5-fold cross-validation over queries, against the engine's weighted fusion (vector
weight 0.55). Also counts the fused ranking's top-1 misses and how many of them are a
package of the same Debian source.
Input: the pairs file and the candidates that `FEATURE_DUMP=F $(benches/driver.sh feedback_tune) PAIRS.jsonl summary description DB` writes.
Usage: python3 benches/fusion_learned.py PAIRS.jsonl F (needs numpy and scikit-learn)."""
import json, re, sys
import numpy as np
from sklearn.linear_model import LogisticRegression

pairs = [json.loads(l) for l in open(sys.argv[1])]
cands = [json.loads(l)["c"] for l in open(sys.argv[2])]
STOP = set("a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with can from which you your its also has have".split())

def words(t):
    return [w for w in re.split(r"[^0-9a-z]+", t.lower()) if len(w) > 1 and w not in STOP]

def stem(w):
    for suf in ("ing", "es", "s", "ed"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w

docs = [p["description"] for p in pairs]
doc_words = [set(stem(w) for w in words(d)) for d in docs]
first = [set(stem(w) for w in words(re.split(r"(?<=[.!?])\s", d.strip())[0])) for d in docs]
doc_len = [len(words(d)) for d in docs]
NAMES = ["vector (min-max)", "bm25 (min-max)", "cos - best cos", "bm25 / best", "bm25 found it", "log vector rank", "log bm25 rank",
         "query words held", "query words in first sentence", "log doc length", "query words", "query words held (count)"]

def minmax(x, mask):
    if mask.sum() == 0:
        return np.zeros_like(x)
    lo, hi = x[mask].min(), x[mask].max()
    return np.where(mask, (x - lo) / (hi - lo) if hi > lo else 1.0, 0.0)

def build(qi):
    c = cands[qi]
    q = set(stem(w) for w in words(pairs[qi]["summary"]))
    ids = [x[0] for x in c]
    cos = np.array([x[1] for x in c])
    bm = np.array([x[2] if x[2] is not None else np.nan for x in c])
    has = ~np.isnan(bm)
    bmz = np.where(has, bm, 0.0)
    vrank = np.argsort(np.argsort(-cos))
    vn, tn = minmax(cos, vrank < 100), minmax(bmz, has)
    trank = np.where(has, np.argsort(np.argsort(-bmz)), 150)
    held = np.array([len(q & doc_words[d]) / max(1, len(q)) for d in ids])
    held_first = np.array([len(q & first[d]) / max(1, len(q)) for d in ids])
    X = np.stack([vn, tn, cos - cos.max(), bmz / (bmz.max() + 1e-9), has.astype(float), np.log1p(vrank), np.log1p(trank), held, held_first,
                  np.log1p([doc_len[d] for d in ids]), np.full(len(ids), len(q)), held * len(q)], 1)
    return ids, X, np.array([d == qi for d in ids], float), 0.55 * vn + 0.45 * tn

data = [build(i) for i in range(len(pairs))]

def mrr(scores):
    total = 0.0
    for (_, _, y, _), s in zip(data, scores):
        for r, j in enumerate(np.argsort(-s)[:10]):
            if y[j] == 1:
                total += 1 / (r + 1)
                break
    return total / len(data)

print(json.dumps({"weighted_0.55": round(mrr([d[3] for d in data]), 4)}))
folds = np.random.RandomState(0).randint(0, 5, len(data))
for C in [0.1, 1.0, 10.0]:
    for cols in [[0, 1], [0, 1, 7], [0, 1, 7, 8], list(range(len(NAMES)))]:
        preds = [None] * len(data)
        for f in range(5):
            train = [i for i in range(len(data)) if folds[i] != f]
            X = np.concatenate([data[i][1][:, cols] for i in train])
            y = np.concatenate([data[i][2] for i in train])
            model = LogisticRegression(C=C, max_iter=2000).fit(X, y)
            for i in range(len(data)):
                if folds[i] == f:
                    preds[i] = model.decision_function(data[i][1][:, cols])
        print(json.dumps({"C": C, "features": [NAMES[c] for c in cols], "mrr10_cv": round(mrr(preds), 4)}))
misses = [i for i, (ids, _, y, b) in enumerate(data) if y[np.argmax(b)] != 1]
same = sum(1 for i in misses if pairs[data[i][0][int(np.argmax(data[i][3]))]].get("source") == pairs[i].get("source"))
print(json.dumps({"top1_misses": len(misses), "queries": len(data), "missed_for_a_package_of_the_same_source": same}))
