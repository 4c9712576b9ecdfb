#!/usr/bin/env python3
"""hnswlib anchor for benches/ann.sh: same vectors, same M/ef_construction, same ef list.
Build with 2 threads (as duetdb's rayon insert); search single-threaded."""
import json, sys, time
import numpy as np, hnswlib

out, dim, m, efc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = np.fromfile(f"{out}/base.f32", dtype=np.float32).reshape(-1, dim)
queries = np.fromfile(f"{out}/queries.f32", dtype=np.float32).reshape(-1, dim)
gt = np.fromfile(f"{out}/gt.i32", dtype=np.int32).reshape(-1, 10)
t = time.perf_counter()
idx = hnswlib.Index(space="ip", dim=dim)
idx.init_index(max_elements=len(base), M=m, ef_construction=efc)
idx.add_items(base, np.arange(len(base)), num_threads=2)
build_s = time.perf_counter() - t
idx.set_num_threads(1)
curve = []
for ef in [10, 16, 32, 64, 128, 256, 512, 1024]:
    idx.set_ef(ef)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        labels, _ = idx.knn_query(queries, k=10, num_threads=1)
        times.append(time.perf_counter() - t)
    recall = np.mean([len(set(l) & set(g)) / 10 for l, g in zip(labels, gt)])
    qps = len(queries) / sorted(times)[1]
    print(f"hnswlib ef {ef:4}: recall@10 {recall:.4}  QPS {qps:.0}", file=sys.stderr)
    curve.append({"ef": ef, "recall10": float(recall), "qps": qps})
print(json.dumps({"build_s": build_s, "curve": curve, "hnswlib": hnswlib.__version__ if hasattr(hnswlib, "__version__") else "?"}))
