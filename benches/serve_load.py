"""Load on a running `duetdb serve`: C concurrent clients, R requests each, over
keep-alive connections; prints one JSON line of requests/s, documents/s, p50/p99 ms and
errors. Driven by benches/serve.sh.

    python3 benches/serve_load.py URL KIND CLIENTS REQUESTS DOCS_PER_REQUEST TEXTS.jsonl ID_PREFIX
KIND: ingest (POST /ingest) or embed (POST /v1/embeddings, model duetdb-query).
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

url, kind, clients, requests, per, texts_file, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
texts = [json.loads(l)["text"] for l in open(texts_file)]
u = urllib.parse.urlparse(url)
lat, errors, lock = [], [], threading.Lock()
start = threading.Barrier(clients + 1)


def client(c):
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    start.wait()
    for r in range(requests):
        n = (c * requests + r) * per
        if kind == "ingest":
            body = [{"id": f"{prefix}-{n + i}", "text": texts[(n + i) % len(texts)]} for i in range(per)]
            path = "/ingest"
        else:
            body = {"model": "duetdb-query", "input": [texts[(n + i) % len(texts)][:200] for i in range(per)], "encoding_format": "float"}
            path = "/v1/embeddings"
        t = time.perf_counter()
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except Exception as e:  # counted, never hidden
            ok, conn = False, http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        dt = time.perf_counter() - t
        with lock:
            lat.append(dt)
            if not ok:
                errors.append(r)


threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
for t in threads:
    t.start()
start.wait()
t0 = time.perf_counter()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
lat.sort()
n = len(lat)
print(json.dumps({
    "kind": kind, "clients": clients, "requests": n, "docs": n * per, "seconds": round(wall, 3),
    "requests_per_s": round(n / wall, 2), "docs_per_s": round(n * per / wall, 2),
    "p50_ms": round(1000 * lat[n // 2], 2), "p99_ms": round(1000 * lat[min(n - 1, int(n * 0.99))], 2), "errors": len(errors),
}))
