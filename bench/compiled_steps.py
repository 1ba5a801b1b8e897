"""Training epochs with the step compiled against the same epochs uncompiled, on one backend.

    python bench/compiled_steps.py BACKEND [--models mlp,cnn] [--batches 32,128]
                                   [--n N] [--width W] [--epochs E] [--repeat R] [--out FILE]

BACKEND as the test matrix prints it (``cupy:cuda:0``, ``jax:cpu``, ``torch:cuda:0``).
``compile=True`` there: a CUDA graph per batch shape on CuPy (``mlxp.nn.cuda_graph``),
``jax.jit`` on JAX, ``torch.compile`` on PyTorch; against ``compile=False``. For each
model and batch size, each mode first fits once untimed (captures, traces, kernel
compilation), then the two take turns, each a fit of E epochs from the same initial
weights, the device synchronised before the clock is read. Reported: the median seconds
per epoch of each mode, their ratio (compiled/eager: below 1, compiling pays) and the
last losses of both, which agree where the compiled step is the eager one. At small
batches a step is mostly launches, which a CUDA graph replays as one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

import backends
from bench.epochs import cnn_layers, flat_image_data, image_data, mlp_layers
from mlxp import nn
from mlxp.optim import Adam

MODELS = {"mlp": (mlp_layers, flat_image_data), "cnn": (cnn_layers, image_data)}


def _fit(case, model: str, width: int, data, batch: int, epochs: int, compile: bool):
    """(seconds per epoch, last loss) of a fresh network's fit of ``epochs`` epochs."""
    layers, _ = MODELS[model]
    net = nn.Sequential(layers(width), seed=0)
    start = time.perf_counter()
    history = net.fit(*data, loss="cross_entropy", optimizer=Adam(1e-3), epochs=epochs,
                      batch_size=batch, progress=False, compile=compile)  # fmt: skip
    case.synchronize(net.layers[-1].params["W"])
    return (time.perf_counter() - start) / epochs, history["loss"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--width", type=int, default=0, help="default: MLP 256, CNN 8")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    case = next((c for c in backends.cases() if str(c) == args.backend), None)
    if case is None or case.backend is None:
        sys.exit(f"{args.backend}: {case.reason if case else 'no such backend here'}")
    lines = [
        f"Epochs on {case} ({args.n} samples, {args.epochs} epochs a fit, median of "
        f"{args.repeat}), compile=True against compile=False",
        "",
        "| model | batch | eager s/epoch | compiled s/epoch | ratio | last loss eager, compiled |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for model in args.models.split(","):
        width = args.width or {"mlp": 256, "cnn": 8}[model]
        data = tuple(case.asarray(a) for a in MODELS[model][1](args.n))
        for batch in (int(b) for b in args.batches.split(",")):
            fits = {mode: [] for mode in (False, True)}
            for _ in range(args.repeat + 1):  # the first round untimed
                for mode in (False, True):
                    fits[mode].append(_fit(case, model, width, data, batch, args.epochs, mode))
            eager, graph = (statistics.median(t for t, _ in fits[m][1:]) for m in (False, True))
            losses = f"{fits[False][-1][1]:.4f}, {fits[True][-1][1]:.4f}"
            row = f"| {model} {width} | {batch} | {eager:.4f} | {graph:.4f} | {graph / eager:.2f} | {losses} |"  # noqa: E501
            lines.append(row)
            print(row, flush=True)
            if args.out:  # after every row: a run cut short keeps the rows it finished
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
