#!/usr/bin/env bash
# The GPU checks of the CUDA backend in one call on a lent GPU machine (no Rust there: run
# scripts/gpu_prepare.sh first and carry gpu/). Writes everything to OUT:
#   scripts/gpu_check.sh OUT [PARTS]
# PARTS (default "tests bench pytorch table"): any of
#   tests    the CUDA-vs-CPU test binary (every op, the batch gather, whole runs)
#   bench    cnnlab bench w1 | w1infer | w2, fp32 and TF32, w1 also with CNNLAB_CUDNN=0
#            (im2col + cuBLAS), and profiles of the full recipe's CNN and Mixer
#   pytorch  the PyTorch reference (pytorch_gpu_bench.py), in the same call as bench
#   table    reproduce --dataset cifar10 --preset full --device cuda --seeds 1 $TABLE_FLAGS
#            (e.g. TABLE_FLAGS=--tf32, the PyTorch reference's math), cut at TABLE_SECONDS
#            (default 330)
set -u
out=${1:?usage: scripts/gpu_check.sh OUT [PARTS]}
parts=${2:-tests bench pytorch table}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$nv/cu13/lib:$nv/cudnn/lib:${LD_LIBRARY_PATH:-}
log() { echo "== $(date +%T) $*" | tee -a "$out/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1
gpu/cnnlab devices >"$out/devices.txt" 2>&1
for part in $parts; do
  case $part in
  tests)
    log tests
    CNNLAB_BIN=$PWD/gpu/cnnlab timeout 180 gpu/cuda_tests --test-threads=1 >"$out/tests.txt" 2>&1
    echo "exit $?" >>"$out/tests.txt"
    ;;
  bench)
    log bench
    for w in w1 w1infer w2; do
      gpu/cnnlab bench $w --device cuda --quiet
      gpu/cnnlab bench $w --device cuda --tf32 --quiet
    done >"$out/bench.txt" 2>&1
    echo "with CNNLAB_CUDNN=0:" >>"$out/bench.txt"
    CNNLAB_CUDNN=0 gpu/cnnlab bench w1 --device cuda --quiet >>"$out/bench.txt" 2>&1
    for m in cnn dnn; do
      gpu/cnnlab bench full-$m --device cuda --profile --quiet
    done >"$out/profile.txt" 2>&1
    ;;
  pytorch)
    log pytorch
    timeout 240 python3 gpu/pytorch_gpu_bench.py >"$out/pytorch.txt" 2>&1
    ;;
  table)
    log table
    [ -f /tmp/cifar/test_batch.bin ] || python3 gpu/npz_to_cifar_bin.py gpu/cifar10-jpeg.npz /tmp/cifar >"$out/convert.txt" 2>&1
    mkdir -p /tmp/table && cd /tmp/table
    timeout "${TABLE_SECONDS:-330}" "$OLDPWD/gpu/cnnlab" reproduce --dataset cifar10 --data-dir /tmp/cifar --preset full \
      --device cuda --seeds 1 --quiet ${TABLE_FLAGS:-} >"$out/table.txt" 2>&1
    echo "exit $?" >>"$out/table.txt"
    cd "$OLDPWD"
    ;;
  *) echo "unknown part $part" >&2 ;;
  esac
done
log done
