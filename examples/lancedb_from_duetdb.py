"""Move a duetdb database into LanceDB and query it with duetdb's embedder.

    pip install -r examples/requirements.txt && cargo build --release
    python3 examples/lancedb_from_duetdb.py [WORK_DIR] [EMBEDDER]     # EMBEDDER: default (default) or hash

`duetdb export` writes the documents and their vectors to Parquet; LanceDB (embedded, no
server) reads it through pyarrow as a table. Queries are embedded by `duetdb serve`
(OpenAI's shape, model `duetdb-query`), so they land in the same space as the documents.
Prints the share of duetdb's exact top-10 that LanceDB returns for 100 held-in queries.
"""
import os
import sys
import tempfile

import lancedb

from duetdb_engine_common import Serve, exact_top10, held_in_queries, prepare, read, report

work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="duetdb-lancedb-")
embedder = sys.argv[2] if len(sys.argv) > 2 else "default"
db, parquet = prepare(work, embedder)
table = read(parquet)

lance = lancedb.connect(os.path.join(work, "lancedb"))
docs = lance.create_table("docs", table, mode="overwrite")  # the vector column is fixed_size_list<float32>[dim]

queries = held_in_queries(table)
with Serve(db) as serve:
    qv = serve.embed_queries(queries)
# No ANN index on 505 rows: LanceDB searches flat; cosine equals dot on unit vectors.
got = [docs.search(q).metric("cosine").limit(10).to_arrow().column("id").to_pylist() for q in qv]
a = report("lancedb", got, exact_top10(table, qv), embedder, table.num_rows)
sys.exit(0 if a >= 0.99 else 1)
