#!/usr/bin/env python3
"""Where PyTorch's strict-fp32 W1 speed comes from, for the comparison with cnnlab: the
reference's W1 (pytorch_gpu_bench.py: cudnn.benchmark, TF32 off, NCHW) beside the same step
under cnnlab's constraints, one at a time and together:
  deterministic   cudnn.deterministic (cnnlab's rule: a seed gives the same numbers; this
                  rules out cuDNN's atomics-based filter-gradient algorithms)
  nhwc            channels_last tensors (cnnlab's layout)
Then a few steps of the reference setting with cuDNN's API log on, and the log's lines that
name engines, knobs or algorithms (which kernels PyTorch's benchmark mode chose).

    python3 scripts/pytorch_w1_probe.py [DIR_WITH_REFERENCE_pytorch_bench.py]   (default gpu/)

Prints RESULT w1-fp32-<variant> <images/s> img/s, as pytorch_gpu_bench.py does."""
import os
import re
import subprocess
import sys
import time

ref_dir = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--log-steps" else "gpu"
sys.path.insert(0, os.path.abspath(ref_dir))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import pytorch_bench as pb  # noqa: E402  (the reference's networks)


def step_fn(name, deterministic, nhwc):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = deterministic
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    m = pb.Cnn().cuda().to(memory_format=fmt)
    b = 512 if name == "w1infer" else 128
    x = torch.randn(b, 3, 32, 32, device="cuda").to(memory_format=fmt)
    y = torch.randint(0, 10, (b,), device="cuda")
    opt = torch.optim.Adam(m.parameters(), 1e-3)

    def step():
        if name == "w1infer":
            with torch.no_grad():
                m(x)
            return
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, b


def run(name, deterministic, nhwc):
    step, b = step_fn(name, deterministic, nhwc)
    for _ in range(20):
        step()
    torch.cuda.synchronize()
    t, n = time.perf_counter(), 200
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    variant = "-".join(["fp32"] + ["deterministic"] * deterministic + ["nhwc"] * nhwc)
    print(f"RESULT {name}-{variant} {n * b / (time.perf_counter() - t):.0f} img/s", flush=True)


if "--log-steps" in sys.argv:
    # the child: a few reference steps with the log on (benchmarking happens in the first)
    step, _ = step_fn("w1", False, False)
    for _ in range(4):
        step()
    torch.cuda.synchronize()
    sys.exit(0)

print(torch.__version__, torch.cuda.get_device_name(0), "cuDNN", torch.backends.cudnn.version(), flush=True)
for name, variants in (("w1", [(False, False), (True, False), (False, True), (True, True)]),
                       ("w1infer", [(False, False), (False, True)])):
    for deterministic, nhwc in variants:
        run(name, deterministic, nhwc)

log = "/tmp/pytorch-w1-cudnn.log"
env = dict(os.environ, CUDNN_LOGLEVEL_DBG="3", CUDNN_LOGDEST_DBG=log)
try:
    subprocess.run([sys.executable, os.path.abspath(__file__), ref_dir, "--log-steps"], env=env, timeout=120)
except subprocess.TimeoutExpired:
    print("the logged steps took over 120 s (the log so far follows)")
# the lines naming engines, knobs or algorithms, with pointers and numbers of calls folded,
# each once in the order first seen (the last steps run the chosen ones)
seen, order = {}, []
try:
    with open(log, errors="replace") as f:
        for line in f:
            if re.search(r"(?i)engine|knob|algo|numerical_note|behavior_note", line):
                key = re.sub(r"0x[0-9a-f]+", "0x_", line.strip())
                if key not in seen:
                    seen[key] = 0
                    order.append(key)
                seen[key] += 1
except OSError as e:
    print(f"no cuDNN log: {e}")
print(f"cuDNN log {log}: {len(order)} distinct lines naming engines, knobs or algorithms")
for key in order[:150]:
    print(f"{seen[key]:6d}  {key[:220]}")
