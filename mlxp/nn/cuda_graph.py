"""CUDA graphs on CuPy: a training step captured once per input shape, then replayed
(:func:`mlxp.nn.step.compile_step` with ``compile=True``).

CuPy refuses every cuBLAS call while a stream is capturing (``NotImplementedError``,
:data:`CAPTURE_ISSUE`), so the step's matrix products, which the math makes through
:mod:`mlxp._products`, call cuBLAS directly while a step runs here
(:func:`mlxp._cublas.direct_products`), eagerly and captured alike. :func:`capture_refusal`
checks once per process that a product so made is captured and replayed right, and
``compile=True`` on CuPy raises before any work where it is not. Tested on the CPU against
a stand-in for CuPy (``tests/test_cuda_graph.py``); on a GPU by ``bench/gpu_check.sh``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from mlxp import _cublas

__all__ = ["CAPTURE_ISSUE", "CudaGraphStep", "capture_refusal"]

CAPTURE_ISSUE = "https://github.com/cupy/cupy/issues/6290"
"""CuPy's issue on cuBLAS calls during stream capture."""


@functools.cache
def capture_refusal() -> str | None:
    """None where CuPy captures the products of :func:`mlxp._cublas.matmul` into a CUDA
    graph and the graph's replay computes them as CuPy's own ``@`` does; else the reason.

    A (2, 3) by a (3, 4) stored column-major (op N and op T) and the transposed product:
    made once outside the capture (the library, the handle, the kernels), then captured on
    a stream of its own into a workspace kept with the graph, the capture ended either
    way; the graph is then launched on the current stream, after the work that made the
    operands, and its results compared with CuPy's (one host read, once per process)."""
    import cupy

    a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3) - 2
    b = (cupy.arange(12, dtype=cupy.float32).reshape(4, 3) % 5).T  # column-major (3, 4)
    expected = (a @ b, b.T @ a.T)
    try:
        with _cublas.direct_products():
            _cublas.matmul(a, b, xp=cupy)
    except Exception as reason:
        return f"{type(reason).__name__}: {reason}"
    stream, workspace = cupy.cuda.Stream(non_blocking=True), _workspace(cupy)
    with stream, _cublas.direct_products(workspace):
        try:
            stream.begin_capture()
            got = (_cublas.matmul(a, b, xp=cupy), _cublas.matmul(b.T, a.T, xp=cupy))
        except Exception as reason:
            _end_capture(stream)
            return f"{type(reason).__name__}: {reason}"
        try:
            graph = stream.end_capture()  # an invalidated capture raises here
        except Exception as reason:
            return f"{type(reason).__name__}: {reason}"
    graph.launch()  # on the current stream, as the operands were made and as they are read
    if not all(bool((g == e).all()) for g, e in zip(got, expected, strict=True)):
        return (
            f"captured products replayed as {[g.tolist() for g in got]}, "
            f"not as CuPy's {[e.tolist() for e in expected]}"
        )
    return None


def _workspace(cupy: Any) -> Any:
    """A cuBLAS workspace for one graph (:data:`mlxp._cublas.WORKSPACE_BYTES`)."""
    return cupy.empty(_cublas.WORKSPACE_BYTES, dtype=cupy.uint8)


class CudaGraphStep:
    """A step captured into a CUDA graph (``cupy.cuda.Graph`` by stream capture) once per
    input shape, then replayed: the inputs are copied into the captured buffers and the
    outputs copied out of the graph's, all on the current stream, so each replay runs
    after the work that made its inputs and before the work that reads its outputs.

    The first call of a shape runs the step eagerly (allocations, kernel compilation and
    cuBLAS's choice of kernels happen outside the capture), the second captures it
    (:func:`_capture`), later calls replay it; both make their products by direct cuBLAS
    calls (:func:`mlxp._cublas.direct_products`), so the capture meets the calls the eager
    run made. Python numbers among the arguments are part of the graph, so they are part
    of the key with the shapes and dtypes of the arrays."""

    graphs: dict[Any, tuple[Any, list[Any], Any, Any]]  # key: (graph, inputs, outputs, kept)
    seen: set[Any]

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.graphs, self.seen = step, {}, set()

    def __call__(self, *args: Any) -> Any:
        leaves = _leaves(args)
        key = (_structure(args), tuple((tuple(a.shape), str(a.dtype)) for a in leaves))
        if key not in self.seen:
            with _cublas.direct_products():
                outputs = self.step(*args)
            self.seen.add(key)  # once the eager run got through
            return outputs
        if key not in self.graphs:
            self.graphs[key] = _capture(self.step, args, leaves)
        graph, inputs, outputs, _ = self.graphs[key]
        for buffer, value in zip(inputs, leaves, strict=True):
            buffer[...] = value
        graph.launch()  # on the current stream, as the copies in and out
        return _copy_tree(outputs)


def _capture(step: Callable[..., Any], args: Any, leaves: list[Any]) -> tuple[Any, ...]:
    """(graph, input buffers, outputs, what the graph holds): ``step`` captured on a stream
    of its own, its products' cuBLAS workspace allocated before the capture. That and each
    block allocated while capturing are kept with the graph, which refers to them by
    address: back in the pool a block could be handed out again, or released by
    ``free_all_blocks``, while replays still write it. A failed capture is ended (the
    stream leaves capture mode) and raised as a RuntimeError naming CuPy's reason."""
    import cupy

    inputs = [cupy.array(a, copy=True) for a in leaves]
    workspace = _workspace(cupy)
    kept: list[Any] = [workspace]
    allocate = cupy.cuda.get_allocator()

    def keeping(size: int) -> Any:
        memory = allocate(size)
        kept.append(memory)
        return memory

    stream = cupy.cuda.Stream(non_blocking=True)
    with cupy.cuda.using_allocator(keeping), stream, _cublas.direct_products(workspace):
        try:
            stream.begin_capture()
            outputs = step(*_rebuild(args, iter(inputs)))
        except Exception as reason:
            _end_capture(stream)
            raise RuntimeError(
                f"compile=True: capturing the training step in a CUDA graph failed "
                f"({type(reason).__name__}: {reason}); fit with compile=False."
            ) from reason
        graph = stream.end_capture()
    return graph, inputs, outputs, (stream, kept)


def _end_capture(stream: Any) -> None:
    """Take ``stream`` out of capture mode, dropping the graph (an invalidated capture
    raises as it ends: the stream has left capture mode all the same)."""
    with contextlib.suppress(Exception):  # the capture's own error is the one to report
        stream.end_capture()


def _structure(tree: Any) -> Any:
    """The tree's shape, with its Python numbers and None, the arrays as "array"."""
    if isinstance(tree, (tuple, list)):
        return (type(tree).__name__, tuple(_structure(item) for item in tree))
    if isinstance(tree, dict):
        return ("dict", tuple((key, _structure(tree[key])) for key in sorted(tree)))
    if tree is None or isinstance(tree, (int, float)):
        return (type(tree).__name__, tree)
    return "array"


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [] if tree is None or isinstance(tree, (int, float)) else [tree]


def _rebuild(tree: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(tree, (tuple, list)):
        return type(tree)(_rebuild(item, leaves) for item in tree)
    if isinstance(tree, dict):
        return {key: _rebuild(tree[key], leaves) for key in sorted(tree)}
    return tree if tree is None or isinstance(tree, (int, float)) else next(leaves)


def _copy_tree(tree: Any) -> Any:
    """The outputs of a replay, copied out of the graph's buffers (the next replay
    overwrites them)."""
    return _rebuild(tree, iter([leaf.copy() for leaf in _leaves(tree)]))
