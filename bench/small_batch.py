"""One MLP epoch at batch 32 on mlxp's ``torch:cpu`` backend against native PyTorch.

``python bench/small_batch.py [N] [BATCH]`` (default 8 192 samples, batch 32): the MLP
784-256-128-10 with ReLUs, cross-entropy, Adam(lr=1e-3) (PyTorch: ``foreach=True``),
shuffled; each side trains one untimed warm-up epoch, then the median of 5 alternating
timed epochs is reported with the ratio. At batch 32 a step's cost is mostly dispatch,
so this measures the per-step overhead of mlxp's training loop on top of PyTorch's.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

from mlxp import nn
from mlxp.optim import Adam


def _mlxp_epoch(X: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    layers = [nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(), nn.Dense(128, 10)]
    net = nn.Sequential(layers, seed=0)
    start = time.perf_counter()
    net.fit(X, y, loss="cross_entropy", optimizer=Adam(1e-3), epochs=1, batch_size=batch,
            progress=False)  # fmt: skip
    return time.perf_counter() - start


def _torch_epoch(X: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    torch.manual_seed(0)
    L = torch.nn
    net = L.Sequential(
        L.Linear(784, 256), L.ReLU(), L.Linear(256, 128), L.ReLU(), L.Linear(128, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    start = time.perf_counter()
    order = torch.randperm(X.shape[0])
    for lo in range(0, X.shape[0], batch):
        rows = order[lo : lo + batch]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[rows]), y[rows]).backward()
        opt.step()
    return time.perf_counter() - start


def main(n: int = 8192, batch: int = 32) -> None:
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(n, 784)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=n))
    _mlxp_epoch(X, y, batch), _torch_epoch(X, y, batch)  # warm-up
    times: dict[str, list[float]] = {"mlxp": [], "torch": []}
    for _ in range(5):
        times["mlxp"].append(_mlxp_epoch(X, y, batch))
        times["torch"].append(_torch_epoch(X, y, batch))
    mine, theirs = statistics.median(times["mlxp"]), statistics.median(times["torch"])
    print(f"MLP epoch, {n} samples, batch {batch}, torch threads {torch.get_num_threads()}")
    print(f"mlxp torch:cpu {mine:.3f} s, native PyTorch {theirs:.3f} s, ratio {mine / theirs:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
