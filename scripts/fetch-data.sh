#!/usr/bin/env bash
# Fetches the training and dev data beyond the Debian descriptions (issue 30) and builds
# the per-source splits in bench-out/corpus/ (see docs/data.md):
#   python    docstrings of well-known Python packages (wheels) and of CPython's standard
#             library (Debian's libpython3.11-stdlib): summary line -> the rest
#   rust      `///` docs of the crates Cargo.lock pins: first sentence -> the rest
#   glossary  FOLDOC and the Jargon File (Debian's dict-foldoc, dict-jargon): term -> entry
#   debian    the Debian descriptions (../shared/data): summary -> description
# and train-extra.jsonl, training pairs only: docstrings of more wheels (python) and
# WordNet's entries (glossary), none of whose texts is in train.jsonl or a dev split.
# Every download is pinned (scripts/data-sources.txt; the crates by Cargo.lock's
# checksums) and checked by SHA-256. Unix manual pages and tldr pages are never used: they
# are reserved for evaluation.
#   scripts/fetch-data.sh            # then: ls bench-out/corpus
set -euo pipefail
cd "$(dirname "$0")/.."
dl=bench-out/corpus/download; mkdir -p "$dl/wheel" "$dl/deb" "$dl/extra/wheel" "$dl/extra/deb"
while read -r kind name version sha; do
  case "$kind" in ''|'#'*) continue ;; esac
  # extra-*: training-only additions (train-extra.jsonl), kept in their own folder.
  dir="$dl"; case "$kind" in extra-*) dir="$dl/extra"; kind=${kind#extra-} ;; esac
  if [ "$kind" = wheel ]; then
    stem="${name//-/_}-${version}-"  # wheel file names spell '-' as '_'
    f=$(ls "$dir/wheel/" 2>/dev/null | grep -i "^${stem}" || true)
    if [ -z "$f" ]; then
      pip download --quiet --no-deps --only-binary :all: --python-version 3.12 --platform any \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$dir/wheel" "$name==$version"
      f=$(ls "$dir/wheel/" | grep -i "^${stem}")
    fi
    path="$dir/wheel/$f"
  else
    path="$dir/deb/${name}_${version}.deb"
    if [ ! -s "$path" ]; then
      (cd "$dir/deb" && apt-get download -q "$name=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
      got=$(ls "$dir/deb/" | grep "^${name}_" | grep -v "^${name}_${version}.deb$" | head -1 || true)
      [ -n "$got" ] && mv "$dir/deb/$got" "$path"
    fi
  fi
  [ -s "$path" ] || { echo "fetch-data: could not fetch $kind $name $version" >&2; exit 1; }
  echo "$sha  $path" | sha256sum --check --quiet - || { echo "fetch-data: $path does not match its pinned SHA-256" >&2; exit 1; }
done < scripts/data-sources.txt
# The crates of Cargo.lock, checked against its checksums by cargo itself.
cargo fetch --locked --quiet
python3 scripts/build-corpus.py --download "$dl" --cargo-lock Cargo.lock --debian ../shared/data/debian-descriptions.jsonl.gz --out bench-out/corpus
