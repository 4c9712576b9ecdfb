#!/usr/bin/env python3
"""Writes fixtures/debian-sample.jsonl from ../shared/data (run from the repo root).

Every 6th package of the `dev` split, in the ingest format of `duetdb ingest`:
{"id": package, "text": description, "metadata": {"summary", "source"}}. Tests and the
README's main job use it; they never read ../shared.
"""
import gzip, json, sys

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/debian-descriptions.jsonl.gz"
dev = [json.loads(l) for l in gzip.open(src, "rt") if '"split": "dev"' in l]
with open("fixtures/debian-sample.jsonl", "w") as out:
    for d in dev[::6]:
        out.write(json.dumps({"id": d["package"], "text": d["description"],
                              "metadata": {"summary": d["summary"], "source": d["source"]}}) + "\n")
