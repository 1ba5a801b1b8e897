"""mlxp.nn.cuda_graph against a stand-in for CuPy (no GPU here): a capture records the
step's "kernels" (closures writing arrays in place), a replay runs them again, as a CUDA
graph replays its kernels on the buffers it captured. Checked against the step run eagerly."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import mlxp.nn.step
from mlxp.nn import cuda_graph
from mlxp.nn.cuda_graph import CudaGraphStep, capture_refusal


class FakeCuPy(types.ModuleType):
    """CuPy's capture API over NumPy: kernels run at once, or are recorded while capturing."""

    ndarray = np.ndarray

    def __init__(self) -> None:
        super().__init__("cupy")
        self.capturing = None  # the stream capturing, if any
        self.recorded: list = []
        self.allocator = self.allocations = None
        self.refuse = False  # refuse kernels while capturing, as CuPy's cuBLAS calls
        self.replays_wrong = False  # a captured product replayed as AB + 1
        self.cuda = types.SimpleNamespace(
            Stream=lambda non_blocking=False: FakeStream(self),
            get_allocator=lambda: self._allocate,
            using_allocator=self._using,
        )
        self.float32, self.uint8, self.arange = np.float32, np.uint8, np.arange

    def array(self, a, copy=True):
        return np.array(a, copy=copy)

    def ones(self, shape, dtype):
        return np.ones(shape, dtype)

    def matmul(self, A, B, xp):
        """mlxp._cublas.matmul's stand-in: one "gemm" kernel into a fresh array."""
        C, capturing = np.empty((A.shape[0], B.shape[1])), self.capturing is not None

        def run():
            C[...] = A @ B + (1 if capturing and self.replays_wrong else 0)

        self.kernel(run)
        return C

    def kernel(self, run):
        """Launch ``run`` (it writes its outputs in place): now, or into the capture."""
        if self.capturing is not None:
            if self.refuse:
                raise NotImplementedError("calling cuBLAS API during stream capture")
            self.recorded.append(run)
        else:
            run()

    def empty(self, shape, dtype=np.float64):
        allocate = self.allocator or self._allocate
        allocate(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return np.empty(shape, dtype)

    def _allocate(self, size):
        self.allocations.append(size)
        return object()

    def _using(self, allocator):
        fake = self

        class Using:
            def __enter__(self):
                fake.allocator = allocator

            def __exit__(self, *exc):
                fake.allocator = None

        return Using()


class FakeStream:
    def __init__(self, fake):
        self.fake = fake

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self):
        assert self.fake.capturing is None
        self.fake.capturing, self.fake.recorded = self, []

    def synchronize(self):
        pass

    def end_capture(self):
        assert self.fake.capturing is self
        self.fake.capturing = None
        return FakeGraph(self.fake.recorded)


class FakeGraph:
    def __init__(self, kernels):
        self.kernels = list(kernels)

    def launch(self, stream=None):
        for run in self.kernels:
            run()


@pytest.fixture
def fake(monkeypatch):
    cupy = FakeCuPy()
    cupy.allocations = []
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(cuda_graph._cublas, "matmul", cupy.matmul)
    capture_refusal.cache_clear()
    yield cupy
    capture_refusal.cache_clear()


def _step(cupy):
    """params − lr·Σ batch, and the sum, as two kernels into fresh arrays."""

    def step(params, batch, lr):
        total, new = cupy.empty(()), cupy.empty(params.shape)

        def run_total():
            total[...] = batch[0].sum() * batch[1]

        def run_new():
            new[...] = params - lr * total

        cupy.kernel(run_total)
        cupy.kernel(run_new)
        return new, {"total": total}

    return step


def _eager(params, batch, lr):
    total = batch[0].sum() * batch[1]
    return params - lr * total, total


def test_replays_equal_the_eager_step_on_new_inputs(fake):
    """First call eager, second captured and replayed, later ones replayed: every call's
    outputs are the eager step's on that call's inputs (copied in), and each is a copy
    (the next replay does not overwrite it). The capture's allocations are kept."""
    graphs = CudaGraphStep(_step(fake))
    rng = np.random.default_rng(0)
    returned = []
    for _ in range(5):
        params, batch = rng.normal(size=3), (rng.normal(size=4), rng.normal(size=()))
        new, extra = graphs(params, batch, 0.5)
        want_new, want_total = _eager(params, batch, 0.5)
        np.testing.assert_allclose(new, want_new)
        np.testing.assert_allclose(extra["total"], want_total)
        returned.append((new, want_new))
    for new, want in returned:
        np.testing.assert_allclose(new, want)
    ((graph, inputs, _, (_, kept)),) = graphs.graphs.values()
    assert len(graph.kernels) == 2 and len(inputs) == 3 and len(kept) == 3  # and a workspace
    assert kept[0].nbytes == cuda_graph._cublas.WORKSPACE_BYTES


