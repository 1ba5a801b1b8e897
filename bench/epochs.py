"""Training-epoch benchmarks: mlxp's MLP and CNN against the same network and loop in PyTorch.

    python bench/epochs.py [--models mlp,cnn] [--backends numpy,torch] [--repeat 3]
                           [--threads 2] [--out DIR] [--quick]

Each timing is one full epoch (shuffle, mini-batches, forward, backward, Adam) after an
untimed warm-up epoch, synchronised before the clock stops; the median of ``--repeat``.
Achieved GFLOP/s count 6·(multiply-adds of one forward) per sample (forward + both
backward products), set against the float32 matrix-multiply peak measured on the same
backend. Writes ``epochs.json`` and ``epochs.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `backends`

import backends
import mlxp
from mlxp import nn
from mlxp.optim import Adam

MLP = {"n": 20_000, "shape": (784,), "batch": 128, "madds": 784 * 256 + 256 * 128 + 128 * 10}
# LeNet-style on 28×28: conv1 24·24·8·25, conv2 8·8·16·8·25, dense 256·10 multiply-adds
CNN = {
    "n": 4_096,
    "shape": (1, 28, 28),
    "batch": 64,
    "madds": 24 * 24 * 8 * 25 + 8 * 8 * 16 * 8 * 25 + 256 * 10,
}


def mlxp_network(model: str) -> nn.Sequential:
    if model == "mlp":
        layers = [nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(), nn.Dense(128, 10)]
    else:
        layers = [
            nn.Conv2D(1, 8, 5),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(8, 16, 5),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(256, 10),
        ]
    return nn.Sequential(layers, seed=0)


def torch_network(model: str):
    import torch

    if model == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(784, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 10),
    )


def time_mlxp(
    model: str, case: backends.Case, X: np.ndarray, y: np.ndarray, batch: int, repeat: int
) -> list[float]:
    net = mlxp_network(model)
    Xb, yb = case.asarray(X), case.asarray(y)
    opt = Adam(1e-3)
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        net.fit(
            Xb, yb, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=batch, progress=False
        )
        case.synchronize(net.layers[-1].params["W"])
        if i:  # the first epoch is the warm-up
            times.append(time.perf_counter() - start)
    return times


def time_torch(
    model: str, device: str, X: np.ndarray, y: np.ndarray, batch: int, repeat: int
) -> list[float]:
    import torch

    torch.manual_seed(0)
    net = torch_network(model).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        order = torch.randperm(len(Xt), device=device)
        for lo in range(0, len(Xt), batch):
            rows = order[lo : lo + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[rows]), yt[rows]).backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return times


def matmul_peak(case: backends.Case, size: int = 2048) -> float:
    """float32 GFLOP/s of one size×size matrix product (best of 3) on ``case``."""
    a = case.asarray(np.random.default_rng(0).standard_normal((size, size)), "float32")
    case.synchronize(a @ a)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        case.synchronize(a @ a)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--backends", default="numpy")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--quick", action="store_true", help="a few batches, 1 repeat")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    wanted = set(args.backends.split(","))
    cases = [c for c in backends.cases() if c.backend is not None and c.name in wanted]
    rows = []
    for model in models:
        spec = MLP if model == "mlp" else CNN
        n = 4 * spec["batch"] if args.quick else spec["n"]
        repeat = 1 if args.quick else args.repeat
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, *spec["shape"])).astype(np.float32)
        y = rng.integers(0, 10, size=n)
        flops = 6 * spec["madds"] * n
        for case in cases:
            t = statistics.median(time_mlxp(model, case, X, y, spec["batch"], repeat))
            rows.append(
                {
                    "model": model,
                    "who": f"mlxp {case}",
                    "seconds": t,
                    "gflops": flops / t / 1e9,
                    "peak": matmul_peak(case),
                }
            )
        try:
            import torch
        except ImportError:
            continue
        torch.set_num_threads(args.threads)
        t = statistics.median(time_torch(model, "cpu", X, y, spec["batch"], repeat))
        rows.append(
            {
                "model": model,
                "who": f"torch cpu ({args.threads} threads)",
                "seconds": t,
                "gflops": flops / t / 1e9,
                "peak": None,
            }
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "numpy": np.__version__,
        "mlxp": mlxp.__version__,
    }
    (out / "epochs.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    lines = [
        "| model | who | epoch (s) | vs torch | GFLOP/s | of matmul peak |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        torch_rows = [
            r for r in rows if r["model"] == row["model"] and r["who"].startswith("torch")
        ]
        ratio = row["seconds"] / torch_rows[0]["seconds"] if torch_rows else float("nan")
        share = f"{row['gflops'] / row['peak']:.0%}" if row["peak"] else ""
        lines.append(
            f"| {row['model']} | {row['who']} | {row['seconds']:.3f} | {ratio:.2f}x | "
            f"{row['gflops']:.1f} | {share} |"
        )
    (out / "epochs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
