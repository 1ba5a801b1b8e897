"""What the benchmark writes: the machine description, ``results.md`` and the PNG plots.

Every table has one row per model × solver × size and a column per backend or peer;
a peer's result (one per model × size) is shown on each of that model's solver rows.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlxp
from mlxp._backend import backend_report

BASELINE = "numpy:cpu"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
THREAD_VARS += ("VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "XLA_FLAGS")
QUALITY = {  # row key -> its format in results.md; keys a row lacks are left out
    "r2_train": "R² {:.3f}",
    "accuracy_train": "acc {:.3f}",
    "final_loss": "loss {:.3f}",
    "max_abs_diff_coef_vs_sklearn": "Δcoef {:.0e}",
    "max_abs_diff_proba_vs_sklearn": "Δproba {:.0e}",
    "n_iter": "{} it",
}
Key = tuple[str, str, str]  # (model, solver, size "NxP")


PEER_DISTRIBUTIONS = {  # module -> distribution, for the versions of what is not a backend
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "threadpoolctl": "threadpoolctl",
    "matplotlib": "matplotlib",
    "cuml": "cuml",
}


# --------------------------------------------------------------------------- machine
def version(module: str, distribution: str) -> str | None:
    """The imported module's ``__version__``, else the installed distribution's; None if
    neither is there."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Platform, CPUs, devices, thread settings and library versions (call after the runs).

    ``load_average`` (1, 5, 15 minutes, at the end) tells whether other work shared the CPUs.
    """
    versions = {r["name"]: r["version"] for r in backend_report()}
    versions.update({module: version(module, dist) for module, dist in PEER_DISTRIBUTIONS.items()})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "mlxp": mlxp.__version__,
        "versions": versions,
        "devices": devices(),
        "threads": threads(),
    }


def devices() -> dict[str, str]:
    """Human names of the accelerators the libraries see (empty on a CPU-only machine)."""
    out = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out[f"cuda:{i}"] = torch.cuda.get_device_name(i)
    cupy = sys.modules.get("cupy")
    if cupy is not None and not out:
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
            out[f"cuda:{i}"] = name.decode() if isinstance(name, bytes) else str(name)
    return out


def threads() -> dict[str, Any]:
    """Thread-count variables, PyTorch's thread count and threadpoolctl's view of the pools."""
    out: dict[str, Any] = {v: os.environ.get(v) for v in THREAD_VARS}
    if "torch" in sys.modules:
        out["torch.get_num_threads"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        out["threadpoolctl"] = None
    else:
        keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture")
        out["threadpoolctl"] = [{k: i.get(k) for k in keys} for i in threadpool_info()]
    return out


# --------------------------------------------------------------------------- tables
def table(header: list[str], lines: list[list[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    rows = [header, align, *lines]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


class Grid:
    """The rows of one run arranged by (model, solver, n, p) and column (backend or peer)."""

    def __init__(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        self.columns = columns
        self.own: dict[tuple[Key, str], dict[str, Any]] = {}
        self.peer: dict[tuple[str, str, str], dict[str, Any]] = {}  # (model, size, column)
        self.keys: dict[Key, str] = {}  # key -> the solver label ("auto → cholesky")
        for r in rows:
            key = (r["model"], r["solver"], r["size"])
            if r["peer"]:
                self.peer[r["model"], r["size"], r["backend"]] = r
            else:
                self.own[key, r["backend"]] = r
                used = r["solver_used"]
                self.keys.setdefault(key, key[1] if used == key[1] else f"{key[1]} → {used}")

    def get(self, key: Key, column: str) -> dict[str, Any] | None:
        return self.own.get((key, column)) or self.peer.get((key[0], key[2], column))

    def render(self, cell: Callable[[Key, dict[str, Any]], str]) -> str:
        """One row per key, ``cell(key, row)`` in each column ("—" where nothing ran)."""
        lines = []
        for key, label in self.keys.items():
            cells = [cell(key, r) if (r := self.get(key, c)) else "—" for c in self.columns]
            lines.append([key[0], label, key[2], *cells])
        return table(["model", "solver", "size", *self.columns], lines, left=3)

    def ratio(self, key: Key, r: dict[str, Any], field: str = "median_s") -> str:
        base = self.own.get((key, BASELINE))
        return f"{r[field] / base[field]:.2f}" if base else "—"


def seconds(r: dict[str, Any], prefix: str = "") -> str:
    """``0.104 ±3%``: the median and half the min–max range relative to it."""
    median = r[f"{prefix}median_s"]
    spread = (r[f"{prefix}max_s"] - r[f"{prefix}min_s"]) / 2 / median
    return f"{median:.3g} ±{spread:.0%}"


def quality(r: dict[str, Any]) -> str:
    """``R² 1.000, Δcoef 2e-15`` or ``acc 0.964, loss 0.120`` (known keys only)."""
    return ", ".join(f.format(r[k]) for k, f in QUALITY.items() if r.get(k) is not None)


def ops_cell(key: Key, r: dict[str, Any]) -> str:
    """``60 ops, 0.2 syncs`` per step or iteration (``≥24 ops`` where only the namespace's
    functions could be counted); — where nothing was counted."""
    if r.get("ops") is None:
        return "—"
    bound = "" if r.get("operators_counted", True) else "≥"
    return f"{bound}{r['ops']:.0f} ops, {r['syncs']:.2g} syncs"


def warmup(r: dict[str, Any]) -> str:
    """The warm-up's seconds, its multiple of the median, and the device memory its peak
    added to what was in use before it."""
    text = f"{r['warmup_s']:.3g} (×{r['warmup_s'] / r['median_s']:.1f})"
    before, after = r.get("memory_before_warmup_bytes"), r.get("memory_after_warmup_bytes")
    if before is not None and after is not None:
        text += f", +{(after - before) / 2**20:.1f} MiB"
    return text


def transfer_table(transfers: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows model × size; cells "to device ms / to host ms" (medians)."""
    by_key = {(t["model"], t["size"], t["backend"]): t for t in transfers}
    keys = dict.fromkeys(k[:2] for k in by_key)
    shown = [c for c in columns if any(k[2] == c for k in by_key)]
    lines = []
    for model, size in keys:
        some = next(t for k, t in by_key.items() if k[:2] == (model, size))
        cells = []
        for c in shown:
            t = by_key.get((model, size, c))
            ms = (1e3 * t["to_device_median_s"], 1e3 * t["to_host_median_s"]) if t else None
            cells.append(f"{ms[0]:.3g} / {ms[1]:.3g}" if ms else "—")
        lines.append([model, size, f"{some['bytes'] / 2**20:.2f}", *cells])
    return table(["model", "size", "MiB", *shown], lines, left=2)


