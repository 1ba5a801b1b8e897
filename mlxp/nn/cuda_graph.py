"""CUDA graphs on CuPy: a training step captured once per input shape, then replayed
(:func:`mlxp.nn.step.compile_step` with ``compile=True``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CudaGraphStep"]


class CudaGraphStep:
    """A step captured once into a CUDA graph (``cupy.cuda.Graph`` by stream capture) per
    input shape, then replayed: the inputs are copied into the captured buffers and the
    outputs read from its buffers. Untested here (no GPU): written from CuPy's docs.

    The first call of a shape runs the step eagerly (allocations and kernel compilation
    must not happen during capture), the second captures it, later calls replay it."""

    graphs: dict[Any, tuple[Any, Any, Any, Any]]  # key: (graph, inputs, outputs, stream)
    seen: set[Any]

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.graphs, self.seen = step, {}, set()

    def __call__(self, *args: Any) -> Any:
        import cupy

        leaves = _leaves(args)
        key = tuple((tuple(a.shape), str(a.dtype)) for a in leaves)
        if key not in self.seen:
            self.seen.add(key)
            return self.step(*args)
        if key not in self.graphs:
            inputs = [cupy.array(a, copy=True) for a in leaves]
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                stream.begin_capture()
                outputs = self.step(*_rebuild(args, iter(inputs)))
                graph = stream.end_capture()
            self.graphs[key] = (graph, inputs, outputs, stream)
        graph, inputs, outputs, stream = self.graphs[key]
        for buffer, value in zip(inputs, leaves, strict=True):
            buffer[...] = value
        graph.launch(stream)
        stream.synchronize()
        return _copy_tree(outputs)


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
