#!/usr/bin/env bash
# Builds one benchmark driver (a `harness = false` bench target in benches/) in release
# and prints the path of its executable, so that a script can run it with its own
# arguments:
#
#   bin=$(benches/driver.sh ann_bench) && "$bin" BASE.jsonl QUERIES.jsonl OUT M EFC
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --no-run --quiet --bench "$1" --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])
' "$1"
