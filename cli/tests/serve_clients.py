"""Real clients against a real `duetdb serve` on 127.0.0.1: the `openai` Python client,
curl in text-embeddings-inference's shape, and plain HTTP for the database's own routes.

Run by cli/tests/serve.rs, one check per call:
    python3 serve_clients.py DUETDB_BIN FIXTURES_DIR CHECK
CHECK is one of: openai, default-model, limits, crud, drain, kill. Needs `pip install -r
cli/tests/requirements.txt`. Every server is started here on port 0, and stopped (or
killed) here, each step bounded in time.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN, FIXTURES, CHECK = sys.argv[1], sys.argv[2], sys.argv[3]
KEY = "test-key-0123456789"
SAMPLE = os.path.join(FIXTURES, "debian-sample.jsonl")


def run(*args, timeout=120):
    r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"duetdb {' '.join(args)} failed: {r.stderr}"
    return r.stdout


class Server:
    """`duetdb serve DB --addr 127.0.0.1:0 ...`; the URL comes from its first line."""

    def __init__(self, db, *args, key=KEY):
        cmd = [BIN, "serve", db, "--addr", "127.0.0.1:0", *args]
        if key:
            cmd += ["--api-key", key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = []
        t = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()))
        t.start()
        t.join(120)
        assert first and first[0].startswith("listening on "), f"serve did not start: {first} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.url = first[0].split()[-1]

    def stop(self):
        """SIGTERM: in-flight requests are answered, then the database is closed."""
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, f"serve exited with {self.proc.returncode}: {err}"
        assert "database closed" in out, out

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


def http(method, url, body=None, key=KEY, raw=None, headers=None):
    """Returns (status, parsed JSON body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expect_error(got, status, words):
    """An error answer: the status, and a one-line message that names the problem."""
    code, body = got
    assert code == status, f"expected {status}, got {code}: {body}"
    msg = body["error"]["message"]
    assert msg and "\n" not in msg, body
    assert words.lower() in msg.lower(), f"`{words}` not in `{msg}`"
    print(f"  {status}: {msg}")


def hash_db(tmp):
    db = os.path.join(tmp, "db")
    run("ingest", db, SAMPLE, "--embedder", "hash")
    return db


def cli_vectors(spec, kind, texts):
    return json.loads(run("embed", "--embedder", spec, "--kind", kind, "--json", *texts))["embeddings"]


def max_diff(a, b):
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b))
    return max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))


def same_vectors_as_cli(server, spec):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    texts = ["search files for a regular expression", "a library for parsing JSON", "play music files"]
    for model, kind in (("duetdb-query", "query"), ("duetdb-passage", "passage")):
        want = cli_vectors(spec, kind, texts)
        # The client asks for base64 unless told otherwise, and decodes it itself.
        for fmt in (None, "float"):
            args = {"encoding_format": fmt} if fmt else {}
            r = client.embeddings.create(model=model, input=texts, **args)
            got = [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
            d = max_diff(got, want)
            assert d <= 1e-6, f"{model} {fmt}: differs from `duetdb embed` by {d}"
            print(f"  openai {model} encoding={fmt or 'base64 (client default)'}: {len(got)} vectors, max |diff| vs duetdb embed {d:.2e}")
    # TEI's shape, with curl.
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "120", "-H", f"Authorization: Bearer {KEY}", "-d", json.dumps({"inputs": texts}), server.url + "/embed"],
        capture_output=True, text=True, check=True,
    ).stdout
    d = max_diff(json.loads(out), cli_vectors(spec, "query", texts))
    assert d <= 1e-6, d
    print(f"  curl /embed (TEI shape): max |diff| {d:.2e}")
    return client


def check_openai():
    import openai

    with tempfile.TemporaryDirectory() as tmp:
        s = Server(hash_db(tmp))
        try:
            same_vectors_as_cli(s, "hash")
            # (The client refuses to send no key at all: check_limits covers that with plain HTTP.)
            for key, what in (("wrong", "wrong API key"),):
                c = openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)
                try:
                    c.embeddings.create(model="duetdb-query", input="x")
                    raise AssertionError("no key accepted")
                except openai.AuthenticationError as e:
                    assert e.status_code == 401 and what in str(e), e
                    print(f"  401 through the openai client: {what}")
            c = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
            try:
                c.embeddings.create(model="text-embedding-3-small", input="x")
                raise AssertionError("unknown model accepted")
            except openai.BadRequestError as e:
                assert e.status_code == 400 and "duetdb-query" in str(e), e
                print("  400 through the openai client: unknown model")
        finally:
            s.stop()


