#!/usr/bin/env bash
# The GPU checks of the CUDA backend in one call on a lent GPU machine (no Rust there: run
# scripts/gpu_prepare.sh first and carry gpu/). Writes at most 8 files to OUT (the lending
# tool returns 8), and a summary on stdout:
#   scripts/gpu_check.sh OUT [PARTS]
# PARTS (default "tests bench conv gemm variants repeat pytorch probe full table"), run in the order given:
#   tests    the CUDA-vs-CPU test binary (every op on every convolution route, the batch
#            gather, whole runs)
#   bench    cnnlab bench w1 | w1infer | w2, fp32 and TF32 (convolutions tuned, the default,
#            profiled: each choice with its timings, and each way's difference from im2col +
#            cuBLAS: FFT/Winograd are timed and compared)
#   tune     cnnlab bench w1, full-dnn, full-lcn and full-mlp in strict fp32 alone (about a
#            minute): W1's convolutions are the full recipe's CNN's training shapes, and the
#            full benchmarks' GEMMs the table's networks' training GEMMs, so a table run after
#            it reads their choices from the tuning cache instead of timing them beside seven
#            other runs
#   conv     w1 and w1infer in strict fp32 on the fixed rule (CNNLAB_CUDNN=inference), on the
#            implicit-GEMM kernels wherever they run (CNNLAB_CUDNN=implicit) and tuned (the
#            default), two rounds (about 2 minutes; into bench.txt, the results in log.txt), then
#            the tuned choices of each with their timings
#   gemm     w2 and the full recipe's Mixer, LCN and MLP in strict fp32 on cuBLAS's GEMMs
#            (CNNLAB_GEMM=cublas) and tuned against the 3xTF32 kernels (the default), two
#            rounds (about 3 minutes; into bench.txt, the results in log.txt)
#   variants w1 and w1infer on the fixed rule (CNNLAB_CUDNN=inference), on cuDNN over NCHW
#            copies (CNNLAB_CUDNN=nchw), in three TF32 passes on split fp32 throughout
#            (CNNLAB_CUDNN=split), tuned without TF32 on split operands (CNNLAB_CUDNN_SPLIT=0), tuned
#            without FFT/Winograd (CNNLAB_CUDNN_TRANSFORMS=0) and with them let further from a
#            GEMM's rounding (CNNLAB_CONV_TOLERANCE=64)
#   full     the full recipe's CNN, Mixer and LCN in strict fp32 (and the CNN in TF32),
#            profiled layer by layer
#   before   where gpu/cnnlab-before is (BASELINE=REV scripts/gpu_prepare.sh), the benchmarks a
#            change touched on that build and on this one in turn, two rounds (about 90 s):
#            w1 and w1infer on im2col + cuBLAS (CNNLAB_CUDNN=0), and the full recipe's LCN
#   repeat   the same short reproduce (MNIST-1D CNN and MLP) in two processes, timing for
#            themselves and then sharing the tuning cache: the same numbers?
#   pytorch  the PyTorch reference (pytorch_gpu_bench.py; about a minute), in the same call
#            as bench
#   probe    PyTorch's fp32 W1 with deterministic algorithms and/or NHWC, and the cuDNN
#            engines it chose (scripts/pytorch_w1_probe.py)
#   table    reproduce --dataset cifar10 --preset full --device cuda --seeds 1 $TABLE_FLAGS
#            (e.g. TABLE_FLAGS=--tf32, the PyTorch reference's math), cut DEADLINE seconds
#            after the script started (default 570), leaving time to pack its curves. For
#            the strict-fp32 table in one call: PARTS "tune table" with DEADLINE=540 (the
#            table gets about eight minutes); then "bench pytorch tests" in the next
set -u
out=${1:?usage: scripts/gpu_check.sh OUT [PARTS]}
parts=${2:-tests bench conv gemm variants repeat pytorch probe full table}
t0=$(date +%s)
deadline=$((t0 + ${DEADLINE:-570}))
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$nv/cu13/lib:$nv/cudnn/lib:${LD_LIBRARY_PATH:-}
# a fresh tuning cache for this call: the first run of each convolution shape times it (and
# --profile prints the timings); later runs in the call read the choice
export CNNLAB_TUNE_CACHE=/tmp/cnnlab-tune-cache-$$.json
rm -f "$CNNLAB_TUNE_CACHE"
log() { echo "== $(($(date +%s) - t0)) s: $*" | tee -a "$out/log.txt"; }
# alternate NAME VAR "VALUES" "WORKLOADS": each workload benchmarked with VAR set to each value
# in turn, two rounds (so that drift between sittings shows), into bench.txt; the results to
# log.txt
alternate() {
  for round in 1 2; do
    for value in $3; do
      echo "round $round, $2=$value:"
      for w in $4; do env "$2=$value" timeout 60 gpu/cnnlab bench "$w" --device cuda --quiet; done
    done
  done >"/tmp/$1.txt" 2>&1
  cat "/tmp/$1.txt" >>"$out/bench.txt"
  grep -E "^round|RESULT" "/tmp/$1.txt" | tee -a "$out/log.txt"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  gpu/cnnlab devices
} >>"$out/log.txt" 2>&1
# CIFAR-10's binary files, converted on the CPU while the first parts use the GPU.
case " $parts " in *" table "*)
  [ -f /tmp/cifar/test_batch.bin ] ||
    (python3 gpu/npz_to_cifar_bin.py gpu/cifar10-jpeg.npz /tmp/cifar >/tmp/convert.txt 2>&1) &
  convert=$!
  ;;
