"""CUDA graphs on CuPy: a training step captured once per input shape, then replayed
(:func:`mlxp.nn.step.compile_step` with ``compile=True``).

Not yet run on a GPU: written from CuPy's source (14.x) and tested on the CPU against a
stand-in for CuPy (``tests/test_cuda_graph.py``). CuPy 14 refuses every cuBLAS call while
a stream is capturing (``NotImplementedError``, :data:`CAPTURE_ISSUE`), so a step with a
matrix product cannot be captured there: :func:`capture_refusal` finds out once per
process, and ``compile=True`` on CuPy then raises before any work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CAPTURE_ISSUE", "CudaGraphStep", "capture_refusal"]

CAPTURE_ISSUE = "https://github.com/cupy/cupy/issues/6290"
"""CuPy's issue on cuBLAS calls during stream capture."""


@functools.cache
def capture_refusal() -> str | None:
    """None where CuPy captures a matrix product into a CUDA graph; else CuPy's reason.

    The product is made once outside the capture (the cuBLAS handle, the kernel), then
    captured on a stream of its own; the capture is ended either way, its graph dropped."""
    import cupy

    a = cupy.ones((2, 2), dtype=cupy.float32)
    a @ a
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        try:
            stream.begin_capture()
            a @ a
        except Exception as reason:
            _end_capture(stream)
            return f"{type(reason).__name__}: {reason}"
        try:
            stream.end_capture()  # an invalidated capture raises here
        except Exception as reason:
            return f"{type(reason).__name__}: {reason}"
    return None


class CudaGraphStep:
    """A step captured into a CUDA graph (``cupy.cuda.Graph`` by stream capture) once per
    input shape, then replayed: the inputs are copied into the captured buffers and the
    outputs copied out of the graph's, all on the current stream, so each replay runs
    after the work that made its inputs and before the work that reads its outputs.

    The first call of a shape runs the step eagerly (allocations and kernel compilation
    happen outside the capture), the second captures it (:func:`_capture`), later calls
    replay it. Python numbers among the arguments are part of the graph, so they are part
    of the key with the shapes and dtypes of the arrays."""

    graphs: dict[Any, tuple[Any, list[Any], Any, Any]]  # key: (graph, inputs, outputs, kept)
    seen: set[Any]

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.graphs, self.seen = step, {}, set()

    def __call__(self, *args: Any) -> Any:
        leaves = _leaves(args)
        key = (_structure(args), tuple((tuple(a.shape), str(a.dtype)) for a in leaves))
        if key not in self.seen:
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
    of its own. Each block allocated while capturing is kept with the graph, which refers
    to it by address: back in the pool it could be handed out again, or released by
    ``free_all_blocks``, while replays still write it. A failed capture is ended (the
    stream leaves capture mode) and raised as a RuntimeError naming CuPy's reason."""
    import cupy

    inputs = [cupy.array(a, copy=True) for a in leaves]
    kept: list[Any] = []
    allocate = cupy.cuda.get_allocator()

    def keeping(size: int) -> Any:
        memory = allocate(size)
        kept.append(memory)
        return memory

    stream = cupy.cuda.Stream(non_blocking=True)
    with cupy.cuda.using_allocator(keeping), stream:
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