def check_default_model():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "db"), "--embedder", "default")
        try:
            same_vectors_as_cli(s, "default")
        finally:
            s.stop()


def check_limits():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(hash_db(tmp), "--max-text-bytes", "1000", "--max-documents", "5")
        u = s.url
        try:
            assert http("GET", u + "/health", key=None) == (200, {"status": "ok"})
            expect_error(http("POST", u + "/embed", {"inputs": "x"}, key=None), 401, "missing API key")
            expect_error(http("POST", u + "/embed", {"inputs": "x"}, key="nope"), 401, "wrong API key")
            expect_error(http("GET", u + "/stats", key=None), 401, "missing API key")
            expect_error(http("POST", u + "/embed", {"inputs": ["t"] * 33}), 413, "33 inputs")
            expect_error(http("POST", u + "/v1/embeddings", {"model": "duetdb-query", "input": ["t"] * 33}), 413, "limit of 32")
            expect_error(http("POST", u + "/embed", raw=b'{"inputs": "' + b"a" * (2 * 1024 * 1024) + b'"}'), 413, "length limit")
            expect_error(http("POST", u + "/embed", {"inputs": "a " * 600}), 413, "limit of 1000")
            expect_error(http("POST", u + "/embed", {"inputs": ["fine", "  "]}), 400, "input 1 is empty")
            expect_error(http("POST", u + "/embed", {"inputs": []}), 400, "empty")
            expect_error(http("POST", u + "/embed", raw=b"{not json"), 400, "invalid JSON")
            expect_error(http("POST", u + "/embed", raw=b"\xff\xfe"), 400, "invalid JSON")
            expect_error(http("POST", u + "/v1/embeddings", {"model": "duetdb-query", "input": "x", "encoding_format": "int8"}), 400, "encoding_format")
            expect_error(http("POST", u + "/v1/embeddings", {"model": "duetdb-query", "input": "x", "dimensions": 12}), 400, "dimensions")
            expect_error(http("POST", u + "/query", {"text": "regex", "k": 0}), 400, "k (hits per query)")
            expect_error(http("POST", u + "/query", {"text": "regex", "k": 10**9}), 400, "k (hits per query)")
            expect_error(http("POST", u + "/query", {"text": "regex", "mode": "psychic"}), 400, "psychic")
            expect_error(http("POST", u + "/query", {"text": "regex", "colour": 1}), 400, "colour")
            expect_error(http("POST", u + "/query", {"text": "regex", "where": "year >= "}), 400, "position 9")
            expect_error(http("POST", u + "/ingest", [{"id": f"d{i}", "text": "t"} for i in range(6)]), 413, "limit of 5")
            expect_error(http("POST", u + "/ingest", [{"id": "a", "text": ""}]), 400, "empty text")
            expect_error(http("POST", u + "/ingest", raw=b'{"id": "a", "text": "ok"}\n{"id": 5}\n'), 400, "line 2")
            expect_error(http("GET", u + "/documents/nothing-here"), 404, "no document with id `nothing-here`")
            expect_error(http("DELETE", u + "/documents/nothing-here"), 404, "no document")
            expect_error(http("GET", u + "/no/such/route"), 404, "no such route")
        finally:
            s.stop()


