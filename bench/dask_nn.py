"""One MLP training epoch on Dask row chunks against the same epoch in memory.

``python bench/dask_nn.py [N] [P] [CHUNKS]`` (default 50 000 × 20 in 2 chunks): a
Sequential 20-100-1 (ReLU, BCE-with-logits, Adam, batch 200, shuffled) on a LocalCluster of
2 workers × 1 thread (threads, no processes), X and y persisted; each side trains one
untimed warm-up epoch, then the median of 5 timed epochs is reported with the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from mlxp.nn import Dense, ReLU, Sequential


def _epochs(X, y, repeat: int = 5) -> float:
    model = Sequential([Dense(X.shape[1], 100), ReLU(), Dense(100, 1)], seed=0)
    fit = dict(loss="bce_with_logits", epochs=1, batch_size=200, progress=False)
    model.fit(X, y, **fit)  # warm-up: builds the model
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.fit(X, y, **fit)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(n: int = 50_000, p: int = 20, chunks: int = 2) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p))
    y = (X @ rng.standard_normal((p, 1)) > 0).astype(np.float64)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        with Client(cluster):
            rows = -(-n // chunks)
            Xd, yd = (
                da.from_array(X, chunks=(rows, p)).persist(),
                da.from_array(y, chunks=(rows, 1)).persist(),
            )
            memory, dask = _epochs(X, y), _epochs(Xd, yd)
    print(
        f"MLP epoch {n}x{p}: in memory {memory * 1e3:.1f} ms, Dask {chunks} chunks "
        f"{dask * 1e3:.1f} ms, ratio {dask / memory:.2f}"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
