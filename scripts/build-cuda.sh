#!/usr/bin/env bash
# Builds the `duetdb` binary with the `cuda` feature on a machine without a CUDA toolkit:
# nvcc and the CUDA headers come as Python wheels (scripts/cuda-requirements.txt, pinned
# with their SHA-256), installed beside the model cache. candle compiles its kernels to
# PTX for CUDA_COMPUTE_CAP (default 90: H100/H200) and loads the CUDA libraries at run
# time, so the binary runs on any machine with an NVIDIA driver and those libraries.
#   scripts/build-cuda.sh            # -> target/cuda/release/duetdb
set -euo pipefail
cd "$(dirname "$0")/.."
cuda_dir=${CUDA_WHEELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duetdb/cuda13}
if [ ! -f "$cuda_dir/nvidia/cu13/include/crt/host_config.h" ] || [ ! -f "$cuda_dir/nvidia/cu13/include/nv/target" ] || [ ! -x "$cuda_dir/nvidia/cu13/nvvm/bin/cicc" ]; then
  rm -rf "$cuda_dir"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary :all: \
    --require-hashes --target "$cuda_dir" -r scripts/cuda-requirements.txt
fi
root=$cuda_dir/nvidia/cu13
export PATH=$root/bin:$PATH CUDA_ROOT=$root CUDA_PATH=$root CUDA_TOOLKIT_ROOT_DIR=$root
export LIBRARY_PATH=$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
cargo build --release --features cuda -p duetdb-cli "$@"
echo "built $CARGO_TARGET_DIR/release/duetdb (CUDA compute capability $CUDA_COMPUTE_CAP)"
