"""mlxp._jit's rule for compile="auto": try; on a failure warn, run uncompiled and do not
try that program again; True raises; data errors and exhausted memory propagate."""

from __future__ import annotations

import pytest

import mlxp._jit
from mlxp._jit import may_compile, out_of_memory, run_or_fall_back


@pytest.fixture(autouse=True)
def fresh_marks(monkeypatch):
    monkeypatch.setattr(mlxp._jit, "_UNTRACEABLE", type(mlxp._jit._UNTRACEABLE)())


def _raises(error):
    def run():
        raise error

    return run


def test_a_run_that_succeeds_is_returned_and_marks_nothing():
    assert run_or_fall_back("k", "auto", "step", lambda: 42) == 42
    assert may_compile("k", "auto") and may_compile("k", True) and not may_compile("k", False)


def test_a_failed_compile_warns_once_and_is_not_tried_again_under_auto():
    with pytest.warns(RuntimeWarning, match=r"compiling the step failed \(TypeError: no\)"):
        assert run_or_fall_back("k", "auto", "step", _raises(TypeError("no"))) is None
    assert not may_compile("k", "auto") and may_compile("other", "auto")
    assert may_compile("k", True)  # True always tries, and raises
    with pytest.raises(TypeError, match="no"):
        run_or_fall_back("k", True, "step", _raises(TypeError("no")))


@pytest.mark.parametrize(
    "error",
    [
        ValueError("Input X contains NaN."),
        MemoryError("out of memory allocating 8 GiB"),
        type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory."),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8 GiB."),
    ],
    ids=["data", "MemoryError", "torch's OutOfMemoryError", "XLA's RESOURCE_EXHAUSTED"],
)
def test_data_errors_and_exhausted_memory_propagate_unmarked(error):
    """The uncompiled run would meet them too: no fallback, and a later fit (a smaller
    batch) still compiles."""
    with pytest.raises(type(error)):
        run_or_fall_back("k", "auto", "step", _raises(error))
    assert may_compile("k", "auto")


def test_out_of_memory_tells_memory_from_other_runtime_errors():
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("cannot trace this"))
    assert not out_of_memory(TypeError("Abstract tracer value encountered"))


def test_failure_marks_are_bounded(monkeypatch):
    """Only the most recent UNTRACEABLE_SIZE marks are kept: a key may hold the objects a
    program was made of (a user's optimiser), and a long search must not pile them up."""
    monkeypatch.setattr(mlxp._jit, "UNTRACEABLE_SIZE", 3)
    for k in range(5):
        with pytest.warns(RuntimeWarning):
            run_or_fall_back(k, "auto", "step", _raises(TypeError("no")))
    assert [may_compile(k, "auto") for k in range(5)] == [True, True, False, False, False]


def test_config_keys_tell_users_classes_apart():
    """mlxp's own classes are keyed by their configuration (equal optimisers share a
    program); a user's subclass, which may keep more than it declares, only by itself."""
    from mlxp._jit import config_key
    from mlxp.optim import Adam

    class Mine(Adam):
        pass

    def key(opt):
        return config_key(opt, opt._hyperparameters)

    assert key(Adam(0.1, eps=1e-6)) == key(Adam(0.2, eps=1e-6)) != key(Adam(0.1, eps=1e-7))
    first = Mine(0.1)
    assert key(first) == key(first) != key(Mine(0.1))
    assert config_key(first) == config_key(first) != config_key(Adam(0.1))
    before = key(first)
    first.betas = (0.5, 0.6)  # changed in place between two fits: a program of its own
    assert key(first) != before

    class Unhashable(Mine):
        __hash__ = None

    odd = Unhashable(0.1)
    assert key(odd) != key(odd)  # never shared, and no TypeError
