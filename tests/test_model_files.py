"""Hostile and careless model files: each is refused with one ValueError that says the file
is not a valid mlxp model file and why, before anything is allocated for it.

The checksum only detects accidents (anyone can recompute it), so the files here are
crafted with ``write_arrays``, which writes a valid checksum: every refusal comes from
checking the config and the tensors against the model they would build.
"""

from __future__ import annotations

import copy
import json
import tracemalloc
import warnings

import numpy as np
import pytest

import mlxp
from mlxp.io import FORMAT, read_arrays, write_arrays
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import (
    BatchNorm1d,
    CNNClassifier,
    Dense,
    Dropout,
    MLPClassifier,
    MLPRegressor,
    ReLU,
    Sequential,
)
from mlxp.nn.init import INITIALIZERS
from tests.conftest import require_float64

rng = np.random.default_rng(0)
X = rng.normal(size=(24, 4))
X_IMAGES = rng.normal(size=(24, 16))
Y_BINARY = (X[:, 0] > 0).astype(int)
Y_THREE = np.arange(24) % 3


def _fit(model, X_in, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlxp.ConvergenceWarning)
        if isinstance(model, Sequential):
            model.fit(X_in, y, epochs=1, progress=False)
            return model
        return model.fit(X_in, y)


MODELS = {
    "mlp": lambda: _fit(MLPClassifier((3,), max_iter=3, random_state=0), X, Y_BINARY),
    "regressor": lambda: _fit(MLPRegressor((3,), max_iter=3, random_state=0), X, X[:, 0]),
    "cnn": lambda: _fit(
        CNNClassifier(((2, 3),), (4,), image_shape=(1, 4, 4), max_iter=1, random_state=0),
        X_IMAGES,
        Y_THREE,
    ),
    "sequential": lambda: _fit(
        Sequential([Dense(4, 3), BatchNorm1d(3), ReLU(), Dropout(0.1), Dense(3, 2)], seed=0),
        X,
        X[:, :2],
    ),
    "linear": lambda: _fit(LinearRegression(), X, X[:, 0]),
    "ridge": lambda: _fit(Ridge(alpha=0.5), X, X[:, :2]),
    "logistic": lambda: _fit(LogisticRegression(), X, Y_THREE),
}
INPUTS = {"cnn": X_IMAGES}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """For each model: (the fitted model, its config, its arrays), as a file holds them."""
    out = {}
    for name, make in MODELS.items():
        model = make()
        path = tmp_path_factory.mktemp("files") / f"{name}.mlxp"
        mlxp.save(model, path)
        arrays, meta = read_arrays(path)
        out[name] = (model, json.loads(meta["mlxp"]), arrays)
    return out


def _write(path, config, arrays):
    write_arrays(path, arrays, {"format": FORMAT, "mlxp": json.dumps(config)})
    return path


def _network(config):
    return config["network"] if "network" in config else config


def _refused(path, message, backend=None):
    with pytest.raises(ValueError, match="is not a valid mlxp model file") as info:
        mlxp.load(path, backend=None if backend is None else str(backend))
    assert info.match(message), str(info.value)


def _no_initialiser(monkeypatch):
    """Make every weight initialiser (and the initialisation of every layer) fail."""

    def boom(*args, **kwargs):
        raise AssertionError("an initialiser ran")

    for name in INITIALIZERS:
        monkeypatch.setitem(INITIALIZERS, name, boom)
    for cls in (Dense, BatchNorm1d, mlxp.nn.Conv2D):
        monkeypatch.setattr(cls, "initialize", boom)


# --------------------------------------------------------------------------- valid files
NETWORKS = ("mlp", "regressor", "cnn", "sequential")
LINEAR = ("linear", "ridge", "logistic")


