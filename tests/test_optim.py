"""Optimisers and schedules against hand-derived NumPy updates, torch.optim and closed forms."""

from __future__ import annotations

import inspect
import math

import array_api_compat as aac
import numpy as np
import pytest

from mlxp.exceptions import InvalidParameterError
from mlxp.optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    Optimizer,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    apply_schedule,
)
from tests.conftest import rtol_for

# Non-trivial hyperparameters; the keyword names are torch.optim's, so each config
# also builds the torch optimiser it must match.
CONFIGS = {
    "sgd": (SGD, {"lr": 0.1}),
    "sgd-momentum": (SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
    "sgd-nesterov": (SGD, {"lr": 0.05, "momentum": 0.7, "nesterov": True, "weight_decay": 0.05}),
    "adam": (Adam, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}),
    "adamw": (AdamW, {"lr": 0.05, "betas": (0.85, 0.9), "eps": 1e-7, "weight_decay": 0.3}),
    "rmsprop": (RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1}),
    "rmsprop-centered-momentum": (
        RMSprop,
        {
            "lr": 0.01,
            "alpha": 0.8,
            "eps": 1e-6,
            "momentum": 0.6,
            "centered": True,
            "weight_decay": 0.05,
        },
    ),
}
N_STEPS = 5
# One config per class, with every option that adds state, for the checks of mechanics.
RICH = ["sgd-nesterov", "adam", "adamw", "rmsprop-centered-momentum"]


def _make(config: str):
    cls, hp = CONFIGS[config]
    return cls(**hp)


# --------------------------------------------------------------------------- a test problem
def _problem(rng) -> tuple[dict, dict]:
    """Initial parameters and the constants of loss ½tr(WᵀAW) − tr(BᵀW) + ½c‖b‖² − dᵀb."""
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    consts = {
        "A": Q @ np.diag([0.5, 2.0, 4.0]) @ Q.T,
        "B": rng.normal(size=(3, 2)),
        "c": 1.5,
        "d": rng.normal(size=2),
    }
    return {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}, consts


def _grads(params: dict, consts: dict) -> dict:
    """The loss's gradients, written in operators every library shares."""
    return {
        "W": consts["A"] @ params["W"] - consts["B"],
        "b": consts["c"] * params["b"] - consts["d"],
    }


def _on(backend, arrays: dict, dtype: str) -> dict:
    return {k: v if np.isscalar(v) else backend.asarray(v, dtype) for k, v in arrays.items()}


def _run(opt, params: dict, consts: dict, n: int) -> list[dict]:
    trajectory = []
    for _ in range(n):
        params = opt.step(params, _grads(params, consts))
        trajectory.append(params)
    return trajectory


# --------------------------------------------------------------------------- NumPy re-derivations
def _reference(config: str, params: dict, consts: dict, n: int) -> list[dict]:
    """The textbook updates in float64 NumPy, with explicit bias-corrected moments."""
    cls, hp = CONFIGS[config]
    lr, wd = hp["lr"], hp.get("weight_decay", 0.0)
    state = {k: {} for k in params}
    trajectory = []
    for t in range(1, n + 1):
        grads = _grads(params, consts)
        new = {}
        for k, p in params.items():
            g, s = grads[k], state[k]
            if cls is SGD:
                d = g + wd * p
                mu = hp.get("momentum", 0.0)
                if mu:
                    s["v"] = d if t == 1 else mu * s["v"] + d
                    d = d + mu * s["v"] if hp.get("nesterov") else s["v"]
                new[k] = p - lr * d
            elif cls in (Adam, AdamW):
                b1, b2 = hp["betas"]
                if cls is AdamW:
                    p = p - lr * wd * p
                else:
                    g = g + wd * p
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
                m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
                new[k] = p - lr * m_hat / (np.sqrt(v_hat) + hp["eps"])
            else:
                alpha, mu = hp["alpha"], hp.get("momentum", 0.0)
                g = g + wd * p
                s["sq"] = alpha * s.get("sq", 0.0) + (1 - alpha) * g**2
                var = s["sq"]
                if hp.get("centered"):
                    s["mean"] = alpha * s.get("mean", 0.0) + (1 - alpha) * g
                    var = var - s["mean"] ** 2
                step = g / (np.sqrt(var) + hp["eps"])
                if mu:
                    s["buf"] = mu * s.get("buf", 0.0) + step
                    step = s["buf"]
                new[k] = p - lr * step
        params = new
        trajectory.append(params)
    return trajectory


