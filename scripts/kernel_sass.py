"""The machine code of cnnlab's CUDA kernels, counted loop by loop, without a GPU.

Compiles the kernels as the backend does (kernels/common.cuh, then each file of
src/core/cuda/kernels/ in KERNEL_SOURCES' order) with NVRTC for a real architecture
(default sm_90, the H100/H200), disassembles the cubin with cuobjdump, and prints for each
kernel its instructions and, for each loop (a branch back), the instructions in its body, its
global loads and stores by width, and its integer divisions (each a MUFU.RCP with its
conversions: about twenty instructions apiece). A kernel's instructions per value are a loop's
instructions over the values its body moves: the count to compare before and after a change
to an instruction-bound kernel, where no GPU is at hand to time it.

    python3 scripts/kernel_sass.py [--arch sm_90] [--source DIR] [KERNEL ...]

Needs libnvrtc (CUDA 13: the pip package nvidia-cuda-nvrtc, as .ci/run installs it; found on
LD_LIBRARY_PATH or in ~/.cache/cnnlab/nvrtc-13.0.88) and cuobjdump (a CUDA toolkit's, or the
one in Triton's wheel: triton/backends/nvidia/bin). --source reads the kernels from another
checkout's src/core/cuda/kernels (to count a commit before a change beside it).
"""

import argparse
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nvrtc():
    dirs = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    dirs.append(os.path.expanduser("~/.cache/cnnlab/nvrtc-13.0.88/nvidia/cu13/lib"))
    for d in dirs:
        path = os.path.join(d, "libnvrtc.so.13")
        if d and os.path.exists(path):
            # its builtins library is loaded by name: the folder must be on the loader's path
            ctypes.CDLL(os.path.join(d, "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(path)
    sys.exit("libnvrtc.so.13 not found (LD_LIBRARY_PATH, ~/.cache/cnnlab/nvrtc-13.0.88)")


def cuobjdump():
    found = shutil.which("cuobjdump")
    found = found or next(iter(glob.glob(os.path.join(sys.prefix, "lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump"))), None)
    return found or sys.exit("cuobjdump not found (a CUDA toolkit's, or Triton's wheel's)")


def program(kernels_dir):
    # the order of KERNEL_SOURCES in src/core/cuda/mod.rs
    mod_rs = open(os.path.join(ROOT, "src/core/cuda/mod.rs")).read()
    names = re.findall(r'\("(\w+\.cu)", include_str!', mod_rs)
    src = open(os.path.join(kernels_dir, "common.cuh")).read()
    for name in names:
        src += f"\n// ---- {name}\n" + open(os.path.join(kernels_dir, name)).read()
    return src


def compile_cubin(lib, src, arch):
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"cnnlab.cu", 0, None, None):
        sys.exit("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture={arch}".encode()]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc:
        sys.exit(log.value.decode())
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetCUBIN(prog, cubin)
    return cubin.raw


def kernels(sass):
    """{kernel: [(address, instruction)]} from cuobjdump -sass's text."""
    out, name = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\w+)", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and name:
            out[name].append((int(m.group(1), 16), m.group(2)))
    return out


def opcode(ins):
    return re.sub(r"^@!?U?P[T\d]+\s+", "", ins).split()[0]


def summary(body):
    ops = [opcode(i) for _, i in body]
    memory = {}
    for op in ops:
        if op.startswith(("LDG", "STG")):
            memory[op] = memory.get(op, 0) + 1
    divisions = sum(op == "MUFU.RCP" for op in ops)
    return len(ops), memory, divisions


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--source", default=os.path.join(ROOT, "src/core/cuda/kernels"))
    ap.add_argument("kernel", nargs="*", help="kernels to show (default: all)")
    args = ap.parse_args()
    cubin = compile_cubin(nvrtc(), program(args.source), args.arch)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([cuobjdump(), "-sass", f.name], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    # registers a thread and stack bytes (spills) per kernel
    resources = dict(re.findall(r"Function (\w+):\s*\n\s*(REG:\d+ STACK:\d+)", usage))
    for name, code in sorted(kernels(sass).items()):
        if args.kernel and name not in args.kernel:
            continue
        print(f"{name}: {len(code)} instructions, {resources.get(name, 'REG:? STACK:?')}")
        for at, ins in code:
            m = re.search(r"BRA\b.*?0x([0-9a-f]+)", ins)
            target = int(m.group(1), 16) if m else None
            if target is None or target >= at:
                continue
            n, memory, divisions = summary([c for c in code if target <= c[0] <= at])
            mem = ", ".join(f"{v} {k}" for k, v in sorted(memory.items())) or "no global memory"
            print(f"  loop {target:#06x}-{at:#06x}: {n} instructions, {mem}, {divisions} divisions")


if __name__ == "__main__":
    main()
