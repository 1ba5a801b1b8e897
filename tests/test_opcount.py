"""The benchmark's op counter (bench/opcount.py) against counts known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from bench.opcount import Count, NamespaceOps, TorchOps, marginal


def test_torch_counts_kernels_not_views_and_syncs_apart():
    torch = pytest.importorskip("torch")
    a, b, c = torch.ones(3, 4), torch.ones(4, 2), torch.ones(3, 2)
    with TorchOps() as count:
        out = a @ b + c  # mm, add
        view = out.reshape(-1)[1:].unsqueeze(0).T  # view, slice, unsqueeze, t: no kernel
        total = view.sum()  # sum
        out.T.reshape(-1)  # a transposed reshape copies: one kernel (clone)
    assert (count.ops, count.syncs) == (4, 0)
    assert count.by_name == {"mm": 1, "add": 1, "sum": 1, "clone": 1}
    with TorchOps() as count:
        total.item()
        bool(total > 0)  # gt, then the read
    assert (count.ops, count.syncs) == (1, 2)
    with TorchOps() as count:
        torch.linalg.cholesky(torch.eye(2))  # the error check reads the status back on CUDA
    assert count.syncs == 1 and count.by_name["linalg_cholesky_ex"] == 1


def test_namespace_counts_functions_and_operators_once_each():
    strict = pytest.importorskip("array_api_strict")
    a = strict.ones((3, 4))
    with NamespaceOps(strict, type(a)) as count:
        b = strict.sum(a * a, axis=1)  # __mul__, sum
        c = strict.reshape(b, (3, 1))[0, :]  # a view and an index: not counted
        d = -c + 1.0  # __neg__, __add__
        float(d[0])  # a sync
    assert count.operators
    assert (count.ops, count.syncs) == (4, 1)
    assert count.by_name == {"mul": 1, "sum": 1, "neg": 1, "add": 1, "sync:float": 1}
    with NamespaceOps(strict, type(a)) as count:
        strict.matmul(a, strict.ones((4, 2)))
    assert count.ops == 2  # ones, matmul: calls inside matmul are not counted again
    assert type(a).__mul__.__name__ == "__mul__" and not hasattr(type(a).__mul__, "__wrapped__")


def test_namespace_on_numpy_counts_functions_only():
    import array_api_compat.numpy as xp

    a = xp.ones((2, 2))
    with NamespaceOps(xp, type(a)) as count:
        xp.exp(a) + a  # the ndarray's + cannot be patched
    assert (count.ops, count.operators) == (1, False)
    assert not hasattr(xp.exp, "__wrapped__")


def test_marginal_removes_fixed_costs():
    class Steps(Count):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    def run(m, counter):
        for _ in range(3):
            counter.op("setup")
        counter.sync("final")
        for _ in range(m):
            counter.op("step")
            counter.op("step")

    made = []

    def factory():
        made.append(Steps())
        return made[-1]

    result = marginal(lambda m: run(m, made[-1]), factory, k=4)
    assert result == {
        "ops": 2.0,
        "syncs": 0.0,
        "operators_counted": True,
        "by_name": {"step": 2.0},
    }
    assert np.array_equal([c.ops for c in made], [11, 19, 11, 19])  # warm-ups (dropped), k, 2k
