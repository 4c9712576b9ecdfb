#!/usr/bin/env bash
# End to end, what a user does when a new backbone comes out: a database of Debian package
# descriptions built with `smollm2` (the SmolLM2 default of before); `duetdb transfer` trains a new alignment
# into the new backbone (scripts/transfer.sh, skipped when its run directory already holds
# a checkpoint: its newest saved state is used); `duetdb reindex DB --embedder DIR` moves
# the live database onto it; quality (MRR@10, summaries as queries) before, after, and
# after rolling back. Needs ../shared/data.
#   BACKBONE=gemma3 INIT=lstsq N=300 MODE=vector examples/transfer_debian.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BACKBONE=${BACKBONE:-gemma3}; INIT=${INIT:-lstsq}
dir=runs/transfer-$BACKBONE-$INIT
[ -f "$dir/config.json" ] || ./scripts/transfer.sh "$BACKBONE" "$INIT"
./scripts/fetch-models.sh "$BACKBONE" >/dev/null
FROM=smollm2 TO="$dir" MODE=${MODE:-vector} N=${N:-300} exec examples/reindex_debian.sh