@pytest.mark.parametrize("name", NETWORKS)
def test_valid_files_load_without_initialising_anything(
    backend, saved, name, monkeypatch, tmp_path
):
    model, config, arrays = saved[name]
    _no_initialiser(monkeypatch)
    loaded = mlxp.load(_write(tmp_path / "m.mlxp", config, arrays), str(backend))
    X_in = INPUTS.get(name, X)
    expected = mlxp.to_numpy(model.predict(X_in))
    got = backend.to_numpy(loaded.predict(backend.asarray(X_in)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_fitted_batchnorm_keeps_its_running_statistics_in_its_file(backend, saved, tmp_path):
    model, config, arrays = saved["sequential"]
    weights = {k: mlxp.to_numpy(v) for k, v in model.get_weights().items()}
    names = ("1.running_mean", "1.running_var")
    for name in names:
        np.testing.assert_array_equal(arrays[name], weights[name])
    assert not np.allclose(arrays[names[0]], 0.0) and not np.allclose(arrays[names[1]], 1.0)
    loaded = mlxp.load(_write(tmp_path / "m.mlxp", config, arrays), str(backend))
    for name in names:
        got = backend.to_numpy(loaded.get_weights()[name])
        np.testing.assert_allclose(got, arrays[name], rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("name", NETWORKS + LINEAR)
def test_missing_and_unexpected_tensors_are_named(backend, saved, name, tmp_path):
    _, config, arrays = saved[name]
    last = sorted(arrays)[-1]
    fewer = {k: v for k, v in arrays.items() if k != last}
    _refused(_write(tmp_path / "a.mlxp", config, fewer), f"Missing key\\(s\\): '{last}'", backend)
    more = {**arrays, "9.W": np.zeros(2), "0.extra": np.zeros(1)}
    _refused(
        _write(tmp_path / "b.mlxp", config, more),
        "Unexpected key\\(s\\): '0.extra', '9.W'",
        backend,
    )


@pytest.mark.parametrize("name", NETWORKS + LINEAR)
def test_every_tensor_has_the_shape_its_layer_implies(backend, saved, name, tmp_path):
    _, config, arrays = saved[name]
    first = sorted(arrays)[0]
    wrong = {**arrays, first: np.zeros((*arrays[first].shape, 2))}
    _refused(_write(tmp_path / "a.mlxp", config, wrong), f"'{first}' has shape .* needs", backend)


def test_a_binary_model_with_a_five_unit_output_is_refused(backend, saved, tmp_path):
    _, config, arrays = saved["mlp"]
    config = copy.deepcopy(config)
    config["network"]["layers"][-1]["config"]["out_features"] = 5
    arrays = {**arrays, "2.W": np.zeros((3, 5)), "2.b": np.zeros(5)}
    _refused(_write(tmp_path / "a.mlxp", config, arrays), "shape \\(5,\\), not \\(1,\\)", backend)
    config["fitted"]["n_outputs_"] = 5
    _refused(_write(tmp_path / "b.mlxp", config, arrays), "n_outputs_=5 does not fit 2", backend)


@pytest.mark.parametrize("name", NETWORKS + LINEAR)
@pytest.mark.parametrize(
    ("dtype", "message"),
    [("int64", "has dtype .*int"), ("bool", "has dtype .*bool"), ("mixed", "same real")],
)
def test_tensors_are_of_one_real_floating_dtype(backend, saved, name, dtype, message, tmp_path):
    _, config, arrays = saved[name]
    first = sorted(arrays)[0]
    if dtype == "mixed":
        require_float64(backend)  # elsewhere float64 tensors arrive as float32: one dtype
        arrays = {k: v.astype(np.float32) if k == first else v for k, v in arrays.items()}
    else:
        arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    _refused(_write(tmp_path / "a.mlxp", config, arrays), message, backend)


@pytest.mark.parametrize("name", ["sequential", "linear"])
def test_a_file_mixing_bfloat16_with_other_floats_is_refused_everywhere(
    backend, saved, name, tmp_path
):
    """Not only where bfloat16 exists to differ from float32 (PyTorch, JAX): a library
    without it would widen BF16 to float32 and find one dtype."""
    torch = pytest.importorskip("torch")
    _, config, arrays = saved[name]
    first = sorted(arrays)[0]
    arrays = {**arrays, first: torch.asarray(arrays[first]).to(torch.bfloat16)}
    _refused(_write(tmp_path / "a.mlxp", config, arrays), "mixes BF16 tensors with", backend)


@pytest.mark.parametrize("name", NETWORKS + LINEAR)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(backend, saved, name, value, tmp_path):
    _, config, arrays = saved[name]
    last = sorted(arrays)[-1]
    bad = arrays[last].copy()
    bad.reshape(-1)[0] = value
    arrays = {**arrays, last: bad}
    _refused(_write(tmp_path / "a.mlxp", config, arrays), f"'{last}' holds non-finite", backend)


def test_a_small_file_declaring_a_huge_layer_allocates_nothing(monkeypatch, tmp_path):
    """A file of a few hundred bytes declaring Dense(12000, 12000) (1.1 GB of float64)."""
    dense = {"in_features": 12000, "out_features": 12000, "init": "glorot_uniform"}
    config = {"class": "Sequential", "seed": 0, "layers": [{"class": "Dense", "config": dense}]}
    path = _write(tmp_path / "a.mlxp", config, {"0.W": np.zeros((1, 1)), "0.b": np.zeros(1)})
    assert path.stat().st_size < 1000
    _no_initialiser(monkeypatch)
    tracemalloc.start()
    try:
        _refused(path, "'0.W' has shape \\(1, 1\\), but layer 0 .* needs \\(12000, 12000\\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


# --------------------------------------------------------------------------- configs
def _set(*keys, value=None, delete=False):
    """A change to a config: set (or delete) the item at the path ``keys``."""

    def change(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        if delete:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return change


L0 = ("layers", 0)
CORRUPTIONS = [
    ("sequential", _set("layers", delete=True), "lacks the field\\(s\\) 'layers'"),
    ("sequential", _set("layers", value={}), "'layers' is not a list"),
    ("sequential", _set("layers", value=None), "'layers' is not a list"),
    ("sequential", _set(*L0, value="Dense"), "layer 0 is not a JSON object"),
    ("sequential", _set(*L0, "config", delete=True), "layer 0 lacks the field\\(s\\) 'config'"),
    ("sequential", _set(*L0, "class", value="Lambda"), "Unknown layer 'Lambda' at layer 0"),
    ("sequential", _set(*L0, "class", value=["Dense"]), "Unknown layer \\['Dense'\\]"),
    ("sequential", _set(*L0, "config", value=[4, 3]), "config of layer 0 .* not a JSON object"),
    ("sequential", _set(*L0, "config", "units", value=3), "unknown field\\(s\\) 'units'"),
    ("sequential", _set(*L0, "config", "in_features", delete=True), "lacks .* 'in_features'"),
    ("sequential", _set(*L0, "config", "in_features", value="4"), "'in_features' parameter"),
    ("sequential", _set(*L0, "config", "in_features", value=4.0), "'in_features' parameter"),
    ("sequential", _set(*L0, "config", "init", value="zeros"), "'init' parameter of Dense"),
    ("sequential", _set("layers", 3, "config", "p", value=2), "'p' parameter of Dropout"),
    ("sequential", _set("seed", value="x"), "seed 'x'"),
    ("sequential", _set("seed", value=-1), "seed -1"),
    ("sequential", _set("extra", value=1), "unknown field\\(s\\) 'extra'"),
    ("mlp", _set("network", value=[]), "network config is not a JSON object"),
    ("mlp", _set("network", "layers", 0, "config", "in_features", value=5), "needs \\(5, 3\\)"),
    ("mlp", _set("params", value=[1]), "'params' is not a JSON object"),
    ("mlp", _set("params", "bogus", value=1), "unknown field\\(s\\) 'bogus'"),
    ("mlp", _set("params", "hidden_layer_sizes", value=[-1]), "'hidden_layer_sizes' param"),
    ("mlp", _set("params", "activation", value=3), "'activation' parameter"),
    ("mlp", _set("fitted", delete=True), "lacks the field\\(s\\) 'fitted'"),
    ("mlp", _set("fitted", value="yes"), "'fitted' is not a JSON object"),
    ("mlp", _set("fitted", "classes_", delete=True), "lacks the field\\(s\\) 'classes_'"),
    ("mlp", _set("fitted", "n_features_in_", value="4"), "n_features_in_ and n_outputs_"),
    ("mlp", _set("fitted", "n_features_in_", value=True), "n_features_in_ and n_outputs_"),
    ("mlp", _set("fitted", "n_features_in_", value=5), "cannot take samples of shape \\(5,\\)"),
    ("mlp", _set("fitted", "n_outputs_", value=[1]), "n_features_in_ and n_outputs_"),
    ("mlp", _set("fitted", "classes_", value=[0, 1, 2]), "n_outputs_=1 does not fit 3"),
    ("mlp", _set("fitted", "classes_", value=[0]), "2 or more distinct labels"),
    ("mlp", _set("fitted", "classes_", value=[1, 1]), "2 or more distinct labels"),
    ("mlp", _set("fitted", "classes_", value="ab"), "list of labels"),
    ("mlp", _set("fitted", "classes_", value=[0, "a"]), "of one kind"),
    ("mlp", _set("fitted", "classes_", value=[[0], [1]]), "of one kind"),
    ("mlp", _set("fitted", "loss_curve_", value="x"), "loss_curve_ is not"),
    ("mlp", _set("fitted", "loss_curve_", value=[]), "loss_curve_ is not"),
    ("mlp", _set("fitted", "loss_curve_", value=[1.0, "a"]), "loss_curve_ is not"),
    ("mlp", _set("fitted", "loss_curve_", value=[True]), "loss_curve_ is not"),
    ("mlp", _set("fitted", "_y_1d", value=1), "_y_1d must be a boolean"),
    ("regressor", _set("fitted", "classes_", value=[0, 1]), "unknown field\\(s\\) 'classes_'"),
    ("regressor", _set("fitted", "n_outputs_", value=2), "_y_1d must be"),
    ("cnn", _set("network", "layers", 0, "config", "shape", value=[1, 4]), "cannot take"),
    ("cnn", _set("network", "layers", 1, "config", "kernel_size", value=0), "'kernel_size' par"),
    ("cnn", _set("network", "layers", 1, "config", "padding", value="valid"), "'padding' par"),
    ("cnn", _set("network", "layers", 3, "config", "padding", value=[5, 5]), "at most half"),
]


@pytest.mark.parametrize(
    ("name", "change", "message"), CORRUPTIONS, ids=[m for _, _, m in CORRUPTIONS]
)
def test_malformed_configs_are_refused_as_invalid_files(saved, name, change, message, tmp_path):
    _, config, arrays = saved[name]
    config = copy.deepcopy(config)
    change(config)
    _refused(_write(tmp_path / "a.mlxp", config, arrays), message)


LINEAR_CORRUPTIONS = [
    _set("params", delete=True),
    _set("params", value=[1]),
    _set("params", "bogus", value=1),
    _set("fitted", delete=True),
    _set("fitted", value=3),
    _set("fitted", "predict", value=1),  # would replace the method
    _set("fitted", "n_features_in_", value="3"),
    _set("fitted", "n_features_in_", value=True),
    _set("fitted", "n_features_in_", delete=True),
    _set("fitted", "n_features_in_", value=7),  # disagrees with coef_
    _set("fitted", "n_iter_", value=-1),
]


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("change", LINEAR_CORRUPTIONS)
def test_malformed_linear_model_files_are_refused_as_invalid(saved, name, change, tmp_path):
    _, config, arrays = saved[name]
    config = copy.deepcopy(config)
    change(config)
    _refused(_write(tmp_path / "a.mlxp", config, arrays), "")


@pytest.mark.parametrize(
    ("name", "other"),
    [("linear", "LogisticRegression"), ("ridge", "LogisticRegression"), ("logistic", "Ridge")],
)
def test_a_linear_model_file_relabelled_as_another_model_is_refused(saved, name, other, tmp_path):
    _, config, arrays = saved[name]
    _refused(_write(tmp_path / "a.mlxp", {**config, "class": other}, arrays), "'params'|'fitted'")


@pytest.mark.parametrize("name", LINEAR)
def test_linear_model_files_missing_a_tensor_are_refused(saved, name, tmp_path):
    _, config, arrays = saved[name]
    _refused(_write(tmp_path / "a.mlxp", config, {"coef_": arrays["coef_"]}), "intercept_")
