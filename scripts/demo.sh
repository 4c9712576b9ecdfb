#!/usr/bin/env bash
# The main job on a fresh machine: fetch the default model if absent, build, ingest the
# sample Debian descriptions in fixtures/ with the default embedder (PromptEmbedder:
# SmolLM2-135M prompting Gemma3-270M), and query them. Re-running it is cheap: unchanged documents are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-models.sh
cargo build --release --quiet
db=${DUETDB_DEMO_DB:-target/demo.duet}
./target/release/duetdb ingest "$db" fixtures/debian-sample.jsonl
for q in "play music files from the command line" "fortran compiler modules" "input method tables for chinese"; do
  echo "== $q"
  ./target/release/duetdb query "$db" "$q" -k 3
done
./target/release/duetdb stats "$db"
