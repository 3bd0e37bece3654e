#!/usr/bin/env python3
"""The workloads of `cnnlab bench`, in PyTorch: run both side by side on one machine and
compare the RESULT lines (same networks, batch sizes, optimizer, warm-up and timed steps).

    cnnlab bench w1 --threads 2        python3 scripts/pytorch_bench.py w1 --threads 2
    cnnlab bench w1 --device cuda      python3 scripts/pytorch_bench.py w1 --device cuda

Workloads (random inputs, Adam lr 1e-3):
  w1       CIFAR-shaped CNN: conv 3-64-128 (3x3), maxpool, conv 256, maxpool, conv 256,
           global average pool, linear; batch 128 of 32x32x3, training steps (images/s)
  w1infer  the same network, forward passes in eval mode, batch 512 (images/s)
  w2       MLP-Mixer: 4x4 patches -> 128 channels, 4 blocks (token MLP 64-256-64, channel MLP
           128-512-128, GELU, pre-LayerNorm, residuals), mean over tokens; batch 128 (images/s)
  w3a      MNIST-1D MLP 40-100-100-10, batch 100 (steps/s)
  w3b      MNIST-1D CNN: conv1d 1-25 (k5, p2), 25-25 (k3, p1) x2, ReLU, linear 1000-10,
           batch 100 (steps/s)
Needs only torch.
"""
import argparse
import time

import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(48, 128)
        self.blocks = nn.ModuleList()
        for _ in range(4):
            self.blocks.append(nn.ModuleDict({
                "norm1": nn.LayerNorm(128), "tok1": nn.Linear(64, 256), "tok2": nn.Linear(256, 64),
                "norm2": nn.LayerNorm(128), "ch1": nn.Linear(128, 512), "ch2": nn.Linear(512, 128),
            }))
        self.head = nn.Linear(128, 10)

    def forward(self, x):  # x: [B, 3, 32, 32]
        b = x.shape[0]
        # 4x4 patches, each flattened channels last (as cnnlab's Patchify)
        p = x.unfold(2, 4, 4).unfold(3, 4, 4)              # [B, 3, 8, 8, 4, 4]
        p = p.permute(0, 2, 3, 4, 5, 1).reshape(b, 64, 48)  # [B, tokens, 4*4*3]
        h = self.embed(p)
        for blk in self.blocks:
            t = blk["norm1"](h).transpose(1, 2)
            h = h + blk["tok2"](nn.functional.gelu(blk["tok1"](t))).transpose(1, 2)
            h = h + blk["ch2"](nn.functional.gelu(blk["ch1"](blk["norm2"](h))))
        return self.head(h.mean(dim=1))


def network(name):
    if name in ("w1", "w1infer"):
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(256, 10))
    if name == "w2":
        return Mixer()
    if name == "w3a":
        return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "w3b":
        return nn.Sequential(
            nn.Conv1d(1, 25, 5, padding=2), nn.ReLU(), nn.Conv1d(25, 25, 3, padding=1), nn.ReLU(),
            nn.Conv1d(25, 25, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1000, 10))
    raise SystemExit(f"unknown workload {name}")


# (input shape, warm-up steps, timed steps, inference) as in cnnlab's bench.rs; a GPU gets
# 20 warm-up and 200 timed steps there too
SHAPES = {
    "w1": ((128, 3, 32, 32), 3, 20, False),
    "w1infer": ((512, 3, 32, 32), 2, 10, True),
    "w2": ((128, 3, 32, 32), 3, 20, False),
    "w3a": ((100, 40), 30, 500, False),
    "w3b": ((100, 1, 40), 30, 300, False),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matrix products on the GPU")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.manual_seed(0)
    shape, warmup, steps, inference = SHAPES[a.workload]
    gpu = a.device.startswith("cuda")
    if gpu:
        warmup, steps = 20, 200
    net = network(a.workload).to(a.device)
    x = torch.randn(*shape, device=a.device)
    y = torch.randint(0, 10, (shape[0],), device=a.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        if inference:
            with torch.no_grad():
                return net(x)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    net.train(not inference)
    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    rate = steps / (time.perf_counter() - t)
    if a.workload.startswith("w3"):
        print(f"RESULT {a.workload} {rate:.2f} steps/s")
    else:
        print(f"RESULT {a.workload} {rate * shape[0]:.2f} images/s")


if __name__ == "__main__":
    main()
