"""The pure training step and its compiled forms (mlxp.nn.step).

Checked against the uncompiled step (to float tolerance), against the per-parameter
optimiser (the flat buffer's update is the same rule), and against NumPy (same seed,
same model on every backend, Dropout and BatchNorm included).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import mlxp._jit
import mlxp.nn.noise
import mlxp.nn.step
import mlxp.nn.training
from mlxp.exceptions import InvalidParameterError
from mlxp.nn import (
    GELU,
    AvgPool2D,
    BatchNorm1d,
    BatchNorm2d,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    MLPClassifier,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.step import FlatLayout
from mlxp.optim import SGD, AdamW, ExponentialLR, RMSprop
from tests.conftest import case_named

# 70 rows at batch 32: the last batch is short (padded and masked when compiled)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(70, 6))
Y = RNG.integers(0, 3, size=70)
IMAGES = RNG.normal(size=(20, 1, 8, 8))
MORE_IMAGES = RNG.normal(size=(45, 1, 8, 8))  # two batches, the second short


def _mlp(batch_norm: bool = False) -> Sequential:
    middle = [BatchNorm1d(8)] if batch_norm else [Dropout(0.3)]
    return Sequential([Dense(6, 8), ReLU(), *middle, Dense(8, 3)], seed=3)


def _cnn(batch_norm: bool = False) -> Sequential:
    # after the pooling: a bias right before BatchNorm has a zero gradient (noise for Adam)
    norm = [BatchNorm2d(2)] if batch_norm else []
    layers = [Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), *norm, Flatten(), Dense(18, 3)]
    return Sequential(layers, seed=3)


def _cnn_dropout() -> Sequential:
    layers = [Conv2D(1, 2, 3), ReLU(), Dropout(0.2), MaxPool2D(2), Flatten(), Dropout(0.3)]
    return Sequential([*layers, Dense(18, 3)], seed=3)


def _fit(model, backend, data, compile, dtype="float32", epochs=3, batch_size=32, **kwargs):
    X_, y_ = (backend.asarray(a, d) for a, d in zip(data, (dtype, None), strict=True))
    kwargs = {"loss": "cross_entropy", **kwargs}
    history = model.fit(
        X_, y_, epochs=epochs, batch_size=batch_size, progress=False, compile=compile, **kwargs
    )
    weights = {k: backend.to_numpy(v) for k, v in model.get_weights().items()}
    return history["loss"], weights


def _assert_same(got, expected, rtol):
    np.testing.assert_allclose(got[0], expected[0], rtol=rtol)
    for name, value in expected[1].items():
        np.testing.assert_allclose(got[1][name], value, rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize(
    ("make", "data", "kwargs", "against_jax"),
    [
        (_mlp, (X, Y), {"weight_decay": 0.5}, True),
        (lambda: _mlp(batch_norm=True), (X, Y), {"optimizer": "sgd"}, False),
        (_cnn, (IMAGES, Y[:20]), {}, False),
        (lambda: _cnn(batch_norm=True), (IMAGES, Y[:20]), {"batch_size": 8}, False),
    ],
    ids=["mlp-dropout-decay", "mlp-batchnorm-sgd", "cnn", "cnn-batchnorm2d"],
)
def test_jax_jit_step_equals_the_uncompiled_step_and_numpy(make, data, kwargs, against_jax):
    """jax.jit (compile="auto"; padded last batch, or BatchNorm's own shape) against
    the eager step on JAX and on NumPy: the same model from the same seed."""
    jax_case, numpy_case = case_named("jax:cpu"), case_named("numpy:cpu")
    compiled = _fit(make(), jax_case, data, "auto", **kwargs)
    if against_jax:  # eager JAX is slow to run: once
        _assert_same(compiled, _fit(make(), jax_case, data, False, **kwargs), rtol=2e-5)
    _assert_same(compiled, _fit(make(), numpy_case, data, False, **kwargs), rtol=2e-5)


def _count_blocks(monkeypatch):
    """The number of steps of each block call of the fits that follow."""
    calls, compile_block = [], mlxp.nn.training.compile_block

    def counted(*args):
        block = compile_block(*args)
        if block is None:
            return None

        def call(*inputs):
            calls.append(inputs[3][0].shape[0])
            return block(*inputs)

        return call

    monkeypatch.setattr(mlxp.nn.training, "compile_block", counted)
    return calls


@pytest.mark.parametrize("small_blocks", [False, True], ids=["one-block", "several-blocks"])
@pytest.mark.parametrize(
    ("make", "data", "kwargs"),
    [
        (_mlp, (X, Y), {"schedule": ExponentialLR(1e-2, gamma=0.5), "weight_decay": 0.1}),
        (_cnn_dropout, (MORE_IMAGES, Y[:45]), {"shuffle": False}),
        (_cnn_dropout, (MORE_IMAGES, Y[:45]), {"optimizer": "sgd"}),
        (lambda: _mlp(batch_norm=True), (X, Y), {"optimizer": "sgd"}),
        (lambda: _cnn(batch_norm=True), (MORE_IMAGES, Y[:45]), {}),
    ],
    ids=[
        "mlp-dropout-schedule",
        "cnn-dropout-in-order",
        "cnn-dropout-sgd",
        "mlp-batchnorm-sgd",
        "cnn-batchnorm2d",
    ],
)
def test_jax_blocks_equal_the_uncompiled_step(make, data, kwargs, small_blocks, monkeypatch):
    """On JAX, in-memory epochs train by compiled blocks of steps (jax.lax.scan): the same
    batches, order, Dropout draws and padded short last batch as the uncompiled step, on
    JAX and on NumPy. ``several-blocks``: blocks of 2 steps and the odd last batch by the
    compiled step, the Dropout noise drawn in blocks that end inside a block of steps.
    BatchNorm takes its statistics over the rows of weight 1: the padding is unseen."""
    jax_case = case_named("jax:cpu")
    if small_blocks:  # 2 steps per block; a noise draw of 40 rows (the old stream's rule)
        per_row = int(np.prod(data[0].shape[1:]))
        noise_row = sum(int(np.prod(s)) for s in make().noise_shapes(data[0].shape[1:]))
        monkeypatch.setattr(mlxp.nn.streaming, "GATHER_VALUES", 2 * 32 * per_row)
        monkeypatch.setattr(mlxp.nn.training, "NOISE_BLOCK_VALUES", 2 * 32 * noise_row)
        monkeypatch.setattr(mlxp.nn.noise, "NOISE_BLOCK_VALUES", 40 * noise_row)
    batches = -(-data[0].shape[0] // 32)
    if not small_blocks:
        monkeypatch.setattr(mlxp.nn.training, "BLOCK_STEPS", batches)
    calls = _count_blocks(monkeypatch)
    compiled = _fit(make(), jax_case, data, "auto", **kwargs)
    # several blocks: an odd last batch (the MLP's third) goes through the compiled step
    per_epoch = [2] * (batches // 2) if small_blocks else [batches]
    assert calls == per_epoch * 3
    _assert_same(compiled, _fit(make(), jax_case, data, False, **kwargs), rtol=2e-5)
    _assert_same(compiled, _fit(make(), case_named("numpy:cpu"), data, False, **kwargs), rtol=2e-5)


def test_jax_compiled_fit_deletes_nothing_it_was_given():
    """The compiled step donates (deletes) its arguments: what others hold goes in as
    copies. BatchNorm's running statistics held by ``get_weights`` (and early stopping's
    best weights, restored at the end) stay usable, and so does a rate given as an array
    (a second epoch ran on a deleted buffer)."""
    import jax.numpy as jnp

    from mlxp.nn.callbacks import EarlyStopping
    from mlxp.optim import Adam

    jax_case = case_named("jax:cpu")
    if jax_case.backend is None:
        pytest.skip(f"jax: {jax_case.reason}")
    data = [jax_case.asarray(X, "float32"), jax_case.asarray(Y)]
    model = _mlp(batch_norm=True)
    model.fit(*data, epochs=1, loss="cross_entropy", progress=False, compile=True)
    held = model.get_weights()
    stop = EarlyStopping("loss", patience=2, min_delta=1e9)  # the first epoch stays best
    lr = jnp.asarray(1e-2)
    kwargs = {"loss": "cross_entropy", "progress": False, "compile": True}
    model.fit(*data, epochs=5, optimizer=Adam(lr), callbacks=[stop], **kwargs)
    assert not [k for k, v in held.items() if v.is_deleted()] and not lr.is_deleted()
    expected = _mlp(batch_norm=True)
    expected.fit(*data, epochs=1, **kwargs)
    expected.fit(*data, epochs=1, optimizer=Adam(1e-2), **kwargs)
    for name, value in expected.get_weights().items():  # early stopping's restored best
        np.testing.assert_allclose(np.asarray(model.get_weights()[name]), np.asarray(value))
    np.testing.assert_allclose(
        np.asarray(model.predict(data[0])), np.asarray(expected.predict(data[0]))
    )


def test_jax_compiled_fit_takes_an_optimiser_state_that_shares_a_buffer():
    """A user's optimiser may hand out one zero array as two of its state buffers (mlxp's
    own never write in place on JAX): the compiled step, which donates each buffer, then
    gets a copy for the second (JAX refuses one buffer donated twice, and "auto" fell back
    to the eager step with a warning), and trains as the eager step does."""
    from mlxp.optim import Optimizer

    jax = pytest.importorskip("jax")

    class SharedZeros(Optimizer):
        def _init_state(self, xp, p):
            zeros = xp.zeros_like(p)  # and a second array of the same buffer
            return {"m": zeros, "v": zeros, "u": jax.device_put(zeros, zeros.device)}

        def _update(self, xp, p, g, state, lr):
            state["m"] = 0.9 * state["m"] + g
            state["v"] = 0.9 * state["v"] + g * g
            return p - lr * state["m"] / (xp.sqrt(state["v"]) + 1e-8)

    jax_case = case_named("jax:cpu")
    if jax_case.backend is None:
        pytest.skip(f"jax: {jax_case.reason}")
    fits = [  # 9 batches: a compiled block of 8 steps, then one step
        _fit(_mlp(), jax_case, (X, Y), compile, epochs=2, batch_size=8, optimizer=SharedZeros(0.01))
        for compile in (True, False)
    ]
    _assert_same(*fits, rtol=2e-5)


def test_jax_refits_compile_nothing(caplog):
    """A second fit of an equal network (another seed, a schedule) on data of the same
    size compiles no program at all (jax_log_compiles stays silent): not its block, not
    the small ops around it."""
    import jax

    jax_case = case_named("jax:cpu")
    kwargs = {"schedule": ExponentialLR(1e-2, gamma=0.5), "weight_decay": 0.1}
    _fit(_mlp(), jax_case, (X, Y), "auto", **kwargs)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        _fit(Sequential([Dense(6, 8), ReLU(), Dropout(0.3), Dense(8, 3)], seed=7), jax_case,
             (X, Y), "auto", **kwargs)  # fmt: skip
    assert not [r.message for r in caplog.records if "Compiling" in r.message]


@pytest.mark.parametrize("batch_norm", [False, True], ids=["dropout", "batchnorm"])
def test_jax_blocks_serve_data_of_any_size(monkeypatch, batch_norm):
    """Blocks have a fixed number of steps: a fit on data of another size (another count
    of batches, another remainder) traces neither the step nor the block again; with
    BatchNorm too (its short batches padded, the padding out of its statistics)."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp.nn.training, "BLOCK_STEPS", 2)
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    traces, make_step = [], mlxp.nn.training.make_step

    def counted(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def traced(*inputs):
            traces.append(1)  # runs only while jax traces
            return step(*inputs)

        return traced

    monkeypatch.setattr(mlxp.nn.training, "make_step", counted)
    _fit(_mlp(batch_norm), jax_case, (X, Y), "auto")  # 3 batches: a block of 2, the step
    first = len(traces)
    for n in (64, 20, 50):  # a block; the step alone; a block and the step
        got = _fit(_mlp(batch_norm), jax_case, (X[:n], Y[:n]), "auto")
    assert len(traces) == first
    _assert_same(
        got, _fit(_mlp(batch_norm), case_named("numpy:cpu"), (X[:50], Y[:50]), False), rtol=2e-5
    )


def test_jax_batchnorm_batch_of_one_row_is_not_padded():
    """A short batch of one row is not padded for BatchNorm (padded, BatchNorm1d's running
    variance would take the unbiased correction m/(m − 1) at m = 1): BatchNorm1d refuses
    it on JAX as on NumPy, and BatchNorm2d, with 9 values per channel in one image, trains
    on it the model NumPy trains."""
    jax_case = case_named("jax:cpu")
    for case in (jax_case, case_named("numpy:cpu")):
        with pytest.raises(ValueError, match="more than one value"):
            _fit(_mlp(batch_norm=True), case, (X[:65], Y[:65]), "auto")
    data = (MORE_IMAGES[:33], Y[:33])
    got = _fit(_cnn(batch_norm=True), jax_case, data, "auto")
    _assert_same(got, _fit(_cnn(batch_norm=True), case_named("numpy:cpu"), data, False), rtol=2e-5)


def test_jax_compiles_each_program_once(monkeypatch):
    """The rate and step count enter a jitted program placed on the device, as its own
    outputs give them back: a fit's first batch, its later batches and its later epochs
    call one compiled program (the per-batch step here, then blocks of 3 steps)."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    _fit(_mlp(), jax_case, (X, Y), "auto", epochs=3)  # 3 batches: fewer than a block
    monkeypatch.setattr(mlxp.nn.training, "BLOCK_STEPS", 3)
    _fit(_mlp(), jax_case, (X, Y), "auto", epochs=3, schedule=ExponentialLR(1e-2, gamma=0.5))
    # step, block, flatten, views (not the gather: JAX counts its programs for every data
    # shape any earlier test gave gather_block, the function it shares)
    compiled = {
        str(key)[:40]: program._cache_size()
        for key, program in mlxp._jit._JITTED.items()
        if key[0] != "gather"
    }
    assert len(compiled) == 4 and set(compiled.values()) == {1}, compiled


def test_a_softmax_over_the_batch_is_not_padded():
    """Softmax(axis=0) normalises over the rows of a batch: padding rows would enter it, so
    such a model's short last batch stays unpadded (trained by the compiled step at its
    own shape), and JAX trains the model NumPy trains. Layers along the other axes pad."""
    row_wise = Sequential([Dense(6, 3), Softmax(axis=-1)], seed=3)
    assert not row_wise.mixes_rows((6,))
    for axis, shape in ((0, (6,)), (-2, (6,)), (0, (1, 8, 8)), (-4, (1, 8, 8))):
        assert Softmax(axis=axis).mixes_rows(shape)
    assert not Softmax(axis=-2).mixes_rows((1, 8, 8))

    def make():
        return Sequential([Dense(6, 3), Softmax(axis=0)], seed=3)

    # mse against one-hot rows; SGD: the bias's gradient is 0 (a shift along the softmax's
    # axis), rounding noise that Adam's normalisation would blow up to steps of lr
    y, kwargs = np.eye(3)[Y], {"loss": "mse", "optimizer": "sgd"}
    got = _fit(make(), case_named("jax:cpu"), (X, y), "auto", **kwargs)
    _assert_same(got, _fit(make(), case_named("numpy:cpu"), (X, y), False, **kwargs), rtol=2e-5)


def test_jax_refits_reuse_the_compiled_step(monkeypatch):
    """A second fit of an equal network (another seed) traces nothing: it gets the first
    fit's jitted step, which computes with the new network's weights (NumPy's model of
    that seed); a network of another shape traces its own."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    traces, make_step = [], mlxp.nn.training.make_step

    def counted(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def traced(*inputs):
            traces.append(1)  # runs only while jax traces (or when not compiled)
            return step(*inputs)

        return traced

    monkeypatch.setattr(mlxp.nn.training, "make_step", counted)

    def mlp(seed, width=8):
        return Sequential([Dense(6, width), ReLU(), Dropout(0.3), Dense(width, 3)], seed=seed)

    _fit(mlp(3), jax_case, (X, Y), "auto")
    first = len(traces)
    assert 1 <= first <= 2  # the full and the padded last batch share one shape
    got = _fit(mlp(4), jax_case, (X, Y), "auto")
    assert len(traces) == first and len(mlxp._jit._JITTED) == 5  # step, block, flatten,
    # views and the block gather
    _assert_same(got, _fit(mlp(4), case_named("numpy:cpu"), (X, Y), False), rtol=2e-5)
    _fit(mlp(4, width=9), jax_case, (X, Y), "auto")
    assert len(traces) > first and len(mlxp._jit._JITTED) == 9  # the gather is shared


def test_every_backend_trains_the_same_model_with_dropout(backend):
    """The flat buffer, the block-drawn Dropout noise and the pure step on each backend
    (compile="auto": jax.jit on JAX) give NumPy's float64 model."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    numpy_case = case_named("numpy:cpu")
    expected = _fit(_mlp(), numpy_case, (X, Y), False, dtype="float64", epochs=2)
    got = _fit(_mlp(), backend, (X, Y), "auto", dtype=dtype, epochs=2)
    _assert_same(got, expected, rtol=1e-10 if dtype == "float64" else 2e-4)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["dropout", "batchnorm"])
def test_auto_falls_back_with_a_warning_when_compiling_fails(monkeypatch, batch_norm):
    """The fallback trains as the uncompiled step does, every epoch: a model with
    BatchNorm keeps to its unpadded batches (a padded short batch would enter its
    statistics)."""

    modes = []

    def broken(step, xp, mode, key=None):
        modes.append(mode)
        if mode is False:
            return step, None

        def fails(*args):
            raise RuntimeError("cannot trace this")

        return fails, "broken"

    expected = _fit(_mlp(batch_norm), case_named("numpy:cpu"), (X, Y), False)
    monkeypatch.setattr(mlxp.nn.training, "compile_step", broken)
    monkeypatch.setattr(mlxp._jit, "_UNTRACEABLE", type(mlxp._jit._UNTRACEABLE)())
    with pytest.warns(RuntimeWarning, match="cannot trace this"):
        got = _fit(_mlp(batch_norm), case_named("numpy:cpu"), (X, Y), "auto")
    _assert_same(got, expected, rtol=1e-6)  # rows weighted as for a compiled step
    with warnings.catch_warnings():  # an equal model's fit: not tried again, no warning
        warnings.simplefilter("error")
        again = _fit(_mlp(batch_norm), case_named("numpy:cpu"), (X, Y), "auto")
    _assert_same(again, expected, rtol=1e-6)
    assert modes == ["auto", False]  # the equal model's step was not compiled again
    modes.clear()

    def narrower():
        return Sequential([Dense(6, 5), ReLU(), Dense(5, 3)], seed=3)

    other = _fit(narrower(), case_named("numpy:cpu"), (X, Y), False)
    with pytest.warns(RuntimeWarning, match="cannot trace this"):  # another model: tried
        got = _fit(narrower(), case_named("numpy:cpu"), (X, Y), "auto")
    _assert_same(got, other, rtol=1e-6)
    assert modes == [False, "auto"]
    with pytest.raises(RuntimeError, match="cannot trace this"):  # compile=True does not hide it
        _fit(_mlp(), case_named("numpy:cpu"), (X, Y), True)


def test_compile_is_checked():
    for wrong in ("always", 1, 0, np.True_):  # 1, 0, np.True_ equal True or False
        with pytest.raises(ValueError, match="compile must be one of"):
            _fit(_mlp(), case_named("numpy:cpu"), (X, Y), wrong)
    with pytest.raises(ValueError, match=r"no compiler for the .*numpy backend"):
        _fit(_mlp(), case_named("numpy:cpu"), (X, Y), True)
    with pytest.raises(InvalidParameterError, match="compile"):
        MLPClassifier(compile="yes").fit(X, Y)


def test_optimiser_state_survives_fits_per_parameter():
    """Two fits of one epoch each equal one fit of two epochs: the flat optimiser state is
    handed back per parameter (opt.state) and picked up again."""
    from mlxp.optim import Adam

    model, opt = _mlp(), Adam(1e-2)
    once = _fit(
        _mlp(),
        case_named("numpy:cpu"),
        (X, Y),
        False,
        epochs=2,
        shuffle=False,
        optimizer=Adam(1e-2),
    )
    _fit(model, case_named("numpy:cpu"), (X, Y), False, epochs=1, shuffle=False, optimizer=opt)
    assert set(opt.state) == set(model.parameters) and opt.state["0.W"]["step"] == 3
    twice = _fit(
        model, case_named("numpy:cpu"), (X, Y), False, epochs=1, shuffle=False, optimizer=opt
    )
    _assert_same(([once[0][-1]], twice[1]), ([twice[0][-1]], once[1]), rtol=1e-12)


def test_flat_layout_round_trips_and_its_views_share_the_buffer():
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.arange(4.0)}
    layout = FlatLayout({k: v.shape for k, v in arrays.items()})
    flat = layout.flatten(arrays)
    np.testing.assert_array_equal(flat, np.concatenate([arrays["a"].ravel(), arrays["b"]]))
    views = layout.views(flat)
    assert all(np.shares_memory(v, flat) for v in views.values())
    np.testing.assert_array_equal(views["a"], arrays["a"])
    np.testing.assert_array_equal(layout.mask({"b"}, flat), [0.0] * 6 + [1.0] * 4)


@pytest.mark.skipif(
    os.environ.get("MLXP_TEST_TORCH_COMPILE") != "1",
    reason="torch.compile on CPU compiles C++ for ~25 s; MLXP_TEST_TORCH_COMPILE=1 runs it",
)
def test_torch_compile_on_request_equals_the_uncompiled_step():
    case = case_named("torch:cpu")
    with pytest.warns(UserWarning):  # Dynamo's notices about array-api-compat's caches
        compiled = _fit(_mlp(batch_norm=True), case, (X, Y), True, epochs=2)
    _assert_same(compiled, _fit(_mlp(batch_norm=True), case, (X, Y), False, epochs=2), 1e-5)


def _torch_whole_graphs(monkeypatch):
    """torch.compile as compile=True calls it, but with ``fullgraph=True`` (a graph break
    raises instead of running that part eagerly) and Dynamo's ``eager`` backend (the
    traced graph runs as it is: no C++ or Triton is generated, so a CPU checks in seconds
    what a CUDA machine will trace)."""
    torch = pytest.importorskip("torch")
    compile_ = torch.compile
    torch._dynamo.reset()  # Dynamo recompiles a code object at most 8 times per process
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", fullgraph=True, **kw)
    )


TORCH_GRAPH_CASES = {
    "activations-adamw-decay": (
        lambda: Sequential(
            [Dense(6, 8), LeakyReLU(0.1), Dense(8, 8), Tanh(), Dense(8, 8), Sigmoid()]  # noqa: RUF005
            + [Dense(8, 8), GELU(), Dropout(0.3), Dense(8, 3)],
            seed=3,
        ),
        (X, Y),
        lambda: {"optimizer": AdamW(1e-2), "weight_decay": 0.5},
    ),
    "relu-batchnorm-nesterov": (
        lambda: _mlp(batch_norm=True),
        (X, Y),
        lambda: {"optimizer": SGD(0.1, momentum=0.9, nesterov=True)},
    ),
    "softmax-mse-rmsprop": (
        lambda: Sequential([Dense(6, 8), ReLU(), Dense(8, 3), Softmax()], seed=3),
        (X, RNG.normal(size=(70, 3))),
        lambda: {"loss": "mse", "optimizer": RMSprop(1e-2)},
    ),
    "cnn-pools-batchnorm2d": (
        lambda: Sequential(
            [Conv2D(1, 2, 3, stride=2, padding=1), ReLU(), BatchNorm2d(2), AvgPool2D(2)]  # noqa: RUF005
            + [Conv2D(2, 3, 1), ReLU(), MaxPool2D(3, stride=2, padding=1), GlobalAvgPool2D()]
            + [Dense(3, 3)],
            seed=3,
        ),
        (IMAGES, Y[:20]),
        lambda: {"batch_size": 8},
    ),
    "cnn-adam": (_cnn, (IMAGES, Y[:20]), lambda: {"batch_size": 8}),
}


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.parametrize("case_name", list(TORCH_GRAPH_CASES))
def test_torch_compile_traces_each_step_whole(monkeypatch, case_name):
    """compile=True on PyTorch: Dynamo traces the whole step (every layer's forward and
    backward, the loss and the optimiser's update) as one graph, with no graph break
    (one used to split each ReLU off: ``maximum`` with a Python float asks array-api-compat's
    ``result_type`` for a dtype), and the traced step gives the eager step's results."""
    make, data, kwargs = TORCH_GRAPH_CASES[case_name]  # a fresh optimiser for each fit
    case = case_named("torch:cpu")
    eager = _fit(make(), case, data, False, epochs=2, **kwargs())
    _torch_whole_graphs(monkeypatch)
    _assert_same(_fit(make(), case, data, True, epochs=2, **kwargs()), eager, rtol=1e-6)


CUDA_GRAPH_CASES = {
    "mlp-batchnorm": (lambda: _mlp(batch_norm=True), (X, Y), {}),
    "mlp-dropout": (_mlp, (X, Y), {}),
    "cnn-dropout": (_cnn_dropout, (MORE_IMAGES, Y[:45]), {}),
    "cnn-batchnorm": (lambda: _cnn(batch_norm=True), (MORE_IMAGES, Y[:45]), {"batch_size": 8}),
}


@pytest.mark.parametrize("case_name", CUDA_GRAPH_CASES)
def test_cupy_cuda_graph_step_equals_the_uncompiled_step_or_is_refused(case_name):
    """compile=True on CuPy: the step replayed from a CUDA graph, its products by direct
    cuBLAS calls (mlxp._cublas), gives the eager step's results, for networks with dense
    and convolution layers, pooling, BatchNorm and Dropout, and a short last batch (a
    graph of its own); or, where the capture is refused (capture_refusal's reason), a
    ValueError before any work. GPU only (the logic is tested on the CPU in
    test_cuda_graph.py and test_cublas.py)."""
    case = case_named("cupy:cuda:0")
    from mlxp.nn.cuda_graph import capture_refusal

    make, data, kwargs = CUDA_GRAPH_CASES[case_name]
    if capture_refusal() is not None:
        with pytest.raises(ValueError, match="does not capture matrix products"):
            _fit(make(), case, data, True, **kwargs)
        pytest.fail(f"CuPy refused the capture: {capture_refusal()}")
    compiled = _fit(make(), case, data, True, epochs=2, **kwargs)
    _assert_same(compiled, _fit(make(), case, data, False, epochs=2, **kwargs), 1e-5)


def test_a_layer_that_writes_its_buffer_in_forward_keeps_the_writes():
    """The older contract (a buffer written in ``forward``, as BatchNorm once did) still
    holds for a user's layer: the pure step returns the value the layer wrote."""
    from mlxp.nn import ReLU

    class CountingReLU(ReLU):
        def initialize(self, rng, *, xp, device, dtype):
            self.buffers["calls"] = xp.zeros((1,), dtype=dtype, device=device)

        def buffer_shapes(self):
            return {"calls": (1,)}

        def forward(self, x, training=False):
            if training:
                self.buffers["calls"] = self.buffers["calls"] + 1
            return super().forward(x, training)

    model = Sequential([Dense(6, 8), CountingReLU(), Dense(8, 3)], seed=3)
    _fit(model, case_named("numpy:cpu"), (X, Y), False)  # 3 epochs of 3 batches
    assert model.get_weights()["1.calls"][0] == 9


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_gather_block_takes_the_epoch_order_and_pads_with_row_zero(backend, shuffled):
    """Positions start … start + k·b − 1 of the row order, row 0 of weight 0 past n; the
    compiled form (jax.jit on JAX, the function itself elsewhere) gives the same."""
    from mlxp._compat import index_dtype
    from mlxp.nn.step import compile_gather
    from mlxp.nn.streaming import gather_block

    n, k, b = 11, 2, 4
    X, y = np.arange(n * 3.0).reshape(n, 3), np.arange(n) % 3
    order = RNG.permutation(n) if shuffled else np.arange(n)
    Xd, yd = backend.asarray(X, "float32"), backend.asarray(y)
    dev = backend.device
    od = backend.xp.asarray(order, dtype=index_dtype(backend.xp, dev), device=dev)
    od = od if shuffled else None
    for start in (0, 8):  # a full block; the last, positions 11 … 15 past n
        positions = np.arange(start, start + k * b)
        rows = np.where(positions < n, order[np.minimum(positions, n - 1)], 0)
        for gather in (gather_block, compile_gather(gather_block, backend.xp)):
            xs, ys, ws = gather(Xd, yd, od, start, n, steps=k, batch_size=b)
            np.testing.assert_array_equal(backend.to_numpy(xs), X[rows].reshape(k, b, 3))
            np.testing.assert_array_equal(backend.to_numpy(ys), y[rows].reshape(k, b))
            np.testing.assert_array_equal(backend.to_numpy(ws), (positions < n).reshape(k, b))


def test_models_of_user_layers_never_share_a_key():
    """A model with a layer of the user's is keyed by a number of its own, not its id:
    ids are reused once a model is gone, and a compile failure marked under one key
    would then pass, silently, to a new model."""
    import gc

    class Mine(Dense):
        pass

    keys, ids = [], []
    for _ in range(20):
        model = Sequential([Mine(3, 2)], seed=0)
        keys.append(mlxp.nn.step.layers_key(model))
        ids.append(id(model))
        del model
        gc.collect(0)  # the youngest generation, where the model's cycles are: cheap
    assert len(set(ids)) < 20  # ids were reused: keying by id would fail
    assert len(set(keys)) == 20
    model = Sequential([Mine(3, 2)], seed=0)
    assert mlxp.nn.step.layers_key(model) == mlxp.nn.step.layers_key(model)