def _torch_trajectory(config: str, params: dict, consts: dict, n: int) -> list[dict]:
    torch = pytest.importorskip("torch")
    cls, hp = CONFIGS[config]
    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    tconsts = {k: v if np.isscalar(v) else torch.tensor(v) for k, v in consts.items()}
    opt = getattr(torch.optim, cls.__name__)(list(tensors.values()), **hp)
    trajectory = []
    for _ in range(n):
        with torch.no_grad():
            grads = _grads(tensors, tconsts)
        for k, t in tensors.items():
            t.grad = grads[k]
        opt.step()
        trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return trajectory


def _assert_trajectories_close(got: list[dict], expected: list[dict], backend, rtol, atol) -> None:
    for step, (g, e) in enumerate(zip(got, expected, strict=True), start=1):
        for k in e:
            np.testing.assert_allclose(
                backend.to_numpy(g[k]), e[k], rtol=rtol, atol=atol, err_msg=f"{k} at step {step}"
            )


@pytest.mark.parametrize("config", CONFIGS)
def test_trajectory_matches_numpy_derivation(backend, dtype, config, rng):
    params, consts = _problem(rng)
    got = _run(_make(config), _on(backend, params, dtype), _on(backend, consts, dtype), N_STEPS)
    expected = _reference(config, params, consts, N_STEPS)
    rtol = rtol_for(dtype) * 10
    _assert_trajectories_close(got, expected, backend, rtol=rtol, atol=rtol)
    assert all(p.dtype == backend.dtype(dtype) for p in got[-1].values())


