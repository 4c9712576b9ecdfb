#!/usr/bin/env python3
"""Recovery after kill -9: how long until the next write is acknowledged, and until
`stats` answers, on a database killed in the middle of an ingest, at several sizes.

    python3 benches/recovery.py [N ...]        # default: 5000 20000 100000

For each N it ingests Debian descriptions (from ../shared/data, repeated under new ids
past 60k) with the `hash` embedder, SIGKILLs the ingest once N rows are committed, and
then, each on a fresh copy of the killed database, times (3 runs, median):
- `duetdb ingest DB one.jsonl --json` until its first `committed` line (the first
  acknowledgement), and
- `duetdb stats DB` until it prints,
both with the graph's deferred indexing (today's default) and without it
(DUETDB_DEFER_ABOVE set past any size: the graph is rebuilt before the open returns,
as before 2026-12-04). Needs `cargo build --release` first.
"""
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/duetdb"
DATA = ROOT.parent / "shared/data/debian-descriptions.jsonl.gz"


def documents(n):
    rows = []
    with gzip.open(DATA, "rt") as f:
        for line in f:
            d = json.loads(line)
            if d.get("description"):
                rows.append((d["package"], d["description"]))
    out, i = [], 0
    while len(out) < n:
        pkg, text = rows[i % len(rows)]
        rep = i // len(rows)
        out.append({"id": f"{pkg}#{rep}" if rep else pkg, "text": text if not rep else f"{text} (copy {rep})"})
        i += 1
    return out


def killed_database(n, work):
    """A database SIGKILLed in the middle of an ingest, once at least n rows were committed."""
    data = work / f"docs-{n}.jsonl"
    with open(data, "w") as f:
        for d in documents(n + max(10000, n // 2)):
            f.write(json.dumps(d) + "\n")
    db = work / f"killed-{n}.duet"
    p = subprocess.Popen([BIN, "ingest", db, data, "--embedder", "hash", "--batch", "1000", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    committed = 0
    for line in p.stdout:
        committed = json.loads(line).get("committed", committed)
        if committed >= n:
            p.kill()
            break
    p.wait()
    return db, committed


def timed(cmd, env, until=None):
    """Seconds from the start of `cmd` until a stdout line containing `until` (or its end)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen = None
    for line in p.stdout:
        if until is None or until in line:
            seen = time.monotonic() - t
            break
    p.wait()
    total = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed")
    return seen if seen is not None else total, total


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [5000, 20000, 100000]
    work = Path(tempfile.mkdtemp(prefix="duetdb-recovery-"))
    one = work / "one.jsonl"
    one.write_text(json.dumps({"id": "after-the-crash", "text": "a document written right after the crash"}) + "\n")
    print("| committed rows | mode | first acknowledgement (s) | ingest exits (s) | stats (s) |")
    print("|---:|---|---:|---:|---:|")
    try:
        for n in sizes:
            db, committed = killed_database(n, work)
            for mode, defer in (("graph rebuilt first (before)", str(2**63)), ("deferred indexing (now)", None)):
                env = dict(os.environ)
                if defer:
                    env["DUETDB_DEFER_ABOVE"] = defer
                else:
                    env.pop("DUETDB_DEFER_ABOVE", None)
                acks, exits, stats = [], [], []
                for _ in range(3):
                    copy = work / "copy.duet"
                    shutil.rmtree(copy, ignore_errors=True)
                    shutil.copytree(db, copy)
                    a, e = timed([BIN, "ingest", copy, one, "--json"], env, until='"committed"')
                    acks.append(a)
                    exits.append(e)
                    shutil.rmtree(copy)
                    shutil.copytree(db, copy)
                    s, _ = timed([BIN, "stats", copy], env, until="documents")
                    stats.append(s)
                med = statistics.median
                print(f"| {committed} | {mode} | {med(acks):.2f} ({min(acks):.2f}-{max(acks):.2f}) | {med(exits):.2f} | {med(stats):.2f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