def test_python_numbers_and_shapes_key_their_own_graph(fake):
    graphs = CudaGraphStep(_step(fake))
    params, batch = np.ones(3), (np.ones(4), np.ones(()))
    for lr in (0.5, 0.5, 0.25, 0.25, 0.5):
        np.testing.assert_allclose(graphs(params, batch, lr)[0], _eager(params, batch, lr)[0])
    graphs(np.ones(2), batch, 0.5)
    graphs(np.ones(2), batch, 0.5)
    assert len(graphs.graphs) == 3


def test_a_failed_capture_is_ended_and_raised(fake):
    graphs = CudaGraphStep(_step(fake))
    args = (np.ones(3), (np.ones(4), np.ones(())), 0.5)
    graphs(*args)
    fake.refuse = True
    with pytest.raises(RuntimeError, match=r"CUDA graph failed.*cuBLAS.*compile=False"):
        graphs(*args)
    assert fake.capturing is None and not graphs.graphs


def test_a_failed_eager_call_is_not_taken_for_seen(fake):
    calls = []

    def step(x):
        calls.append(fake.capturing)
        if len(calls) == 1:
            raise ValueError("bad batch")
        return x

    graphs = CudaGraphStep(step)
    with pytest.raises(ValueError, match="bad batch"):
        graphs(np.ones(2))
    graphs(np.ones(2))
    assert calls[1] is None  # run eagerly again, not captured


@pytest.mark.parametrize("refuse", [True, False])
def test_capture_refusal_reports_cupy_reason_and_compile_step_raises(fake, refuse):
    fake.refuse = refuse
    reason = capture_refusal()
    assert fake.capturing is None
    xp = types.ModuleType("cupy")  # what is_cupy_namespace looks at: the name
    if refuse:
        assert reason.startswith("NotImplementedError: calling cuBLAS")
        with pytest.raises(ValueError, match=r"compile=True on CuPy.*cuBLAS.*issues/6290"):
            mlxp.nn.step.compile_step(lambda: None, xp, True)
    else:
        assert reason is None
        step, compiler = mlxp.nn.step.compile_step(lambda: None, xp, True)
        assert isinstance(step, CudaGraphStep) and compiler == "cuda-graph"
    assert mlxp.nn.step.compile_step(print, xp, "auto") == (print, None)
    assert cuda_graph.CAPTURE_ISSUE.endswith("6290")


def test_capture_refusal_checks_the_replayed_product_and_the_route_itself(fake, monkeypatch):
    """A captured product that replays wrong is refused, with what it gave; so is a route
    that fails outside any capture (no libcublas found), with its reason."""
    fake.replays_wrong = True
    assert capture_refusal().startswith("captured products replayed as [[[")
    capture_refusal.cache_clear()

    def missing(A, B, xp):
        raise RuntimeError("no libcublas.so among the libraries this process has loaded")

    monkeypatch.setattr(cuda_graph._cublas, "matmul", missing)
    reason = "RuntimeError: no libcublas.so among the libraries this process has loaded"
    assert capture_refusal() == reason
    assert fake.capturing is None


def test_the_eager_run_and_the_capture_make_products_by_direct_cublas_calls(fake):
    """Both runs of a step before its replays are inside direct_products, so a capture
    meets the cuBLAS calls its eager run made, the capture with a workspace kept with the
    graph; outside a step, products are CuPy's own."""
    from mlxp._cublas import _DIRECT

    inside = []
    graphs = CudaGraphStep(lambda x: (inside.append(_DIRECT.get()), x)[1])
    for _ in range(3):
        graphs(np.ones(2))
    (eager_on, eager_workspace), (captured_on, workspace) = inside
    assert eager_on and eager_workspace is None  # eagerly: cuBLAS's own pool
    assert captured_on and workspace.nbytes == cuda_graph._cublas.WORKSPACE_BYTES
    ((*_, (_, kept)),) = graphs.graphs.values()
    assert kept[0] is workspace and _DIRECT.get() == (False, None)
