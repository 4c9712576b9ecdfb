#!/usr/bin/env bash
# One-query embedding latency (benches/query_profile: Debian-style summaries, one at a
# time) with the packed byte-per-weight fast path against the f32 path it replaces
# (DUETDB_PACKED=0 DUETDB_AVX512=0 DUETDB_FAST_ACTIVATION=0: the code before packing, the
# anchor), AVX-512 against AVX2 for the few-row kernel, then the SIMD gate activation,
# all in this run, interleaved ROUNDS times so that a busy neighbour hits every variant.
# Prints each variant's median p50 and its ratio to the f32 anchor.
#   SPECS="default runs/transfer-gemma3-lstsq" ROUNDS=3 N=60 benches/query_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-models.sh >/dev/null
query_profile=$(benches/driver.sh query_profile)
ROUNDS=${ROUNDS:-3}; N=${N:-60}
for spec in ${SPECS:-default}; do
  declare -A p50=()
  for _ in $(seq "$ROUNDS"); do
    # name, DUETDB_PACKED, DUETDB_AVX512, DUETDB_FAST_ACTIVATION
    for v in "f32 0 0 0" "packed-avx2 1 0 0" "packed-avx512 1 1 0" "all 1 1 1"; do
      set -- $v
      ms=$(DUETDB_PACKED=$2 DUETDB_AVX512=$3 DUETDB_FAST_ACTIVATION=$4 "$query_profile" "$spec" "$N" | sed -E 's/.*p50 ([0-9.]+) ms.*/\1/')
      p50[$1]="${p50[$1]:-} $ms"
    done
  done
  python3 - "$spec" "${p50[f32]}" "${p50[packed-avx2]}" "${p50[packed-avx512]}" "${p50[all]}" <<'PY'
import statistics, sys
spec, runs = sys.argv[1], [list(map(float, a.split())) for a in sys.argv[2:]]
med = [statistics.median(r) for r in runs]
for name, r, m in zip(["f32, AVX2 (anchor)", "packed, AVX2", "packed, AVX-512", "+ SIMD activation"], runs, med):
    print(f"{spec:<28} {name:<20} p50 {m:6.1f} ms  (rounds: {', '.join(f'{x:.1f}' for x in r)})  ratio {m / med[0]:.2f}")
PY
done
