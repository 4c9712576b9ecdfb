#!/usr/bin/env bash
# Builds the `duetdb` binary with the `cuda` feature on a machine without a CUDA toolkit:
# nvcc and the CUDA headers come as Python wheels (scripts/cuda-requirements.txt, pinned
# with their SHA-256), installed beside the model cache. candle compiles its kernels to
# PTX for CUDA_COMPUTE_CAP (default 90: H100/H200) and loads the CUDA libraries at run
# time, so the binary runs on any machine with an NVIDIA driver and those libraries.
#   scripts/build-cuda.sh            # -> target/cuda/release/duetdb
#   scripts/build-cuda.sh gpu_check  # -> the GPU check's driver (benches/gpu_check.sh build)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda_dir=${CUDA_WHEELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duetdb/cuda13}
if [ ! -f "$cuda_dir/nvidia/cu13/include/crt/host_config.h" ] || [ ! -f "$cuda_dir/nvidia/cu13/include/nv/target" ] || [ ! -x "$cuda_dir/nvidia/cu13/nvvm/bin/cicc" ] \
   || ! ls "$cuda_dir"/nvidia/cu13/lib/libnvrtc.so.* >/dev/null 2>&1; then
  rm -rf "$cuda_dir"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary :all: \
    --require-hashes --target "$cuda_dir" -r scripts/cuda-requirements.txt
fi
root=$cuda_dir/nvidia/cu13
# candle links cudarc dynamically: the linker wants unversioned libraries, and a libcuda
# (the driver's, which no wheel carries). Link against a stub of every driver function
# cudarc declares, whose soname is the driver's: at run time the real libcuda.so.1 loads.
link=$cuda_dir/link
if [ ! -f "$link/libcuda.so" ]; then
  mkdir -p "$link"
  for lib in cublas cublasLt curand cudart nvrtc; do
    ln -sf "$(ls "$root"/lib/lib$lib.so.* | head -1)" "$link/lib$lib.so"
  done
  cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 | head -1)
  grep -oE '^ +fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys/mod.rs" | sed -E 's/^ +fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u > "$link/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
fi
export PATH=$root/bin:$PATH CUDA_ROOT=$root CUDA_PATH=$root CUDA_TOOLKIT_ROOT_DIR=$root
export LIBRARY_PATH=$link:$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
if [ "${1:-}" = gpu_check ]; then
  cargo bench --no-run --quiet --features cuda --bench gpu_check --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_check":
        print(m["executable"])'
  exit
fi
cargo build --release --features cuda -p duetdb-cli "$@"
echo "built $CARGO_TARGET_DIR/release/duetdb (CUDA compute capability $CUDA_COMPUTE_CAP)"
