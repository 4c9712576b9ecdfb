#!/usr/bin/env bash
# The GPU check of issue 29, in two halves (the GPU machine has CUDA 13 in its Python
# environment but no Rust toolchain and no package registry, and receives only small files):
#   benches/gpu_check.sh build   # here: the driver with the `cuda` feature, stripped and
#                                # packed to bench-out/gpu/gpu_check.xz (carry that path)
#   benches/gpu_check.sh run     # there: unpack, find the CUDA libraries, run the driver
#                                # (benches/gpu_check.rs: GPU against CPU vectors on a small
#                                # random Gemma3, then Gemma3-270M's shape with random
#                                # weights, f32 and bf16), then PyTorch on the same shape if
#                                # the machine's Python has torch and transformers.
# LAYERS (18) and BATCHES (50) shrink it for a smoke run (`run` works on a CPU too, with
# DUETDB_DEVICE=cpu and a CPU build: `benches/gpu_check.sh run-cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out/gpu; mkdir -p "$out"
case "${1:-}" in
  build)
    bin=$(scripts/build-cuda.sh gpu_check | tail -1)
    strip -o "$out/gpu_check" "$bin"
    xz -6 -T2 -f "$out/gpu_check"
    ls -la "$out/gpu_check.xz" ;;
  run|run-cpu)
    if [ "$1" = run ]; then
      xz -dkf "$out/gpu_check.xz"; chmod +x "$out/gpu_check"; bin=$out/gpu_check
      # candle loads cuBLAS, cuRAND, NVRTC and the runtime at run time: from the Python
      # environment's CUDA wheels (or a system toolkit), wherever they are.
      libs=$(for l in libcublas.so libcublasLt.so libcurand.so libcudart.so libnvrtc.so; do
               find / -xdev -name "$l*" -path '*lib*' 2>/dev/null | head -1 | xargs -r dirname; done | sort -u | paste -sd:)
      export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DUETDB_DEVICE=${DUETDB_DEVICE:-cuda}
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    else
      bin=$(benches/driver.sh gpu_check); export DUETDB_DEVICE=cpu
    fi
    "$bin" "$out" "${LAYERS:-18}" "${BATCHES:-50}" | tee "$out/gpu_check.json"
    python3 benches/gpu_torch.py "${LAYERS:-18}" "${BATCHES:-50}" | tee "$out/gpu_torch.json" || echo '{"torch": "not measured (no torch/transformers with CUDA here)"}' ;;
  *) echo "usage: benches/gpu_check.sh build|run|run-cpu" >&2; exit 2 ;;
esac
