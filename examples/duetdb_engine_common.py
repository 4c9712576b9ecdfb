"""What the two engine examples share: a duetdb database exported to Parquet, a
`duetdb serve` that embeds queries in the database's vector space (through the openai
client), held-in queries, and duetdb's exact top-10 over the exported vectors.

Not an example of its own: see lancedb_from_duetdb.py and qdrant_from_duetdb.py.
"""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import openai
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "duetdb")


def duetdb(*args):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True).stdout


def prepare(work, embedder):
    """Builds a database of fixtures/debian-sample.jsonl (unless one is there) and exports it."""
    db, parquet = os.path.join(work, "db"), os.path.join(work, "docs.parquet")
    if not os.path.exists(db):
        print(f"ingesting fixtures/debian-sample.jsonl with the `{embedder}` embedder ...", flush=True)
        duetdb("ingest", db, os.path.join(ROOT, "fixtures", "debian-sample.jsonl"), "--embedder", embedder)
    print(duetdb("export", db, "--out", parquet).strip())
    return db, parquet


class Serve:
    """`duetdb serve DB` on a free port of 127.0.0.1, stopped with SIGTERM on exit."""

    def __init__(self, db):
        self.proc = subprocess.Popen([BIN, "serve", db, "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        line = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        t.start()
        t.join(300)
        if not line or not line[0].startswith("listening on "):
            self.proc.kill()
            sys.exit(f"duetdb serve did not start: {line}")
        self.url = line[0].split()[-1]
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def embed_queries(self, texts):
        """Query vectors from duetdb's embedder, 32 texts per request (the server's limit)."""
        out = []
        for i in range(0, len(texts), 32):
            r = self.client.embeddings.create(model="duetdb-query", input=texts[i : i + 32])
            out += [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
        return np.asarray(out, dtype=np.float32)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(60)


def held_in_queries(table, n=100):
    """The first sentence (at most 120 characters) of n documents: queries whose answers are in the data."""
    texts = table.column("text").to_pylist()
    step = max(1, len(texts) // n)
    return [t.split(". ")[0][:120] for t in texts[::step][:n]]


def exact_top10(table, queries):
    """duetdb's exact (flat) search: dot products against every exported vector."""
    ids = np.asarray(table.column("id").to_pylist())
    vecs = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    scores = queries @ vecs.T
    return [list(ids[np.argsort(-s, kind="stable")[:10]]) for s in scores]


def agreement(got, want):
    """Share of the exact top-10 ids that the engine also returned in its top 10."""
    return sum(len(set(g) & set(w)) for g, w in zip(got, want)) / sum(len(w) for w in want)


def report(engine, got, want, embedder, n_docs):
    a = agreement(got, want)
    print(json.dumps({"engine": engine, "embedder": embedder, "documents": n_docs, "queries": len(want), "top10_agreement_with_exact": round(a, 4)}))
    return a


def read(parquet):
    return pq.read_table(parquet)
