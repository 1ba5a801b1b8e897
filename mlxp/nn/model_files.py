"""What a model file of a network must hold, checked before anything is built from it.

Owns the fixed table of layer classes a file may name (:data:`LAYERS`), the schema of a
layer list, the check of a file's tensors against the layers they are for (names as
PyTorch's ``load_state_dict`` reports them, shapes implied by the layers' configs, one
real floating dtype, finite values) and the check of the estimators' fitted fields
against their network. Every check raises ``ValueError`` saying what is wrong;
:func:`mlxp.load` prefixes it with "<path> is not a valid mlxp model file". Nothing is
allocated before the tensors are known to fit: memory stays bounded by the file's size.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real
from typing import Any, cast

from mlxp._model_state import (
    check_fields,
    check_tensors,
    classes_from_json,
    feature_names_from_json,
)
from mlxp.nn.conv_layers import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from mlxp.nn.layers import (
    GELU,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.normalization import BatchNorm1d, BatchNorm2d

__all__ = ["LAYERS", "check_fitted", "check_weights", "layers_from_config"]

LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        AvgPool2D,
        BatchNorm1d,
        BatchNorm2d,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        GELU,
        GlobalAvgPool2D,
        LeakyReLU,
        MaxPool2D,
        ReLU,
        Reshape,
        Sigmoid,
        Softmax,
        Tanh,
    )
}
"""The layer classes a model file may name, by class name."""


def layers_from_config(specs: Any) -> list[Layer]:
    """The layers of a list of ``{"class": name, "config": {...}}``: constructed (and so
    checked against each layer's constraints), none of their parameters created."""
    if not isinstance(specs, list):
        raise ValueError(f"'layers' is not a list (got {type(specs).__name__})")
    layers = []
    for i, spec in enumerate(specs):
        check_fields(spec, f"layer {i}", {"class", "config"})
        name, config = spec["class"], spec["config"]
        if not isinstance(name, str) or name not in LAYERS:
            raise ValueError(f"Unknown layer {name!r} at layer {i} (known: {', '.join(LAYERS)})")
        named = {k: p for k, p in inspect.signature(LAYERS[name]).parameters.items()
                 if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}  # fmt: skip
        required = {k for k, p in named.items() if p.default is p.empty}
        check_fields(config, f"the config of layer {i} ({name})", required, set(named))
        try:
            layers.append(LAYERS[name](**config))
        except ValueError as exc:  # InvalidParameterError included
            raise ValueError(f"layer {i} ({name}): {exc}") from None
    return layers


def check_weights(layers: list[Layer], arrays: dict[str, Any]) -> None:
    """``arrays`` are exactly the parameters and buffers of ``layers`` (named
    ``"<layer index>.<name>"``), each of the shape its layer's config implies, all of one
    real floating dtype and finite (:func:`~mlxp._model_state.check_tensors`); or there
    are none (a model never built)."""
    if arrays:
        check_tensors(
            arrays,
            {
                f"{i}.{k}": (shape, f"layer {i} ({layer!r})")
                for i, layer in enumerate(layers)
                for k, shape in {**layer.param_shapes(), **layer.buffer_shapes()}.items()
            },
        )


def _is_int(value: Any, low: int = 1) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_classes(classes: Any) -> None:
    kinds = {bool if isinstance(c, bool) else str if isinstance(c, str) else Real
             for c in classes} if isinstance(classes, list) else set()  # fmt: skip
    if len(kinds) != 1 or not all(isinstance(c, (str, Real)) for c in classes):
        raise ValueError("fitted classes_ is not a list of labels of one kind")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"fitted classes_ {classes!r} is not a list of 2 or more distinct labels")


def check_fitted(fitted: Any, network: Any, *, classifier: bool) -> dict[str, Any]:
    """The fitted fields of an MLP estimator's file, checked by type and against the
    ``network`` (a built Sequential): it takes ``n_features_in_`` values per sample and
    outputs ``n_outputs_`` (1 logit for two ``classes_``, one per class otherwise)."""
    required = {"loss_curve_", "n_features_in_", "n_outputs_", "_y_1d"}
    required |= {"classes_"} if classifier else set()
    allowed = required | {"feature_names_in_"} | ({"classes_dtype"} if classifier else set())
    check_fields(fitted, "'fitted'", required, allowed)
    curve = fitted["loss_curve_"]
    if not isinstance(curve, list) or not curve or not all(map(_is_number, curve)):
        raise ValueError("fitted loss_curve_ is not a non-empty list of finite numbers")
    n_in, n_out = fitted["n_features_in_"], fitted["n_outputs_"]
    if not _is_int(n_in) or not _is_int(n_out):
        raise ValueError("fitted n_features_in_ and n_outputs_ must be positive integers")
    y_1d = fitted["_y_1d"]
    if not isinstance(y_1d, bool) or (y_1d and n_out != 1 and not classifier):
        raise ValueError("fitted _y_1d must be a boolean, true only for one output")
    if not network.built or not network.decayed:
        raise ValueError("its network has no weights")
    if classifier:
        _check_classes(fitted["classes_"])
        k = len(fitted["classes_"])
        if n_out != (1 if k == 2 else k):
            raise ValueError(f"n_outputs_={n_out} does not fit {k} classes_")
    out = network.output_shape((n_in,))
    if out != (n_out,):
        raise ValueError(f"its network outputs samples of shape {out}, not ({n_out},)")
    if "feature_names_in_" in fitted:
        fitted = {**fitted, "feature_names_in_": feature_names_from_json(fitted, n_in)}
    if classifier:  # in the labels' saved dtype
        labels = classes_from_json(fitted["classes_"], fitted.get("classes_dtype"))
        fitted = {**fitted, "classes_": labels}
    return cast("dict[str, Any]", fitted)  # checked above to be one
