"""Move a duetdb database into Qdrant (local mode, no server) and query it with duetdb's embedder.

    pip install -r examples/requirements.txt && cargo build --release
    python3 examples/qdrant_from_duetdb.py [WORK_DIR] [EMBEDDER]      # EMBEDDER: default (default) or hash

`duetdb export` writes the documents and their vectors to Parquet; each row becomes a
Qdrant point (a UUID derived from the duetdb id, the id, text and metadata as payload).
Queries are embedded by `duetdb serve` (OpenAI's shape, model `duetdb-query`). Prints the
share of duetdb's exact top-10 that Qdrant returns for 100 held-in queries.
"""
import json
import os
import sys
import tempfile
import uuid

from qdrant_client import QdrantClient, models

from duetdb_engine_common import Serve, exact_top10, held_in_queries, prepare, read, report

work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="duetdb-qdrant-")
embedder = sys.argv[2] if len(sys.argv) > 2 else "default"
db, parquet = prepare(work, embedder)
table = read(parquet)
dim = table.schema.field("vector").type.list_size

client = QdrantClient(path=os.path.join(work, "qdrant"))
if client.collection_exists("docs"):
    client.delete_collection("docs")
client.create_collection("docs", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
rows = table.to_pylist()
for i in range(0, len(rows), 256):
    client.upsert(
        "docs",
        points=[
            models.PointStruct(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, "duetdb:" + r["id"])),
                vector=r["vector"],
                payload={"id": r["id"], "text": r["text"], "metadata": json.loads(r["metadata"]) if r["metadata"] else None},
            )
            for r in rows[i : i + 256]
        ],
    )

queries = held_in_queries(table)
with Serve(db) as serve:
    qv = serve.embed_queries(queries)
got = [[p.payload["id"] for p in client.query_points("docs", query=q.tolist(), limit=10, with_payload=["id"]).points] for q in qv]
a = report("qdrant (local mode)", got, exact_top10(table, qv), embedder, table.num_rows)
client.close()
sys.exit(0 if a >= 0.99 else 1)
