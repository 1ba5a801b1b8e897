"""Training-epoch benchmarks: mlxp's MLP and CNN beside the same networks written natively
in PyTorch (CPU, and CUDA when present) and, for the MLP, scikit-learn's MLPClassifier.

Every library trains the same layers with Adam(lr=1e-3), the same batch size and a shuffle
each epoch, in float32, from its own default initialisation. A timed unit is one epoch
(after an untimed warm-up epoch), the network carrying on training across repeats;
``predict`` is the forward pass over the training set, in batches of the training size.
Quality: the last epoch's mean training loss, and the accuracy of ``predict``.

Problem sizes are ``NxW``: N samples (28×28 images, 10 classes) and the network's width W:
MLP 784-W-W/2-10, CNN conv5×5(W)-pool-conv5×5(2W)-pool-dense(10). Achieved GFLOP/s count
2·(multiply-adds) for the forward pass, the weight gradients and the input gradients of
every layer but the first (which none of the libraries computes), per sample.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.timing import Peaks, Target, Timed, device_memory, host_target, interleaved, timed
from mlxp import nn
from mlxp.optim import Adam

LEARNING_RATE = 1e-3
CLASSES = 10
SKLEARN = "scikit-learn"


def image_data(n: int, width: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images X (n, 1, 28, 28) ~ N(0, 1), float32, and learnable labels y (n,) int64:
    the argmax of a fixed random linear map of the 4×4-block means (the width is unused)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)
    blocks = X.reshape(n, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(n, 49)
    y = np.argmax(blocks @ rng.standard_normal((49, CLASSES)), axis=1).astype(np.int64)
    return X, y


def flat_image_data(n: int, width: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`image_data` with each image flattened to 784 features, for the MLP."""
    X, y = image_data(n, width, seed)
    return X.reshape(n, 784), y


