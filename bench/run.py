"""Benchmark harness: time mlxp's estimators and networks on every backend, beside peers.

    python bench/run.py [--models linear,ridge,logistic,mlp,cnn] [--backends numpy,torch,...]
                        [--sizes [MODEL=]NxP,...] [--repeat N] [--out DIR] [--quick]
                        [--no-peers]

Every cell: one untimed warm-up, then ``--repeat`` timed runs with the device
synchronised before the clock is read; median and spread of ``fit`` (networks: one
training epoch) and ``predict``, the warm-up apart, quality beside speed, and the array
operations and host reads per training step or solver iteration (bench/opcount.py). Host↔device
transfers and the matrix-multiply peak are measured on their own. Writes
``results.json``, ``results.md`` and one PNG plot per model into ``--out``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

import backends
from bench import opcount, report
from bench.epochs import CNN, MLP
from bench.estimators import LINEAR, LOGISTIC, LOGISTIC_PARAMS, RIDGE, RIDGE_PARAMS
from bench.timing import Peaks, Target, case_target, transfer


class Bench(Protocol):
    """A registry entry (:class:`~bench.estimators.EstimatorBench`, ``NetworkBench``)."""

    title: str
    sizes: str
    quick_sizes: str
    repeat: int
    size_label: str

    def data(self, n: int, p: int) -> tuple[np.ndarray, np.ndarray]: ...

    def peers(self) -> list[Any]: ...

    def run(self, size, data, targets, peers, repeat, peaks, settle) -> list[dict[str, Any]]: ...


MODELS: dict[str, Bench] = {
    "linear": LINEAR,
    "ridge": RIDGE,
    "logistic": LOGISTIC,
    "mlp": MLP,
    "cnn": CNN,
}
PEAK_SIZE, QUICK_PEAK_SIZE = 2048, 512


def parse_sizes(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    """``"2000x20,100000x100"`` -> (None, [(2000, 20), (100000, 100)]); ``"linear=…"``: its own."""
    model, _, spec = text.rpartition("=")
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in spec.split(",") if s.strip()]
        ok = sizes and all(len(s) == 2 and min(s) >= 1 for s in sizes) and model in ("", *MODELS)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [MODEL=]NxP[,NxP...] with MODEL in {', '.join(MODELS)}, "
            "e.g. 2000x20,100000x100 or logistic=50000x50"
        )
    return model or None, sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma list (default: all)")
    parser.add_argument("--backends", help="comma-separated names or name:device (default: all)")
    defaults = "; ".join(f"{k} {b.sizes}" for k, b in MODELS.items())
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        action="append",
        default=[],
        help=f"[MODEL=]NxP,... for all models or MODEL only; repeatable (default: {defaults})",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed runs per cell (default 5; networks 3; --quick 2)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test")
    parser.add_argument("--no-peers", action="store_true", help="mlxp alone, no peer libraries")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or any(m not in MODELS for m in args.models):
        parser.error(f"--models {','.join(args.models)!r}: choose from {', '.join(MODELS)}")
    known = backends.cases(include_dask=True)
    if args.backends is not None:
        args.backends = [w.strip() for w in args.backends.split(",")]
        for w in args.backends:
            if not any(w in (c.name, str(c)) for c in known):
                parser.error(f"unknown backend {w!r}; known: {', '.join(map(str, known))}")
    args.cases = [
        c
        for c in known
        if args.backends is None or c.name in args.backends or str(c) in args.backends
    ]
    return args


def plan(args: argparse.Namespace) -> tuple[dict[str, list[tuple[int, int]]], dict[str, int]]:
    """Sizes and repeats per model: the defaults (or quick ones), overridden by the options."""
    sizes, repeats = {}, {}
    for name in args.models:
        bench = MODELS[name]
        given = [s for m, s in args.sizes if m in (None, name)]
        sizes[name] = (
            given[-1] if given else parse_sizes(bench.quick_sizes if args.quick else bench.sizes)[1]
        )
        repeats[name] = args.repeat or (2 if args.quick else bench.repeat)
    return sizes, repeats


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every model × size × (peers, then each backend): rows, transfers, peaks, skipped."""
    targets = [case_target(c) for c in args.cases if c.backend is not None]
    skipped = [{"name": str(c), "reason": c.reason} for c in args.cases if c.backend is None]
    start = time.perf_counter()
    peaks = Peaks(QUICK_PEAK_SIZE if args.quick else PEAK_SIZE)
    for target in targets:
        peaks.of(target)
    print(f"  matmul peaks: done ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    sizes, repeats = plan(args)
    rows, transfers = [], []
    for name in args.models:
        bench = MODELS[name]
        peers = [] if args.no_peers else bench.peers()
        skipped += [{"name": f"{p.name} ({name})", "reason": p.reason} for p in peers if p.reason]
        names = {p.name for p in peers}
        moved: list[Target] = [p.target for p in peers if p.target and not p.target.host]
        placed = {t.name: t for t in targets + [p.target for p in peers if p.target]}
        for size in sizes[name]:
            data = bench.data(*size)
            settle = not args.quick  # a smoke test needs no settled turns
            for row in bench.run(size, data, targets, peers, repeats[name], peaks, settle):
                row = {**row, "peer": row["backend"] in names}
                target = placed.get(row["backend"])
                rows.append({**row, **opcount.row_counts(bench, size, row, target)})
            for target in moved + targets:
                stats = transfer(target, data, repeats[name])
                where = {"model": bench.title, "size": f"{size[0]}x{size[1]}"}
                transfers.append({**where, "backend": target.name, **stats})
            elapsed = time.perf_counter() - start
            print(f"  {name} {size[0]}x{size[1]}: done ({elapsed:.1f} s)", file=sys.stderr)
    for s in skipped:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    settings = {
        "models": args.models,
        "repeat": repeats,
        "warmup": 1,
        "sizes": {m: [f"{n}x{p}" for n, p in s] for m, s in sizes.items()},
        "peak_size": peaks.size,
        "logistic_params": LOGISTIC_PARAMS,
        "ridge_params": RIDGE_PARAMS,
        "batch_size": {m: MODELS[m].batch for m in args.models if hasattr(MODELS[m], "batch")},
    }
    return {
        "machine": report.machine_info(),
        "settings": settings,
        "skipped": skipped,
        "peaks": peaks.measured,
        "transfers": transfers,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Dask only when asked for by name: it runs on a cluster of its own (bench/dask_scale.py).
    dask = args.backends is not None and any(c.name == "dask" for c in args.cases)
    args.cases = [c for c in args.cases if c.name != "dask"]
    if dask:
        from bench import dask_scale

        given = [s for m, s in args.sizes if m is None]
        sizes = given[-1] if given else ([(20_000, 20)] if args.quick else None)
        dask_scale.main(sizes, args.repeat or 1, args.out)
        if not args.cases:
            return 0
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    backends_run = [str(c) for c in args.cases if c.backend is not None]
    peers = dict.fromkeys(r["backend"] for r in result["rows"] if r["peer"])
    columns = backends_run + list(peers)
    text = report.markdown(result, columns)
    (args.out / "results.md").write_text(text)
    labels = {MODELS[m].title: MODELS[m].size_label for m in args.models}
    for path in report.plots(result["rows"], columns, labels, args.out):
        print(f"wrote {path}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
