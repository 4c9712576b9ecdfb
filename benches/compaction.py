#!/usr/bin/env python3
"""Size over a life of updates: the 10-round update workload, with and without compaction.

1,000 Debian descriptions (../shared/data) are ingested, then updated ten times (each
round rewrites every document's text), with the `hash` embedder (the storage is what is
measured). Three databases:

- `off`: automatic compaction off (DUETDB_AUTO_COMPACT=off), then one `duetdb compact`;
- `auto`: the default (compaction once half of the rows are dead);
- `fresh`: the final round's documents ingested once, the anchor.

Prints the directory size after each step and the ratios to `fresh`. Also times the
compaction of a larger database (N documents, ten rounds of 10% updates).

    python3 benches/compaction.py [N]     # N defaults to 100000
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/debian-descriptions.jsonl.gz"
BIN = ROOT / "target/release/duetdb"


def size(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def run(*args, env=None):
    e = dict(os.environ, **(env or {}))
    subprocess.run([str(BIN), *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)


def descriptions(n):
    out = []
    with gzip.open(DATA, "rt") as f:
        for line in f:
            out.append(json.loads(line)["description"])
            if len(out) == n:
                break
    return out


def write_round(path, texts, r, ids=None):
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            if ids is None or i in ids:
                f.write(json.dumps({"id": f"d{i}", "text": f"{t} (revision {r})", "metadata": {"rev": r}}) + "\n")


def main():
    big = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    work = Path(tempfile.mkdtemp(prefix="duetdb-compaction-"))
    texts = descriptions(1000)
    rounds = [work / f"round{r}.jsonl" for r in range(11)]
    for r, p in enumerate(rounds):
        write_round(p, texts, r)
    print("10-round update workload, 1,000 Debian descriptions, hash embedder")
    fresh = work / "fresh"
    run("ingest", fresh, rounds[10], "--embedder", "hash")
    for name, env in [("off", {"DUETDB_AUTO_COMPACT": "off"}), ("auto", {})]:
        db = work / name
        run("ingest", db, rounds[0], "--embedder", "hash", env=env)
        for p in rounds[1:]:
            run("ingest", db, p, env=env)
        print(f"  {name:5} after 10 rounds: {size(db) / 1e6:6.2f} MB = {size(db) / size(fresh):.2f}x fresh")
        if name == "off":
            t = time.time()
            run("compact", db, env=env)
            print(f"  {name:5} after compact:   {size(db) / 1e6:6.2f} MB = {size(db) / size(fresh):.2f}x fresh ({time.time() - t:.2f} s)")
    print(f"  fresh ingest:           {size(fresh) / 1e6:6.2f} MB")

    print(f"\nCompaction time, {big:,} documents (descriptions repeated under new ids), ten rounds updating 10%")
    texts = descriptions(big)
    texts = (texts * (big // len(texts) + 1))[:big]
    db = work / "big"
    first = work / "big0.jsonl"
    write_round(first, texts, 0)
    t = time.time()
    run("ingest", db, first, "--embedder", "hash", env={"DUETDB_AUTO_COMPACT": "off"})
    print(f"  ingest: {time.time() - t:.1f} s, {size(db) / 1e6:.1f} MB")
    for r in range(1, 11):
        p = work / "bigr.jsonl"
        write_round(p, texts, r, ids=set(range((r - 1) * big // 10, r * big // 10)))
        run("ingest", db, p, env={"DUETDB_AUTO_COMPACT": "off"})
    before = size(db)
    t = time.time()
    run("compact", db)
    print(f"  compact: {time.time() - t:.1f} s, {before / 1e6:.1f} MB -> {size(db) / 1e6:.1f} MB")
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
