#!/usr/bin/env bash
# Fills gpu/ (ignored by git) with what scripts/gpu_check.sh needs on a GPU machine that has no
# Rust toolchain: the CUDA build of cnnlab and of its GPU tests, CIFAR-10 and the PyTorch
# reference scripts. Run it where the project builds; carry gpu/ to the GPU machine.
#   scripts/gpu_prepare.sh [SHARED_DIR]     (default ../shared: data/ and reference/)
set -euo pipefail
shared=${1:-../shared}
cd "$(dirname "$0")/.."
cargo build --release --features cuda
tests=$(cargo test --release --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
mkdir -p gpu
cp target/release/cnnlab gpu/cnnlab
cp "$tests" gpu/cuda_tests
strip gpu/cnnlab gpu/cuda_tests
cp "$shared/data/cifar10-jpeg.npz" "$shared/data/npz_to_cifar_bin.py" gpu/
cp "$shared/reference/pytorch_gpu_bench.py" "$shared/reference/pytorch_bench.py" gpu/
du -sh gpu
