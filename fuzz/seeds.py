"""Writes the seed corpus of the `readers` fuzz target: one valid file of each kind, prefixed
by the byte that picks its reader (fuzz_targets/readers.rs). Python's standard library and the
cnnlab binary (for a saved run, its mask and a planned sweep) only:

    cargo build --release && python3 fuzz/seeds.py fuzz/corpus/readers
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNNLAB = os.path.join(ROOT, "target", "release", "cnnlab")


def png(width, height):
    """An RGB PNG of a gradient."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes((x * 40 + y) % 256 for x in range(width) for _ in range(3)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main(out):
    os.makedirs(out, exist_ok=True)

    def seed(name, selector, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([selector]) + data)

    def cnnlab(*args, cwd):
        subprocess.run([CNNLAB, "--quiet", *args], cwd=cwd, check=True, capture_output=True)

    seed("idx", 0, bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4]) + bytes(i * 5 % 256 for i in range(48)))
    seed("cifar10", 1, b"".join(bytes([i]) + bytes((i * 7 + j) % 256 for j in range(3072)) for i in range(3)))
    seed("cifar100", 1, b"".join(bytes([1, i]) + bytes((i * 7 + j) % 256 for j in range(3072)) for i in range(2)))
    spec = 'name = "t"\nmodels = ["cnn", "mlp"]\nseeds = 2\ntrain_sizes = [100, 200]\n[train]\nsteps = 30\n'
    seed("spec-toml", 7, spec.encode())
    seed("spec-json", 8, json.dumps({"models": ["cnn"], "seeds": 2, "datasets": ["mnist1d"], "train": {"steps": 10}}).encode())
    seed("reviews", 10, b'category,text,movie_name\nfresh,"a fine, funny film",x\nrotten,dull and slow,y\nplot,the plot,z\n')
    seed("png", 11, png(6, 4))
    with tempfile.TemporaryDirectory() as tmp:
        cnnlab("train", "--model", "mlp", "--steps", "5", "--save", "mlp", cwd=tmp)
        cnnlab("train", "--model", "cnn", "--steps", "5", "--save", "cnn", cwd=tmp)
        cnnlab("analyze", "prune", "--run", "cnn", "--sparsities", "0.5", "--fine-tune-steps", "0",
               "--rounds", "1", "--save-mask", "mask.safetensors", "--out", "prune", cwd=tmp)
        with open(os.path.join(tmp, "s.toml"), "w") as f:
            f.write(spec + "[data.mnist1d]\nnum_samples = 600\n")
        cnnlab("sweep", "plan", "s.toml", "--out", "sweep", cwd=tmp)
        read = lambda *p: open(os.path.join(tmp, *p), "rb").read()
        for selector in (2, 3):
            seed(f"weights-{selector}", selector, read("mlp", "final.safetensors"))
        for selector in (4, 5):
            seed(f"mask-{selector}", selector, read("mask.safetensors"))
        seed("run", 6, read("cnn", "run.json"))
        seed("manifest", 9, read("sweep", "sweep.json"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "corpus", "readers"))
