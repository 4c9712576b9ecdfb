#!/usr/bin/env bash
# Checks the crate a crates.io user would get: `cargo package` must hold what the library
# needs (sources, the checkpoint files it embeds, README, LICENSE) and nothing else, stay under
# crates.io's 10 MB, and compile on its own from the unpacked .crate.
#
#   scripts/check-package.sh
#
# The compile is `cargo check --release` in the shared target directory, so after clippy
# (whose dependencies are checked the same way) only the library itself is checked;
# cargo package's own verification builds everything again in debug.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
rm -f "$target"/package/duetdb-*.crate
cargo package -p duetdb --no-verify --allow-dirty --quiet
crate=$(ls "$target"/package/duetdb-*.crate)
size=$(stat -c %s "$crate")
list=$(tar tzf "$crate")
fail() { echo "package check: $*" >&2; exit 1; }
[ "$size" -lt 10000000 ] || fail "$crate is $size bytes, over crates.io's 10 MB"
for need in src/lib.rs README.md LICENSE checkpoints/default/readout.safetensors checkpoints/default/soft_prompts.safetensors checkpoints/general/alignment.safetensors checkpoints/general/prompting_lora.safetensors checkpoints/debian/alignment.safetensors checkpoints/smollm2/prompting_lora.safetensors; do
  grep -q "^duetdb-[^/]*/$need\$" <<<"$list" || fail "$need is missing from $crate"
done
if grep -qE "^duetdb-[^/]*/(runs|benches|fixtures|docs|cli|tests|scripts)/" <<<"$list"; then
  fail "$crate holds files a library user does not need: $(grep -E "/(runs|benches|fixtures|docs|cli|tests|scripts)/" <<<"$list" | head -3 | tr '\n' ' ')"
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tar xzf "$crate" -C "$dir"
root=$(ls -d "$dir"/duetdb-*)
[ -f "$root/Cargo.lock" ] || cp Cargo.lock "$root/"
# A workspace above would claim the unpacked crate; it is built as a crates.io user builds it.
CARGO_TARGET_DIR=$(realpath "$target") cargo check --release --lib --locked --quiet --manifest-path "$root/Cargo.toml"
echo "package ok: $(basename "$crate"), $size bytes, $(wc -l <<<"$list") files, compiles on its own"