def check_crud():
    with tempfile.TemporaryDirectory() as tmp:
        db = hash_db(tmp)
        s = Server(db)
        u = s.url
        try:
            code, st = http("GET", u + "/stats")
            assert code == 200 and st["documents"] == 505, st
            first = json.loads(open(SAMPLE).readline())
            code, r = http("POST", u + "/query", {"text": first["text"], "k": 3})
            assert code == 200 and r["hits"][0]["id"] == first["id"], r
            docs = [{"id": "new-1", "text": "a tool that converts spreadsheets into charts", "metadata": {"lang": "en"}}, {"id": "new-2", "text": "a daemon that rotates log files every night"}]
            code, r = http("POST", u + "/ingest", docs)
            assert code == 200 and r == {"committed": 2, "written": 2, "unchanged": 0}, r
            code, r = http("POST", u + "/ingest", raw=(json.dumps({"id": "new-3", "text": "an editor for subtitles"}) + "\n").encode())
            assert code == 200 and r["written"] == 1, r
            code, r = http("POST", u + "/ingest", docs[:1])
            assert r == {"committed": 1, "written": 0, "unchanged": 1}, r
            code, d = http("GET", u + "/documents/new-1")
            assert code == 200 and d == docs[0], d
            code, r = http("POST", u + "/query", {"text": "rotate log files", "k": 5, "mode": "hybrid"})
            assert r["hits"][0]["id"] == "new-2", r
            code, r = http("POST", u + "/query", {"text": "charts", "k": 5, "mode": "text", "filters": {"lang": "en"}})
            assert [h["id"] for h in r["hits"]] == ["new-1"], r
            code, r = http("POST", u + "/query", {"text": "a tool", "k": 50, "where": "lang in (en, fr) or not exists(lang) and id = none"})
            assert code == 200 and [h["id"] for h in r["hits"]] == ["new-1"], r
            assert http("DELETE", u + "/documents/new-2") == (200, {"deleted": 1})
            code, r = http("POST", u + "/query", {"text": "a daemon that rotates log files every night", "k": 20})
            assert "new-2" not in [h["id"] for h in r["hits"]], r
            assert http("GET", u + "/stats")[1]["documents"] == 507
            print("  query, ingest (array and JSON Lines), upsert, get, filtered text query, delete, stats")
        finally:
            s.stop()
        # Closed cleanly by SIGTERM: the CLI opens it and sees what the server wrote.
        assert json.loads(run("get", db, "new-3", "--json"))["text"] == "an editor for subtitles"
        run("check", db)
        print("  after SIGTERM: the database opens, holds the server's writes and checks clean")


def check_drain():
    """SIGTERM while ingests are in flight: each is answered, durable, then the server exits."""
    with tempfile.TemporaryDirectory() as tmp:
        db = hash_db(tmp)
        s = Server(db)
        results = {}

        def client(c):
            docs = [{"id": f"t{c}-{i}", "text": f"client {c} document {i} on subject {i % 13}"} for i in range(1000)]
            results[c] = http("POST", s.url + "/ingest", docs)[0]

        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        s.stop()  # SIGTERM, then asserts a clean exit and "database closed"
        for t in threads:
            t.join(60)
        assert results == {c: 200 for c in range(8)}, results
        ids = {json.loads(l)["id"] for l in run("dump", db).splitlines()}
        assert all(f"t{c}-{i}" in ids for c in range(8) for i in range(1000))
        print("  SIGTERM with 8 ingests of 1,000 documents in flight: all answered 200, all durable, clean exit")


def check_kill():
    """kill -9 during concurrent ingests loses nothing the server acknowledged."""
    with tempfile.TemporaryDirectory() as tmp:
        db = hash_db(tmp)
        s = Server(db)
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def client(c):
            n = 0
            while not stop.is_set():
                docs = [{"id": f"c{c}-{n + i}", "text": f"client {c} document {n + i} about topic {(n + i) % 17}"} for i in range(20)]
                n += 20
                try:
                    code, _ = http("POST", s.url + "/ingest", docs)
                except Exception:
                    return  # the server died mid-request: not acknowledged
                if code == 200:
                    with lock:
                        acked.update((d["id"], d["text"]) for d in docs)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while len(acked) < 400 and time.time() < deadline:
            time.sleep(0.01)
        s.kill()
        stop.set()
        for t in threads:
            t.join(60)
        assert len(acked) >= 400, f"only {len(acked)} acknowledged before the kill"
        dumped = {}
        for line in run("dump", db).splitlines():
            d = json.loads(line)
            dumped[d["id"]] = d["text"]
        lost = [i for i, t in acked.items() if dumped.get(i) != t]
        assert not lost, f"{len(lost)} acknowledged documents lost, e.g. {lost[:3]}"
        run("check", db)
        print(f"  kill -9 after {len(acked)} acknowledged documents from 8 clients: none lost ({len(dumped) - 505} new in the database), check clean")


{"openai": check_openai, "default-model": check_default_model, "limits": check_limits, "crud": check_crud, "drain": check_drain, "kill": check_kill}[CHECK]()
print(f"ok: {CHECK}")
