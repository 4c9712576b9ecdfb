#!/usr/bin/env bash
# Fetches the training and dev data beyond the Debian descriptions (issue 30) and builds
# the per-source splits in bench-out/corpus/ (see docs/data.md):
#   python    docstrings of well-known Python packages (wheels) and of CPython's standard
#             library (Debian's libpython3.11-stdlib): summary line -> the rest
#   rust      `///` docs of the crates Cargo.lock pins: first sentence -> the rest
#   glossary  FOLDOC and the Jargon File (Debian's dict-foldoc, dict-jargon): term -> entry
#   debian    the Debian descriptions (../shared/data): summary -> description
# Every download is pinned (scripts/data-sources.txt; the crates by Cargo.lock's
# checksums) and checked by SHA-256. Unix manual pages and tldr pages are never used: they
# are reserved for evaluation.
#   scripts/fetch-data.sh            # then: ls bench-out/corpus
set -euo pipefail
cd "$(dirname "$0")/.."
dl=bench-out/corpus/download; mkdir -p "$dl/wheel" "$dl/deb"
while read -r kind name version sha; do
  case "$kind" in ''|'#'*) continue ;; esac
  if [ "$kind" = wheel ]; then
    f=$(ls "$dl/wheel/" 2>/dev/null | grep -i "^${name}-${version}-" || true)
    if [ -z "$f" ]; then
      pip download --quiet --no-deps --only-binary :all: --python-version 3.12 --platform any -d "$dl/wheel" "$name==$version"
      f=$(ls "$dl/wheel/" | grep -i "^${name}-${version}-")
    fi
    path="$dl/wheel/$f"
  else
    path="$dl/deb/${name}_${version}.deb"
    if [ ! -s "$path" ]; then
      (cd "$dl/deb" && apt-get download -q "$name=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
      got=$(ls "$dl/deb/" | grep "^${name}_" | grep -v "^${name}_${version}.deb$" | head -1 || true)
      [ -n "$got" ] && mv "$dl/deb/$got" "$path"
    fi
  fi
  [ -s "$path" ] || { echo "fetch-data: could not fetch $kind $name $version" >&2; exit 1; }
  echo "$sha  $path" | sha256sum --check --quiet - || { echo "fetch-data: $path does not match its pinned SHA-256" >&2; exit 1; }
done < scripts/data-sources.txt
# The crates of Cargo.lock, checked against its checksums by cargo itself.
cargo fetch --locked --quiet
python3 scripts/build-corpus.py --download "$dl" --cargo-lock Cargo.lock --debian ../shared/data/debian-descriptions.jsonl.gz --out bench-out/corpus
