#!/usr/bin/env bash
# Fills gpu/ (ignored by git) with what scripts/gpu_check.sh needs on a GPU machine that has no
# Rust toolchain: the CUDA build of cnnlab and of its GPU tests, CIFAR-10 and the PyTorch
# reference scripts. Run it where the project builds; carry gpu/ to the GPU machine.
#   scripts/gpu_prepare.sh [SHARED_DIR]     (default ../shared: data/ and reference/)
# With BASELINE=REV, also the CUDA build of commit REV as gpu/cnnlab-before, for gpu_check.sh's
# `before` part (the same benchmarks on both builds in one call: a change measured before and
# after on the same machine).
set -euo pipefail
shared=${1:-../shared}
cd "$(dirname "$0")/.."
mkdir -p gpu
rm -f gpu/cnnlab-before
if [ -n "${BASELINE:-}" ]; then
  # a worktree of REV built into this target folder (the dependencies are shared)
  base=$(mktemp -d)
  git worktree add -q --detach "$base" "$BASELINE"
  CARGO_TARGET_DIR="$PWD/target" cargo build --release --features cuda --manifest-path "$base/Cargo.toml"
  cp target/release/cnnlab gpu/cnnlab-before
  strip gpu/cnnlab-before
  git worktree remove --force "$base"
fi
cargo build --release --features cuda
tests=$(cargo test --release --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
cp target/release/cnnlab gpu/cnnlab
cp "$tests" gpu/cuda_tests
strip gpu/cnnlab gpu/cuda_tests
cp "$shared/data/cifar10-jpeg.npz" "$shared/data/npz_to_cifar_bin.py" gpu/
cp "$shared/reference/pytorch_gpu_bench.py" "$shared/reference/pytorch_bench.py" gpu/
du -sh gpu