def mlp_layers(w: int, lib: Any = nn) -> list[Any]:
    """784-w-w/2-10 with ReLUs, from mlxp.nn (``lib=nn``) or torch.nn."""
    h = max(1, w // 2)
    if lib is nn:
        return [nn.Dense(784, w), nn.ReLU(), nn.Dense(w, h), nn.ReLU(), nn.Dense(h, CLASSES)]
    return [lib.Linear(784, w), lib.ReLU(), lib.Linear(w, h), lib.ReLU(), lib.Linear(h, CLASSES)]


def cnn_layers(w: int, lib: Any = nn) -> list[Any]:
    """LeNet-style on 28×28: conv 5×5 (w), ReLU, max-pool 2, conv 5×5 (2w), ReLU, max-pool 2,
    dense 2w·4·4 → 10; from mlxp.nn (``lib=nn``) or torch.nn."""
    if lib is nn:
        conv, pool, dense = nn.Conv2D, nn.MaxPool2D, nn.Dense
    else:
        conv, pool, dense = lib.Conv2d, lib.MaxPool2d, lib.Linear
    return [
        conv(1, w, 5),
        lib.ReLU(),
        pool(2),
        conv(w, 2 * w, 5),
        lib.ReLU(),
        pool(2),
        lib.Flatten(),
        dense(2 * w * 16, CLASSES),
    ]


def mlp_madds(w: int) -> tuple[int, int]:
    """Multiply-adds of one sample's forward pass, and of them the first layer's."""
    h = max(1, w // 2)
    return 784 * w + w * h + h * CLASSES, 784 * w


def cnn_madds(w: int) -> tuple[int, int]:
    """Multiply-adds of one image's forward pass (24²·w·25, 8²·2w·w·25, 2w·16·10), first's."""
    first = 24 * 24 * w * 25
    return first + 8 * 8 * 2 * w * w * 25 + 2 * w * 16 * CLASSES, first


@dataclass(frozen=True)
class Peer:
    """A native implementation: ``session`` builds it on ``target``; ``reason`` if absent."""

    name: str
    session: Callable[..., Session] | None = None
    target: Target | None = None
    reason: str | None = None


def accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose largest output is at the true class."""
    return float(np.mean(np.argmax(outputs, axis=1) == y))


@dataclass(frozen=True)
class Session:
    """One library's network built on its target and ready to time: ``epoch`` trains one
    epoch (result: its mean training loss), ``predict`` gives the outputs on the training
    set (moved to NumPy by ``to_host``)."""

    epoch: Timed
    predict: Timed
    to_host: Callable[[Any], np.ndarray]


def mlxp_session(bench: NetworkBench, w: int, target: Target, data: Any) -> Session:
    """Epochs of ``Sequential.fit`` and batched ``predict`` on an mlxp backend."""
    net = nn.Sequential(bench.layers(w), seed=0)
    X, y = (target.to_device(a) for a in data)
    target.sync(X)
    opt = Adam(LEARNING_RATE)

    def epoch() -> float:
        kwargs = {"optimizer": opt, "epochs": 1, "batch_size": bench.batch, "progress": False}
        return net.fit(X, y, loss="cross_entropy", **kwargs)["loss"][-1]

    def trained(_: float) -> None:
        target.sync(net.layers[-1].params["W"])

    def predict() -> Any:
        return net.predict(X, batch_size=bench.batch)

    return Session(
        Timed(epoch, trained, target.memory), Timed(predict, target.sync), target.to_host
    )


def torch_session(bench: NetworkBench, w: int, target: Target, data: Any) -> Session:
    """The same epochs written natively in PyTorch (``torch.optim.Adam``, cross-entropy)."""
    import torch

    X, y = (target.to_device(a) for a in data)
    n, batch, device = X.shape[0], bench.batch, X.device
    torch.manual_seed(0)
    net = torch.nn.Sequential(*bench.layers(w, torch.nn)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

    def epoch() -> float:
        total = torch.zeros((), device=device)
        order = torch.randperm(n, device=device)
        for lo in range(0, n, batch):
            rows = order[lo : lo + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X[rows]), y[rows])
            loss.backward()
            opt.step()
            total += loss.detach() * rows.shape[0]
        return float(total) / n  # one host read per epoch, as in mlxp

    def predict() -> Any:
        with torch.no_grad():
            return torch.cat([net(X[i : i + batch]) for i in range(0, n, batch)])

    def trained(_: float) -> None:
        target.sync(net[-1].weight)

    return Session(
        Timed(epoch, trained, target.memory), Timed(predict, target.sync), target.to_host
    )


def sklearn_session(bench: NetworkBench, w: int, target: Target, data: Any) -> Session:
    """scikit-learn's MLPClassifier: one epoch is one ``partial_fit`` (Adam, no L2 penalty)."""
    from sklearn.neural_network import MLPClassifier

    X, y = data
    clf = MLPClassifier(
        hidden_layer_sizes=(w, max(1, w // 2)),
        solver="adam",
        learning_rate_init=LEARNING_RATE,
        batch_size=bench.batch,
        alpha=0.0,
        random_state=0,
    )
    classes = np.arange(CLASSES)

    def epoch() -> float:
        return float(clf.partial_fit(X, y, classes=classes).loss_)

    return Session(
        Timed(epoch, target.sync, target.memory),
        Timed(lambda: clf.predict_proba(X), target.sync),
        np.asarray,
    )


def torch_target(device: str) -> Target:
    """Native PyTorch on ``device``: tensors moved there, CUDA synchronised and its peak
    memory read."""
    import torch

    cuda = device.startswith("cuda")
    return Target(
        name=f"PyTorch {device}",
        to_device=lambda a: torch.from_numpy(a).to(device),
        to_host=lambda t: t.detach().cpu().numpy(),
        sync=(lambda _: torch.cuda.synchronize(device)) if cuda else (lambda _: None),
        peak_key=f"torch:{device}",
        memory=lambda start=False: device_memory("torch", torch.device(device), start),
    )


def torch_peers() -> list[Peer]:
    """PyTorch on the CPU and on the first CUDA device, each with the reason when absent."""
    try:
        import torch
    except ImportError as exc:
        return [Peer("PyTorch cpu", reason=f"torch is not installed ({exc})")]
    peers = [Peer("PyTorch cpu", torch_session, torch_target("cpu"))]
    if torch.cuda.is_available():
        return [*peers, Peer("PyTorch cuda:0", torch_session, torch_target("cuda:0"))]
    return [*peers, Peer("PyTorch cuda:0", reason="torch sees no CUDA device")]


def sklearn_peer() -> Peer:
    """scikit-learn's MLPClassifier on the host, if installed."""
    if importlib.util.find_spec("sklearn") is None:
        return Peer(SKLEARN, reason="scikit-learn is not installed")
    return Peer(SKLEARN, sklearn_session, host_target(SKLEARN))


@dataclass(frozen=True)
class NetworkBench:
    """One network of the registry: data, layers (mlxp or torch), cost model and peers."""

    title: str
    sizes: str  # default NxW list
    quick_sizes: str
    batch: int
    data: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    layers: Callable[..., list[Any]]  # (width, lib=mlxp.nn | torch.nn) -> layers
    madds: Callable[[int], tuple[int, int]]  # width -> (forward multiply-adds, first layer's)
    peers: Callable[[], list[Peer]]
    repeat: int = 3
    size_label: str = "n_samples × width"

    def flops(self, n: int, w: int) -> int:
        """Floating-point operations of one training epoch on n samples."""
        total, first = self.madds(w)
        return 2 * n * (3 * total - first)

    def run(
        self,
        size: tuple[int, int],
        data: tuple[np.ndarray, np.ndarray],
        targets: list[Target],
        peers: list[Peer],
        repeat: int,
        peaks: Peaks,
        settle: bool = True,
    ) -> list[dict[str, Any]]:
        """Rows for the available peers, then mlxp on every target. All are built first and
        their epochs timed taking turns (:func:`~bench.timing.interleaved`, settling each
        turn unless ``settle`` is False), so the ratios between them hold on a machine
        whose speed drifts; then each one's ``predict``."""
        runs = [(p.session, p.target) for p in peers if p.target is not None and p.session]
        runs += [(mlxp_session, target) for target in targets]
        sessions = [make(self, size[1], target, data) for make, target in runs]
        fits = interleaved([s.epoch for s in sessions], repeat, settle)
        rows = []
        for (_, target), session, (loss, fit) in zip(runs, sessions, fits, strict=True):
            out, predicted = timed(
                session.predict.call, session.predict.sync, repeat, prefix="predict_"
            )
            result = {
                **fit,
                **predicted,
                "final_loss": float(loss),
                "outputs": session.to_host(out),
            }
            rows.append(self.row(size, data, target, result, peaks))
        return rows

    def row(self, size, data, target: Target, result: dict, peaks: Peaks) -> dict[str, Any]:
        """One result row: timings, final loss, accuracy, GFLOP/s and the share of the peak."""
        n, w = size
        gflops = self.flops(n, w) / result["median_s"] / 1e9
        peak = peaks.of(target)["float32"]
        return {
            "model": self.title,
            "solver": "adam",
            "solver_used": "adam",
            "backend": target.name,
            "size": f"{n}x{w}",
            "n_samples": n,
            "width": w,
            "batch_size": self.batch,
            "dtype": "float32",
            **{k: v for k, v in result.items() if k != "outputs"},
            "accuracy_train": accuracy(result["outputs"], data[1]),
            "flops_per_epoch": self.flops(n, w),
            "gflops": gflops,
            "peak_float32_gflops": peak,
            "fraction_of_peak": None if not peak else gflops / peak,
        }


MLP = NetworkBench(
    title="MLP",
    sizes="2000x64,5000x128,20000x256",
    quick_sizes="128x32,256x32",
    batch=128,
    data=flat_image_data,
    layers=mlp_layers,
    madds=mlp_madds,
    peers=lambda: [*torch_peers(), sklearn_peer()],
)

CNN = NetworkBench(
    title="CNN",
    sizes="512x8,2048x8",
    quick_sizes="64x4,128x4",
    batch=64,
    data=image_data,
    layers=cnn_layers,
    madds=cnn_madds,
    peers=torch_peers,
)