esac
for part in $parts; do
  case $part in
  tests)
    log tests
    CNNLAB_BIN=$PWD/gpu/cnnlab timeout 120 gpu/cuda_tests --test-threads=1 >"$out/tests.txt" 2>&1
    echo "exit $?" >>"$out/tests.txt"
    ;;
  bench)
    # profiled: each tuned choice with its timings (the throughput comes from the unprofiled
    # pass before the profiled one)
    log bench
    for w in w1 w1infer w2; do
      gpu/cnnlab bench $w --device cuda --quiet --profile
      gpu/cnnlab bench $w --device cuda --tf32 --quiet --profile
    done >>"$out/bench.txt" 2>&1
    ;;
  tune)
    log tune
    {
      gpu/cnnlab bench w1 --device cuda --quiet --profile
      for m in dnn lcn mlp; do timeout 60 gpu/cnnlab bench full-$m --device cuda --quiet --profile; done
    } >>"$out/bench.txt" 2>&1
    ;;
  conv)
    # the convolution routes that matter for strict fp32's W1, alternately
    log conv
    alternate conv CNNLAB_CUDNN "inference implicit tune" "w1 w1infer"
    for w in w1 w1infer; do gpu/cnnlab bench $w --device cuda --quiet --profile; done >>"$out/bench.txt" 2>&1
    ;;
  gemm)
    # cuBLAS's GEMMs against the tuned choice (3xTF32 kernels where timed faster), alternately
    log gemm
    alternate gemm CNNLAB_GEMM "cublas tune" "w2 full-dnn full-lcn full-mlp"
    # the choices and their timings, once
    for w in w2 full-dnn; do gpu/cnnlab bench $w --device cuda --quiet --profile; done >>"$out/bench.txt" 2>&1
    ;;
  variants)
    log variants
    {
      echo "with CNNLAB_CUDNN=inference (the fixed rule: im2col + cuBLAS to train, cuDNN to infer):"
      CNNLAB_CUDNN=inference gpu/cnnlab bench w1 --device cuda --quiet
      CNNLAB_CUDNN=inference gpu/cnnlab bench w1infer --device cuda --quiet
      echo "with CNNLAB_CUDNN=nchw (cuDNN's first algorithm on NCHW copies, every pass):"
      CNNLAB_CUDNN=nchw gpu/cnnlab bench w1 --device cuda --quiet
      CNNLAB_CUDNN=nchw gpu/cnnlab bench w1infer --device cuda --quiet
      echo "cuDNN in three TF32 passes on split fp32 throughout (CNNLAB_CUDNN=split):"
      CNNLAB_CUDNN=split gpu/cnnlab bench w1 --device cuda --quiet
      CNNLAB_CUDNN=split gpu/cnnlab bench w1infer --device cuda --quiet
      echo "tuned without TF32 on split operands (CNNLAB_CUDNN_SPLIT=0):"
      CNNLAB_CUDNN_SPLIT=0 gpu/cnnlab bench w1 --device cuda --quiet
      CNNLAB_CUDNN_SPLIT=0 gpu/cnnlab bench w1infer --device cuda --quiet
      echo "tuned without FFT and Winograd (CNNLAB_CUDNN_TRANSFORMS=0):"
      CNNLAB_CUDNN_TRANSFORMS=0 gpu/cnnlab bench w1 --device cuda --quiet
      CNNLAB_CUDNN_TRANSFORMS=0 gpu/cnnlab bench w1infer --device cuda --quiet
      echo "FFT and Winograd within 64 roundings, not 8 (CNNLAB_CONV_TOLERANCE=64; PyTorch's fp32 takes them unchecked):"
      CNNLAB_CONV_TOLERANCE=64 gpu/cnnlab bench w1 --device cuda --quiet --profile
      CNNLAB_CONV_TOLERANCE=64 gpu/cnnlab bench w1infer --device cuda --quiet --profile
    } >>"$out/bench.txt" 2>&1
    ;;
  full)
    # the table's networks layer by layer, with the convolution choices for their shapes
    log full
    for m in cnn dnn lcn; do
      timeout 40 gpu/cnnlab bench full-$m --device cuda --profile --quiet
    done >>"$out/bench.txt" 2>&1
    timeout 40 gpu/cnnlab bench full-cnn --device cuda --tf32 --profile --quiet >>"$out/bench.txt" 2>&1
    ;;
  before)
    # the same benchmarks on the build before a change and on this one, alternately
    log before
    if [ -x gpu/cnnlab-before ]; then
      for round in 1 2; do
        for build in before after; do
          exe=gpu/cnnlab
          [ $build = before ] && exe=gpu/cnnlab-before
          echo "round $round, $build:"
          CNNLAB_CUDNN=0 timeout 60 $exe bench w1 --device cuda --quiet
          CNNLAB_CUDNN=0 timeout 60 $exe bench w1infer --device cuda --quiet
          timeout 60 $exe bench full-lcn --device cuda --quiet
        done
      done >>"$out/before.txt" 2>&1
      grep -E "^round|RESULT" "$out/before.txt" | tee -a "$out/log.txt"
    else
      echo "before: no gpu/cnnlab-before (BASELINE=REV scripts/gpu_prepare.sh builds one)" | tee -a "$out/log.txt"
    fi
    ;;
  repeat)
    # the same short runs in two processes, each timing its convolutions for itself
    # (CNNLAB_TUNE_CACHE=0), then sharing a fresh tuning cache: are the curves the same?
    log repeat
    for cache in 0 /tmp/repeat-cache.json; do
      rm -rf /tmp/repeat1 /tmp/repeat2 /tmp/repeat-cache.json
      for i in 1 2; do
        CNNLAB_TUNE_CACHE=$cache timeout 60 gpu/cnnlab reproduce --models cnn,mlp --steps 300 --eval-every 50 \
          --seeds 1 --quiet --device cuda --run-dir "/tmp/repeat$i" >/dev/null 2>&1
      done
      # the curves (losses and accuracies at six points), not the wall times
      if cat /tmp/repeat1/*.jsonl >/tmp/r1 2>/dev/null && cat /tmp/repeat2/*.jsonl >/tmp/r2 2>/dev/null &&
        [ -s /tmp/r1 ] && cmp -s /tmp/r1 /tmp/r2; then
        echo "repeat, CNNLAB_TUNE_CACHE=$cache: identical curves ($(wc -l </tmp/r1) points)" | tee -a "$out/log.txt"
      else
        echo "repeat, CNNLAB_TUNE_CACHE=$cache: the curves differ (or did not run):" | tee -a "$out/log.txt"
        diff /tmp/r1 /tmp/r2 2>&1 | head -8 >>"$out/log.txt"
      fi
    done
    ;;
  pytorch)
    log pytorch
    PYTHONUNBUFFERED=1 timeout 150 python3 gpu/pytorch_gpu_bench.py >>"$out/pytorch.txt" 2>&1
    ;;
  probe)
    # PyTorch's fp32 W1 under cnnlab's constraints (deterministic algorithms, NHWC), and the
    # cuDNN engines its benchmark mode chose
    log probe
    PYTHONUNBUFFERED=1 timeout 200 python3 scripts/pytorch_w1_probe.py gpu >>"$out/pytorch.txt" 2>&1
    ;;
  table)
    wait "${convert:-}" 2>/dev/null
    cat /tmp/convert.txt >>"$out/log.txt" 2>/dev/null
    left=$((deadline - $(date +%s)))
    log "table ${TABLE_FLAGS:-} (cut after $left s)"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 >"$out/smi.txt" 2>&1 &
    smi=$!
    rm -rf /tmp/table && mkdir -p /tmp/table && cd /tmp/table
    # Not --quiet: with stderr in a file, the progress comes as a line at every tenth.
    timeout "$left" "$OLDPWD/gpu/cnnlab" reproduce --dataset cifar10 --data-dir /tmp/cifar --preset full \
      --device cuda --seeds 1 --run-dir runs ${TABLE_FLAGS:-} >"$out/table.txt" 2>&1
    echo "exit $?" >>"$out/table.txt"
    tar czf "$out/table_runs.tar.gz" runs 2>/dev/null
    cd "$OLDPWD"
    kill $smi 2>/dev/null
    ;;
  *) echo "unknown part $part" >&2 ;;
  esac
done
log done
echo "---- summary"
cat "$out/log.txt"
grep -E "^test result|FAILED|panicked|^exit" "$out/tests.txt" 2>/dev/null
# the results and the convolution choices (the layer profiles stay in bench.txt)
grep -E "RESULT|^with|^tuned|^FFT|window|^convolutions" "$out/bench.txt" 2>/dev/null | cut -c1-240 | head -90
grep RESULT "$out/pytorch.txt" 2>/dev/null
tail -25 "$out/table.txt" 2>/dev/null