@pytest.mark.parametrize("config", CONFIGS)
def test_trajectory_matches_torch_optim(backend, config, rng):
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    params, consts = _problem(rng)
    expected = _torch_trajectory(config, params, consts, N_STEPS)
    got = _run(_make(config), _on(backend, params, "float64"), _on(backend, consts, "float64"), 5)
    _assert_trajectories_close(got, expected, backend, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("in_place", [False, True], ids=["pure", "in-place"])
@pytest.mark.parametrize("config", CONFIGS)
def test_flat_buffer_update_matches_torch_optim(backend, config, in_place, rng):
    """``update`` on every parameter flattened into one buffer (the training loop's
    multi-tensor path) follows torch.optim's trajectory, and leaves its inputs alone
    unless told they are given up (``in_place``, where NumPy's Adam writes into them)."""
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    params, consts = _problem(rng)
    expected = _torch_trajectory(config, params, consts, N_STEPS)
    xp, opt = backend.xp, _make(config)
    cx, shapes = _on(backend, consts, "float64"), {k: v.shape for k, v in params.items()}
    flat = xp.concat([xp.reshape(v, (-1,)) for v in _on(backend, params, "float64").values()])
    state, got = opt.init_state(flat), []
    for _ in range(N_STEPS):
        unflat = {"W": xp.reshape(flat[:6], shapes["W"]), "b": flat[6:]}
        g = _grads(unflat, cx)
        before = {**state, "p": flat}
        kept = {k: np.array(backend.to_numpy(v), copy=True) for k, v in before.items()}
        flat, state = opt.update(
            flat, xp.concat([xp.reshape(g["W"], (-1,)), g["b"]]), state, in_place=in_place
        )
        assert before["step"] == state["step"] - 1
        for k, v in before.items():  # given up (in place): may have been written into
            if not in_place:
                np.testing.assert_array_equal(backend.to_numpy(v), kept[k])
        got.append({"W": xp.reshape(flat[:6], shapes["W"]) * 1.0, "b": flat[6:] * 1.0})
    _assert_trajectories_close(got, expected, backend, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- convergence
# (optimiser, schedule or None); L2 decay moves the optimum to (A + λI)⁻¹b. AdamW's
# decoupled decay has no closed-form fixed point, so it runs without decay here.
MINIMISERS = {
    "sgd-heavy-ball": lambda: (SGD(0.15, momentum=0.3, weight_decay=0.1), None),
    "sgd-nesterov": lambda: (SGD(0.1, momentum=0.5, nesterov=True), None),
    "adam": lambda: (
        Adam(0.1, betas=(0.5, 0.999), weight_decay=0.1),
        ExponentialLR(0.1, gamma=0.98),
    ),
    "adamw": lambda: (AdamW(0.1, betas=(0.5, 0.999), weight_decay=0.0), ExponentialLR(0.1, 0.98)),
    "rmsprop": lambda: (
        RMSprop(0.01, alpha=0.999, momentum=0.5, centered=True, weight_decay=0.1),
        None,
    ),
}


@pytest.mark.parametrize("name", MINIMISERS)
def test_minimises_convex_quadratic(backend, dtype, name, rng):
    """f(p) = ½pᵀAp − bᵀp (+ ½λ‖p‖²) with A SPD, eigenvalues 1..10: minimum at (A + λI)⁻¹b."""
    opt, schedule = MINIMISERS[name]()
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    A, b = Q @ np.diag(np.linspace(1.0, 10.0, 5)) @ Q.T, rng.normal(size=5)
    optimum = np.linalg.solve(A + getattr(opt, "weight_decay", 0.0) * np.eye(5), b)
    if isinstance(opt, AdamW):
        optimum = np.linalg.solve(A, b)
    Ax, bx = backend.asarray(A, dtype), backend.asarray(b, dtype)
    params = {"p": backend.xp.zeros_like(bx)}
    for epoch in range(150):
        if schedule is not None:
            apply_schedule(opt, schedule, epoch)
        params = opt.step(params, {"p": Ax @ params["p"] - bx})
    tol = 1e-9 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(backend.to_numpy(params["p"]), optimum, rtol=tol, atol=tol)
    assert params["p"].dtype == backend.dtype(dtype)


# --------------------------------------------------------------------------- arrays and state
@pytest.mark.parametrize("config", CONFIGS)
def test_state_lives_with_the_parameters_and_inputs_stay_unchanged(backend, dtype, config, rng):
    params, consts = _problem(rng)
    px, cx = _on(backend, params, dtype), _on(backend, consts, dtype)
    before = {k: backend.to_numpy(v).copy() for k, v in px.items()}
    grads = _grads(px, cx)
    grads_before = {k: backend.to_numpy(v).copy() for k, v in grads.items()}
    opt = _make(config)
    new = opt.step(px, grads)
    new = opt.step(new, _grads(new, cx))
    for k in params:
        assert new[k] is not px[k]
        np.testing.assert_array_equal(backend.to_numpy(px[k]), before[k])
        np.testing.assert_array_equal(backend.to_numpy(grads[k]), grads_before[k])
        assert aac.array_namespace(new[k]) is aac.array_namespace(px[k])
        assert aac.device(new[k]) == backend.device and new[k].dtype == backend.dtype(dtype)
        state = opt.state[k]
        assert state["step"] == 2
        for buffer in (v for name, v in state.items() if name != "step"):
            assert aac.array_namespace(buffer) is aac.array_namespace(px[k])
            assert aac.device(buffer) == backend.device
            assert buffer.dtype == backend.dtype(dtype) and buffer.shape == px[k].shape


@pytest.mark.parametrize("config", RICH)
def test_reset_forgets_state(backend, config, rng):
    params, consts = _problem(rng)
    px, cx = _on(backend, params, None), _on(backend, consts, None)
    opt = _make(config)
    _run(opt, px, cx, 3)
    opt.reset()
    assert opt.state == {}
    again, fresh = _run(opt, px, cx, 2)[-1], _run(_make(config), px, cx, 2)[-1]
    for k in params:
        np.testing.assert_array_equal(backend.to_numpy(again[k]), backend.to_numpy(fresh[k]))


@pytest.mark.parametrize("config", RICH)
def test_state_dict_round_trip(backend, config, rng):
    params, consts = _problem(rng)
    px, cx = _on(backend, params, None), _on(backend, consts, None)
    opt = _make(config)
    middle = _run(opt, px, cx, 2)[-1]
    saved = opt.state_dict()
    saved_buffers = {k: dict(s) for k, s in saved["state"].items()}
    expected = _run(opt, middle, cx, 2)[-1]
    assert {k: dict(s) for k, s in saved["state"].items()} == saved_buffers  # not altered

    cls, hp = CONFIGS[config]
    restored = cls(lr=1.0)
    restored.load_state_dict(saved)
    assert restored.lr == hp["lr"] and repr(restored) == repr(_make(config))
    got = _run(restored, middle, cx, 2)[-1]
    for k in params:
        np.testing.assert_array_equal(backend.to_numpy(got[k]), backend.to_numpy(expected[k]))
    with pytest.raises(ValueError, match="cannot be loaded"):
        (Adam if cls is SGD else SGD)(lr=0.1).load_state_dict(saved)


@pytest.mark.parametrize("config", RICH)
def test_lr_may_be_a_0d_array_of_the_backend(backend, config, rng):
    """A data-derived 0-d lr, even float64 with float32 parameters, keeps them float32."""
    params, consts = _problem(rng)
    px, cx = _on(backend, params, "float32"), _on(backend, consts, "float32")
    lr = CONFIGS[config][1]["lr"]
    expected = _run(_make(config), px, cx, 3)[-1]
    for lr_dtype in backend.float_dtypes:
        opt = _make(config)
        opt.lr = backend.asarray(np.asarray(lr), lr_dtype)
        got = _run(opt, px, cx, 3)[-1]
        for k in params:
            assert got[k].dtype == backend.dtype("float32")
            np.testing.assert_allclose(
                backend.to_numpy(got[k]), backend.to_numpy(expected[k]), rtol=1e-6, atol=1e-6
            )


@pytest.mark.parametrize("config", RICH)
def test_step_reads_nothing_back_to_the_host(config, rng):
    """Under jax.jit, a host read of a traced array (float(), bool()) would raise."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    params, consts = _problem(rng)
    px = {k: jnp.asarray(v, dtype="float32") for k, v in params.items()}
    cx = {k: v if np.isscalar(v) else jnp.asarray(v, dtype="float32") for k, v in consts.items()}

    def three_steps(params, lr):
        opt = _make(config)
        opt.lr = lr
        return _run(opt, params, cx, 3)[-1]

    lr = jnp.asarray(CONFIGS[config][1]["lr"], dtype="float32")
    got, expected = jax.jit(three_steps)(px, lr), three_steps(px, lr)
    for k in params:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)


def test_parameters_without_gradients_pass_through(rng):
    params, consts = _problem(rng)
    opt = Adam(0.1)
    new = opt.step(params, {"W": _grads(params, consts)["W"], "b": None})
    assert new["b"] is params["b"] and set(opt.state) == {"W"}
    new = opt.step(params, {"W": _grads(params, consts)["W"]})
    assert opt.state["W"]["step"] == 2
    with pytest.raises(ValueError, match="unknown parameters"):
        opt.step(params, {"c": params["b"]})
    with pytest.raises(ValueError, match="shape"):
        opt.step(params, {"b": params["W"]})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SGD(0.0), r"'lr' parameter of SGD must be a float in the range \(0, inf\)"),
        (lambda: SGD(-0.1), "Got -0.1 instead"),
        (lambda: SGD(float("nan")), "Got nan instead"),
        (lambda: SGD(True), "Got True instead"),
        (lambda: SGD(np.ones(2)), "0-d array"),
        (
            lambda: SGD(0.1, momentum=-0.5),
            r"'momentum' parameter of SGD must be a float in the range \[0, inf\)\. Got -0.5",
        ),
        (lambda: SGD(0.1, nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda: SGD(0.1, momentum=0.9, nesterov=1), "'nesterov' parameter of SGD must be"),
        (lambda: SGD(0.1, weight_decay=-1), "'weight_decay' parameter of SGD.*Got -1 instead"),
        (
            lambda: Adam(betas=(1.0, 0.999)),
            r"'betas' parameter of Adam must be a pair of floats in the range \[0, 1\)\. Got \(1.0",
        ),
        (lambda: Adam(betas=(0.9, -0.1)), r"Got \(0.9, -0.1\) instead"),
        (lambda: Adam(betas=0.9), "'betas' parameter of Adam must be a pair"),
        (lambda: Adam(eps=-1e-8), r"'eps' parameter of Adam must be a float in the range \[0"),
        (lambda: AdamW(weight_decay=-0.01), "'weight_decay' parameter of AdamW.*Got -0.01"),
        (lambda: RMSprop(alpha=1.5), "'alpha' parameter of RMSprop.*Got 1.5 instead"),
        (lambda: RMSprop(momentum="0.9"), "'momentum' parameter of RMSprop must be a float"),
        (lambda: RMSprop(centered=None), "'centered' parameter of RMSprop must be"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_lr_setter_accepts_zero_but_validates():
    opt = SGD(0.1)
    opt.lr = 0.0  # a schedule may anneal to 0
    assert opt.lr == 0.0
    with pytest.raises(ValueError, match=r"'lr' parameter of SGD must be a float in the range \[0"):
        opt.lr = -1


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop])
def test_hyperparameters_are_checked_as_declared(cls):
    """One constraint per argument, a 0-d array lr kept as it is, errors of one class."""
    signature = list(inspect.signature(cls.__init__).parameters)[1:]
    assert list(cls._parameter_constraints) == signature
    lr = np.asarray(0.05)
    opt = cls(lr)
    assert opt.lr is lr and isinstance(cls(np.float32(0.5)).lr, float)
    opt.lr = np.asarray(0.0)  # the setter, too, takes a 0-d array
    with pytest.raises(InvalidParameterError, match=f"'lr' parameter of {cls.__name__}"):
        cls(np.asarray(1))  # an integer array is no learning rate


# --------------------------------------------------------------------------- schedules
def test_schedules_follow_their_closed_forms():
    epochs = range(25)
    assert [ConstantLR(0.3)(e) for e in epochs] == [0.3] * 25
    assert [StepLR(0.1, step_size=3, gamma=0.5)(e) for e in range(7)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rel=1e-15
    )
    exp = ExponentialLR(2.0, gamma=0.9)
    assert [exp(e) for e in epochs] == pytest.approx([2.0 * 0.9**e for e in epochs], rel=1e-15)
    cos = CosineAnnealingLR(1.0, T_max=10, eta_min=0.2)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.6) and cos(10) == pytest.approx(0.2)
    assert cos(20) == pytest.approx(1.0) and cos(3) == pytest.approx(cos(17))
    assert all(cos(e) >= cos(e + 1) for e in range(10))


@pytest.mark.parametrize(
    ("ours", "torch_name", "kwargs"),
    [
        (StepLR(0.1, step_size=4, gamma=0.3), "StepLR", {"step_size": 4, "gamma": 0.3}),
        (ExponentialLR(0.1, gamma=0.87), "ExponentialLR", {"gamma": 0.87}),
        (CosineAnnealingLR(0.1, 7, 0.01), "CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),
    ],
)
def test_schedules_match_torch(ours, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = getattr(torch.optim.lr_scheduler, torch_name)(opt, **kwargs)
    for epoch in range(20):
        assert ours(epoch) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-12, abs=1e-15)
        opt.step()
        scheduler.step()


def test_reduce_on_plateau_waits_patience_epochs_and_respects_min_lr():
    sched = ReduceLROnPlateau(1.0, factor=0.5, patience=2, min_lr=0.3)
    lrs = [sched.step(m) for m in [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]]
    # better, better, bad 1, bad 2, bad 3: halve; better, bad 1..3: halve but floor at 0.3
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3]
    assert sched(7) == 0.3
    # A relative improvement below the threshold does not count.
    sched = ReduceLROnPlateau(1.0, patience=0, threshold=0.1)
    assert [sched.step(m) for m in [1.0, 0.95, 0.85]] == pytest.approx([1.0, 0.1, 0.1])
    sched = ReduceLROnPlateau(1.0, patience=0, mode="max")
    assert [sched.step(m) for m in [0.5, 0.6, 0.6]] == pytest.approx([1.0, 1.0, 0.1])


@pytest.mark.parametrize("mode", ["min", "max"])
def test_reduce_on_plateau_matches_torch(mode):
    torch = pytest.importorskip("torch")
    kwargs = {"factor": 0.3, "patience": 3, "threshold": 0.01, "min_lr": 1e-3, "mode": mode}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ours = ReduceLROnPlateau(0.5, **kwargs)
    metrics = np.random.default_rng(1).normal(size=60).cumsum() * 0.1 + 10.0
    for metric in metrics:
        opt.step()
        theirs.step(float(metric))
        assert ours.step(float(metric)) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert ours.lr < 0.5


def test_apply_schedule_sets_the_optimizer_lr():
    opt = Adam(0.1)
    schedule = StepLR(0.1, step_size=2)
    assert [apply_schedule(opt, schedule, e) for e in range(4)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01]
    )
    assert opt.lr == pytest.approx(0.01)
    opt.lr = CosineAnnealingLR(0.1, T_max=5)(5)
    assert opt.lr == pytest.approx(0.0, abs=1e-18)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ConstantLR(0.0), r"'lr' parameter of ConstantLR must be a float in the range \(0"),
        (
            lambda: StepLR(0.1, step_size=0),
            r"'step_size' parameter of StepLR must be an int in the range \[1, inf\)\. Got 0",
        ),
        (lambda: StepLR(0.1, step_size=2.5), "step_size"),
        (lambda: StepLR(0.1, 2, gamma=-0.1), "Got -0.1 instead"),
        (
            lambda: ExponentialLR(0.1, gamma=0.0),
            r"'gamma' parameter of ExponentialLR must be a float in the range \(0",
        ),
        (lambda: CosineAnnealingLR(0.1, T_max=0), "T_max"),
        (lambda: CosineAnnealingLR(0.1, 10, eta_min=-1.0), "Got -1.0 instead"),
        (
            lambda: ReduceLROnPlateau(0.1, factor=1.0),
            r"'factor' parameter of ReduceLROnPlateau must be a float in the range \(0, 1\)",
        ),
        (lambda: ReduceLROnPlateau(0.1, patience=-1), "patience"),
        (lambda: ReduceLROnPlateau(0.1, threshold=-0.1), "threshold"),
        (
            lambda: ReduceLROnPlateau(0.1, mode="up"),
            "'mode' parameter of ReduceLROnPlateau must be a str among",
        ),
        (lambda: ReduceLROnPlateau(0.1, min_lr=-1e-3), "min_lr"),
        (
            lambda: ExponentialLR(0.1, 0.9)(-1),
            r"'epoch' parameter of ExponentialLR must be an int in the range \[0",
        ),
        (lambda: StepLR(0.1, 2)(1.5), "epoch"),
    ],
)
def test_bad_schedule_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (ConstantLR, {}),
        (StepLR, {"step_size": 2, "gamma": 0.5}),
        (ExponentialLR, {"gamma": 0.9}),
        (CosineAnnealingLR, {"T_max": 3, "eta_min": 0.0}),
        (
            ReduceLROnPlateau,
            {"factor": 0.5, "patience": 1, "threshold": 0.0, "mode": "max", "min_lr": 0.0},
        ),
    ],
)
def test_schedule_errors_are_invalid_parameter_errors(make, kwargs):
    assert set(make._parameter_constraints) == {"lr", *kwargs}
    make(0.1, **kwargs)
    for name in ("lr", *kwargs):
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {make.__name__}"):
            make(**{"lr": 0.1, **kwargs, name: "bad"})


def test_cosine_reaches_eta_min_at_t_max():
    assert CosineAnnealingLR(0.4, T_max=8, eta_min=0.05)(8) == pytest.approx(0.05, rel=1e-15)
    assert math.isclose(CosineAnnealingLR(0.4, T_max=8)(4), 0.2)


def test_a_subclass_written_to_the_documented_update_hook_trains():
    """``_update(xp, p, g, state, lr)``, the hook the base class documents, is called with
    those five arguments, also by the training loop (which asks Adam to write in place)."""
    from mlxp import nn

    class PlainSGD(Optimizer):
        def _update(self, xp, p, g, state, lr):
            return p - lr * g

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    reference = nn.Sequential([nn.Dense(3, 2)], seed=0)
    reference.fit(X, y, loss="cross_entropy", optimizer=SGD(0.1), epochs=2, progress=False)
    net = nn.Sequential([nn.Dense(3, 2)], seed=0)
    net.fit(X, y, loss="cross_entropy", optimizer=PlainSGD(0.1), epochs=2, progress=False)
    for name, value in reference.get_weights().items():
        np.testing.assert_allclose(net.get_weights()[name], value, rtol=1e-12)


def test_bias_correction_of_a_count_on_the_device_keeps_its_digits(backend):
    """1 − βᵗ for a count held as an array (a compiled step's) is −expm1(t ln β): within a
    few ulps of the exact value (mpmath) in the array's dtype, where 1 − βᵗ computed in
    float32 loses up to 1.3e-5 of it (β = 0.999, t = 1); a count that is a number keeps
    Python's floats."""
    import mpmath

    from mlxp._special import one_minus_power

    counts = [1, 2, 10, 1000, 100000]
    dtype = "float32" if "float32" in backend.float_dtypes else backend.float_dtypes[0]
    for beta in (0.0, 0.5, 0.9, 0.999, 0.9999):
        exact = [float(1 - mpmath.mpf(beta) ** t) for t in counts]
        t = backend.xp.asarray(counts, device=backend.device)
        got = one_minus_power(beta, t, backend.dtype(dtype))
        assert got.dtype == backend.dtype(dtype)
        np.testing.assert_allclose(backend.to_numpy(got), exact, rtol=4 * np.finfo(dtype).eps)
        numbers = [one_minus_power(beta, n, None) for n in counts]
        assert numbers == [1.0 - beta**n for n in counts]
    assert one_minus_power(0.9, 3.0, None) == 1.0 - 0.9**3  # a count read back as a float
    if "float16" in dir(backend.xp):  # ln β of β near 1 is below float16's normal range
        t = backend.xp.asarray([1, 3], device=backend.device)
        got = one_minus_power(0.9999999, t, backend.xp.float16)
        assert got.dtype == backend.xp.float32
        np.testing.assert_allclose(backend.to_numpy(got), [1e-7, 3e-7], rtol=1e-6)