def peak_table(peaks: dict[str, dict[str, float | None]]) -> str:
    """Rows backend; float32 and float64 GFLOP/s."""
    lines = [[k, *("—" if v is None else f"{v:.1f}" for v in p.values())] for k, p in peaks.items()]
    return table(["backend", "float32 GFLOP/s", "float64 GFLOP/s"], lines)


def header(machine: dict[str, Any], settings: dict[str, Any]) -> str:
    """Where and when: platform, CPUs and GPUs, versions, threads, load, repeats."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    threads = machine["threads"]
    gpus = ", ".join(machine["devices"].values()) or "no GPU"
    load = machine["load_average"]
    repeats = ", ".join(f"{m} {r}" for m, r in settings["repeat"].items())
    return (
        f"{machine['date']}: {machine['platform']}, {machine['cpu_count']} CPUs ({gpus}), "
        f"Python {machine['python']}; {versions}. Threads: torch "
        f"{threads.get('torch.get_num_threads', '—')}, OMP_NUM_THREADS "
        f"{threads['OMP_NUM_THREADS']}. Load average at the end "
        f"{'—' if load is None else ' '.join(f'{v:.2f}' for v in load)} (1/5/15 min). "
        f"Timed runs per cell, after one warm-up: {repeats}."
    )


def markdown(result: dict[str, Any], columns: list[str]) -> str:
    """The whole ``results.md``: the machine, then one section per measurement."""
    rows = result["rows"]
    grid = Grid(rows, columns)
    nets = [r for r in rows if "gflops" in r]
    skipped = "\n".join(f"- {s['name']}: {s['reason']}" for s in result["skipped"])
    sections = [
        (
            "Fit time",
            "Median seconds ±half the min–max range (ratio to the median on "
            f"{BASELINE}). Networks: one training epoch.",
            grid.render(lambda k, r: f"{seconds(r)} ({grid.ratio(k, r)})"),
        ),
        (
            "Operations",
            "Array operations (kernel launches on a GPU) and host synchronisations per "
            "training step (networks) or solver iteration (lbfgs, newton), marginal over "
            "steps, counted by bench/opcount.py: PyTorch's dispatcher on torch, a counting "
            "namespace elsewhere (NumPy and CuPy arrays: the namespace's functions only, "
            "their operators not, so ≥).",
            grid.render(ops_cell) if any("ops" in r for r in rows) else None,
        ),
        (
            "Predict time",
            "Median seconds of `predict` on the training data, ±half the range (ratio to "
            f"{BASELINE}). Networks: the forward pass, in batches of the training size.",
            grid.render(
                lambda k, r: f"{seconds(r, 'predict_')} ({grid.ratio(k, r, 'predict_median_s')})"
            ),
        ),
        (
            "Quality",
            "Of the last timed fit, on the training data: R² or accuracy; the last epoch's "
            "mean training loss; the largest |Δ| from scikit-learn's coef_ or predict_proba; "
            "iterations.",
            grid.render(lambda k, r: quality(r)),
        ),
        (
            "Warm-up",
            "The untimed first call (compilation, caches, memory pools): seconds (× the "
            "median), and the device memory it added where the device has a pool.",
            grid.render(lambda k, r: warmup(r)),
        ),
        (
            "Host↔device transfer",
            "Median milliseconds to move the data (X and y) from NumPy to the device, "
            "synchronised / back to NumPy. Not part of any time above.",
            transfer_table(result["transfers"], columns) if result["transfers"] else None,
        ),
        (
            "Matrix-multiply peak",
            f"The best rate of `a @ a` on {result['settings']['peak_size']}² matrices.",
            peak_table(result["peaks"]),
        ),
        (
            "Networks: achieved GFLOP/s",
            "Training FLOPs of an epoch over its median time (share of the float32 peak of "
            "the library doing the arithmetic).",
            Grid(nets, columns).render(lambda k, r: f"{r['gflops']:.1f} ({_percent(r)})")
            if nets
            else None,
        ),
        ("Skipped", "Backends and peers that could not run here.", skipped or None),
    ]
    parts = ["# Benchmark results", header(result["machine"], result["settings"])]
    for title, note, body in sections:
        if body is not None:
            parts += [f"## {title}", note, body]
    return "\n\n".join(parts) + "\n"


def _percent(row: dict[str, Any]) -> str:
    fraction = row["fraction_of_peak"]
    return "—" if fraction is None else f"{fraction:.0%}"


# --------------------------------------------------------------------------- plots
def _titles(row: dict[str, Any], solver: str) -> tuple[str, str]:
    """The title and y-axis label of a model's plot."""
    if "gflops" in row:
        epoch = f"one training epoch (Adam, batch {row['batch_size']})"
        return f"{row['model']}: {epoch}", "median epoch time (s)"
    return f"{row['model']}: fit (mlxp solver {solver})", "median fit time (s)"


def problem_size(row: dict[str, Any]) -> int:
    """The product of the size's numbers: n·p for ``"2000x20"``."""
    n, p = row["size"].split("x")
    return int(n) * int(p)


def plots(
    rows: list[dict[str, Any]], columns: list[str], labels: dict[str, str], out: Path
) -> list[Path]:
    """One log-log PNG per model: median fit time against n·p, a line per backend or peer.

    Estimators are drawn with their first solver. Returns the files written; none, with
    a note on stderr, when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    written = []
    for model, label in labels.items():
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        solver = next((r["solver"] for r in mine if not r["peer"]), "")
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for column in columns:
            line = [r for r in mine if r["backend"] == column]
            line = [r for r in line if r["peer"] or r["solver"] == solver]
            if line:
                line.sort(key=problem_size)
                x = [problem_size(r) for r in line]
                ax.loglog(x, [r["median_s"] for r in line], marker="o", label=column)
        title, ylabel = _titles(mine[0], solver)
        ax.set_title(title)
        ax.set_xlabel(f"problem size: {label}")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        path = out / f"{model}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
