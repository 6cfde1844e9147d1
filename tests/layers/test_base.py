"""The Layer protocol every layer follows, its error messages, and constructor validation."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layer_cases import (
    FIXED_CASES,
    conv_cases,
    dense_cases,
    dropout_cases,
    examples,
    flatten_cases,
    pool_cases,
    random_input,
    relu_cases,
    seeds,
    softmax_cases,
)
from numpy.testing import assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Softmax
from minidl.layers.base import LAYER_CLASSES

ALL_CASES = st.one_of(
    dense_cases(),
    conv_cases(),
    pool_cases(MaxPool2D),
    pool_cases(AvgPool2D),
    relu_cases(),
    softmax_cases(),
    flatten_cases(),
    dropout_cases(),
)


# --------------------------------------------------------------- the protocol
@examples(40)
@given(case=ALL_CASES, seed=seeds)
def test_output_shape_agrees_with_forward_and_backward_returns_input_shape(case, seed):
    layer = case.make()
    x = random_input(case.shape, seed)
    y = layer.forward(x, training=case.training)
    assert y.shape == (case.shape[0],) + tuple(layer.output_shape(case.shape[1:]))
    assert layer.backward(np.ones_like(y)).shape == x.shape
    assert set(layer.grads) == set(layer.params)
    for name in layer.params:
        assert layer.grads[name].shape == layer.params[name].shape


@examples(20)
@given(case=ALL_CASES)
def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients(case):
    # Every layer takes N = 0 (an empty slice of a dataset); Flatten's reshape(x.shape[0], -1) could not.
    layer = case.make()
    x = np.zeros((0,) + case.shape[1:])
    y = layer.forward(x, training=case.training)
    assert y.shape == (0,) + tuple(layer.output_shape(case.shape[1:]))
    assert layer.backward(np.ones_like(y)).shape == x.shape
    for name in layer.params:
        assert_array_equal(layer.grads[name], 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FIXED_CASES))
def test_parameters_outputs_and_gradients_take_the_dtype_of_the_first_input(name, dtype):
    case = FIXED_CASES[name]
    layer = case.make()
    x = random_input(case.shape, 0, dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    assert layer.backward(np.ones_like(y)).dtype == dtype
    for name in layer.params:
        assert layer.params[name].dtype == dtype
        assert layer.grads[name].dtype == dtype


@pytest.mark.parametrize("name", ["dense", "conv_same_stride2"])
def test_parameter_gradients_are_overwritten_not_accumulated(name):
    case = FIXED_CASES[name]
    layer = case.make()
    x = random_input(case.shape, 0)
    dy = random_input((case.shape[0],) + layer.output_shape(case.shape[1:]), 1)
    layer.forward(x)
    layer.backward(dy)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x)
    layer.backward(dy)
    for k in first:
        assert_array_equal(layer.grads[k], first[k])


@pytest.mark.parametrize("name", ["dense", "conv_valid"])
def test_frozen_layer_leaves_its_grads_alone_but_still_passes_the_input_gradient(name):
    case = FIXED_CASES[name]
    x = random_input(case.shape, 0)
    trained = case.make()
    trained.rng = np.random.default_rng(0)
    y = trained.forward(x)
    dx_trained = trained.backward(np.ones_like(y))

    frozen = case.make()
    frozen.rng = np.random.default_rng(0)
    frozen.trainable = False
    frozen.forward(x)
    before = {k: v.copy() for k, v in frozen.params.items()}
    assert_array_equal(frozen.backward(np.ones_like(y)), dx_trained)
    for k in frozen.grads:
        assert_array_equal(frozen.grads[k], 0)
        assert_array_equal(frozen.params[k], before[k])


@pytest.mark.parametrize("name", sorted(FIXED_CASES))
def test_needs_input_grad_false_skips_the_input_gradient(name):
    case = FIXED_CASES[name]
    layer = case.make()
    layer.needs_input_grad = False
    y = layer.forward(random_input(case.shape, 0))
    assert layer.backward(np.ones_like(y)) is None


@pytest.mark.parametrize("layer, shape, params", [
    (Dense(3), (5,), {"W": (5, 3), "b": (3,)}),
    (Conv2D(4, 3), (8, 7, 2), {"W": (3, 3, 2, 4), "b": (4,)}),
    (ReLU(), (6,), {}),
], ids=lambda v: type(v).__name__ if isinstance(v, Layer) else "")
def test_build_called_directly_creates_float32_parameters_once(layer, shape, params):
    layer.build(shape)
    assert layer.built and layer.input_shape == shape
    assert {name: p.shape for name, p in layer.params.items()} == params
    assert all(p.dtype == np.float32 and layer.grads[name].shape == p.shape for name, p in layer.params.items())
    kept = {name: p for name, p in layer.params.items()}
    y = layer.forward(np.ones((2, *shape), dtype=np.float32))  # the first forward builds nothing again
    assert all(layer.params[name] is p for name, p in kept.items())
    assert y.shape == (2, *layer.output_shape(shape))


@pytest.mark.parametrize("layer, cache", [(ReLU(), "mask"), (MaxPool2D(2), "argmax"), (MaxPool2D(3, 2), "argmax"),
                                         (Dropout(0.5), "scaled_mask"), (Conv2D(4, 3, padding="same"), "x"),
                                         (Dense(4), "x")],
                         ids=["ReLU", "MaxPool2D", "MaxPool2D-overlapping", "Dropout", "Conv2D", "Dense"])
def test_a_forward_that_keeps_no_cache_gives_the_same_output_and_refuses_backward(layer, cache):
    x = random_input((2, 3) if isinstance(layer, Dense) else (2, 7, 6, 3), 0, np.float64)
    kept = layer.forward(x)
    layer.keeps_cache = False
    assert_array_equal(layer.forward(x), kept)
    assert getattr(layer, cache) is None
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}: backward needs '{cache}' from a forward pass"):
        layer.backward(np.ones_like(kept))
    layer.keeps_cache = True
    layer.forward(x)
    assert layer.backward(np.ones_like(kept)).shape == x.shape


def test_conv2d_keeps_its_im2col_matrix_only_for_a_weight_gradient():
    # The matrix is the largest array of the layer: kept for backward's X1^T dY, never for
    # a forward that no backward follows, nor for a frozen layer (whose backward needs only W).
    x = random_input((2, 7, 6, 3), 0, np.float64)
    conv = Conv2D(4, 3, padding="same")
    dx = conv.backward(np.ones_like(conv.forward(x)))
    assert conv.X1 is not None and conv.X1.shape == (2 * 7 * 6, 3 * 3 * 3 + 1)
    conv.keeps_cache = False
    conv.forward(x)
    assert conv.X1 is None
    conv.keeps_cache, conv.trainable = True, False
    conv.forward(x)
    assert conv.X1 is None
    assert_array_equal(conv.backward(np.ones_like(conv.forward(x))), dx)


@pytest.mark.parametrize("layer, dy_shape", [
    (ReLU(), (2, 3)), (Softmax(), (2, 3)), (Flatten(), (2, 12)), (MaxPool2D(2), (2, 2, 2, 3)),
    (AvgPool2D(2), (2, 2, 2, 3)), (Dense(3), (2, 3)), (Conv2D(3, 2), (2, 3, 3, 3)), (Dropout(0.5), (2, 3)),
], ids=lambda v: type(v).__name__ if isinstance(v, Layer) else "")
def test_backward_before_any_forward_is_a_clear_error(layer, dy_shape):
    with pytest.raises(RuntimeError, match=f"^{type(layer).__name__}: backward needs '\\w+'.*call forward first"):
        layer.backward(np.ones(dy_shape))


def test_build_called_directly_refuses_a_built_layer_and_a_shape_that_is_not_a_tuple():
    layer = Dense(3, name="d")
    with pytest.raises(ValueError, match=r"Dense 'd': build takes the shape of one sample.*got 5"):
        layer.build(5)
    layer.build((5,))
    W = layer.params["W"]
    with pytest.raises(RuntimeError, match=r"Dense 'd': already built for input \(N, 5\)"):
        layer.build((7,))
    assert layer.params["W"] is W


@pytest.mark.parametrize("layer", [ReLU(name="r"), MaxPool2D(2, name="r")], ids=["ReLU", "MaxPool2D"])
def test_building_a_built_layer_without_parameters_names_the_shape_it_was_built_for(layer):
    layer.build((8, 8, 3))
    with pytest.raises(RuntimeError) as error:
        layer.build((8, 8, 3))
    assert str(error.value) == (f"{type(layer).__name__} 'r': already built for input (N, 8, 8, 3); "
                                "make a new layer to build it for another")


def test_a_layer_made_of_layers_places_them_as_it_is_placed():
    class Block(Layer):
        def __init__(self):
            super().__init__()
            self.inner = Dense(4)

        def build(self, input_shape):
            self.inner.build(input_shape)

        def forward(self, x, training=False):
            self.check_input(x)
            return self.inner.forward(x)

        def backward(self, dy):
            return self.inner.backward(dy)

    block = Block()
    assert block.forward(np.ones((2, 3))).dtype == np.float64
    assert block.inner.built and block.inner.params["W"].dtype == np.float64


def test_a_layer_made_of_layers_whose_build_failed_partway_builds_on_the_next_try(monkeypatch):
    class RetriedBlock(Layer):
        input_rank = 1

        def __init__(self):
            super().__init__()
            self.inner, self.head = Dense(4), Dense(2)

        def build(self, input_shape):
            self.inner.build(input_shape)
            self.head.build((self.inner.units,))  # fails the first time
            self.add_weight("scale", (1,), "zeros")

        def forward(self, x, training=False):
            self.check_input(x)
            return self.head.forward(self.inner.forward(x)) * (1 + self.params["scale"])

    block = RetriedBlock()
    fail = {"once": True}
    build = Dense.build

    def failing_head_build(layer, input_shape):
        if layer is block.head and fail.pop("once", False):
            raise MemoryError("no memory this time")
        return build(layer, input_shape)

    monkeypatch.setattr(Dense, "build", failing_head_build)
    with pytest.raises(MemoryError, match="no memory this time"):
        block.forward(np.ones((2, 3)))
    assert not block.built and block.inner.built and not block.head.built
    W = block.inner.params["W"]
    assert block.forward(np.ones((2, 3))).shape == (2, 2)  # the retry builds what is missing
    monkeypatch.undo()
    assert block.built and block.head.built and block.inner.params["W"] is W
    with pytest.raises(RuntimeError, match=r"Dense: already built for input \(N, 3\)"):
        block.inner.build((5,))  # outside a build, building again is still refused


def test_parameters_are_built_once_from_the_first_input():
    layer = Dense(3)
    layer.forward(random_input((2, 4), 0))
    W = layer.params["W"]
    layer.forward(random_input((5, 4), 1))
    assert layer.params["W"] is W


def test_same_generator_seed_gives_the_same_weights():
    a, b = Conv2D(4, 3), Conv2D(4, 3)
    a.rng, b.rng = np.random.default_rng(5), np.random.default_rng(5)
    x = random_input((1, 6, 6, 2), 0)
    a.forward(x)
    b.forward(x)
    assert_array_equal(a.params["W"], b.params["W"])


@pytest.mark.parametrize("name", sorted(FIXED_CASES))
def test_config_round_trip_rebuilds_an_equivalent_layer(name):
    case = FIXED_CASES[name]
    layer = case.make(name="original")
    config = layer.get_config()
    clone = LAYER_CLASSES[type(layer).__name__].from_config(config)
    assert type(clone) is type(layer) and clone.get_config() == config
    x = random_input(case.shape, 0)
    layer.forward(x)
    clone.forward(x)  # build
    for k in layer.params:
        clone.params[k][...] = layer.params[k]
    assert_array_equal(clone.forward(x), layer.forward(x))


def test_every_public_layer_is_registered_by_class_name():
    for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, ReLU, Softmax, Dropout):
        assert LAYER_CLASSES[cls.__name__] is cls
    assert not any(name.startswith("_") for name in LAYER_CLASSES)  # _Pool2D is not a layer to load


def test_a_layer_class_may_not_take_a_registered_name_but_may_be_defined_again():
    with pytest.raises(TypeError, match="'Dense' is taken by minidl.layers.dense.Dense"):
        class Dense(Layer):  # noqa: F811 - a user's Dense would load in place of minidl's
            pass
    assert LAYER_CLASSES["Dense"].__module__ == "minidl.layers.dense"
    for _ in range(2):  # a notebook cell run twice defines the same class again
        class Twice(Layer):
            pass
        assert LAYER_CLASSES["Twice"] is Twice
    del LAYER_CLASSES["Twice"]


class Scale(Layer):
    """A user-written layer, as the Layer docstring describes: y = x * s (one scale per feature)."""

    def build(self, input_shape):
        self.add_weight("s", input_shape[-1:], lambda shape, rng: rng.uniform(0.5, 1.5, size=shape))

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * self.params["s"]

    def backward(self, dy):
        self.grads["s"][...] = (dy * self.x).reshape(-1, self.x.shape[-1]).sum(axis=0)
        return dy * self.params["s"]


def test_a_user_layer_built_with_add_weight_passes_check_layer():
    layer = Scale()
    report = check_layer(layer, random_input((3, 4), 0))
    assert set(report) == {"x", "s"}
    assert LAYER_CLASSES["Scale"] is Scale


def test_base_layer_requires_forward_and_backward():
    layer = Layer()
    with pytest.raises(NotImplementedError):
        layer.forward(np.zeros((1, 2)))
    with pytest.raises(NotImplementedError):
        layer.backward(np.zeros((1, 2)))


def test_layers_without_parameters_take_any_shape_they_can_compute():
    # Elementwise layers and Flatten after a convolution must follow it to other image sizes.
    for layer, first, later in [
        (ReLU(), (2, 8, 8, 3), (1, 5, 7, 3)),
        (Dropout(0.5), (2, 8, 8, 3), (1, 5, 7, 2)),
        (Flatten(), (2, 8, 8, 3), (1, 5, 7, 3)),
        (Softmax(), (2, 4), (3, 6)),
    ]:
        layer.forward(random_input(first, 0))
        assert layer.forward(random_input(later, 1)).shape[0] == later[0]


@pytest.mark.parametrize("layer", [ReLU(), Flatten(), MaxPool2D(2)], ids=["ReLU", "Flatten", "MaxPool2D"])
def test_a_layer_without_parameters_takes_input_from_either_device(layer, fake_cupy):
    # Nothing of its own lives on a device: a model without parameters follows the backend.
    x = random_input((2, 4, 4, 3), 0)
    layer.check_input(x)  # built on the CPU
    layer.check_input(fake_cupy.ndarray(x))
    assert layer.built and not layer.params


# ------------------------------------------------------------------- errors
def message(*parts):
    """A regex matching ``parts`` in this order (each taken literally)."""
    return ".*".join(re.escape(p) for p in parts)


def test_error_for_the_wrong_rank_names_layer_expected_and_received_shape():
    conv = Conv2D(8, 3, name="conv1")
    conv.forward(np.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError) as err:
        conv.forward(np.zeros((32, 64, 64)))
    assert str(err.value) == "Conv2D 'conv1': expected input (N, H, W, 3), got (32, 64, 64)"


def test_error_for_the_wrong_channel_count_names_layer_and_shapes():
    conv = Conv2D(8, 3, name="conv1")
    conv.forward(np.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match=message("Conv2D 'conv1'", "(N, H, W, 3)", "(4, 16, 16, 1)")):
        conv.forward(np.zeros((4, 16, 16, 1)))


@pytest.mark.parametrize(
    "layer, bad_shape, expected",
    [
        (Conv2D(2, 3, name="c"), (4, 8, 8), "rank 4"),
        (MaxPool2D(2, name="p"), (4, 8), "rank 4"),
        (AvgPool2D(2, name="p"), (4, 8, 8, 2, 1), "rank 4"),
        (Dense(2, name="d"), (4, 8, 8), "rank 2"),
        (Softmax(name="s"), (4,), "rank 2"),
    ],
)
def test_error_for_the_wrong_rank_before_building(layer, bad_shape, expected):
    with pytest.raises(ValueError, match=message(f"'{layer.name}'", expected, str(bad_shape))):
        layer.forward(np.zeros(bad_shape))
    assert not layer.built


def test_error_for_the_wrong_feature_count_of_a_built_dense_layer():
    dense = Dense(3, name="head")
    dense.forward(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=message("Dense 'head'", "(N, 10)", "(2, 12)")):
        dense.forward(np.zeros((2, 12)))
    with pytest.raises(ValueError, match=message("Dense 'head'", "(N, 10)", "(2, 2, 5)")):
        dense.forward(np.zeros((2, 2, 5)))


def test_a_layer_refuses_input_from_another_device_than_its_parameters(fake_cupy):
    layer = Dense(3, name="dense")
    x = random_input((2, 4), 0)
    layer.forward(x)  # built on the CPU
    with pytest.raises(ValueError, match=r"^Dense 'dense': the input is on the GPU \(CuPy\) "
                                         r"but its parameters are on the CPU \(NumPy\)"):
        layer.forward(fake_cupy.ndarray(x))


@pytest.mark.parametrize("layer", [MaxPool2D(2, name="pool1"), AvgPool2D(2, name="pool1")], ids=["max", "avg"])
def test_a_built_pooling_layer_takes_any_image_of_its_rank_and_names_only_the_rank_in_errors(layer):
    # Pooling has no parameters, so, like ReLU, it is bound to no shape once built.
    layer.forward(np.zeros((1, 8, 8, 3)))
    x = random_input((2, 6, 4, 5), 1, np.float64)
    assert_array_equal(layer.forward(x), type(layer)(2).forward(x))
    with pytest.raises(ValueError) as err:
        layer.forward(np.zeros((1, 8, 8)))
    assert str(err.value) == f"{type(layer).__name__} 'pool1': expected input rank 4 (batch first), got (1, 8, 8)"


def test_error_for_the_wrong_rank_of_a_built_softmax_names_the_rank_not_its_first_shape():
    softmax = Softmax(name="s")
    softmax.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError) as err:
        softmax.forward(np.zeros((2, 3, 1)))
    assert str(err.value) == "Softmax 's': expected input rank 2 (batch first), got (2, 3, 1)"


def test_error_when_the_window_does_not_fit():
    with pytest.raises(ValueError, match=message("Conv2D 'c'", "5x5", "3x4")):
        Conv2D(1, 5, name="c").forward(np.zeros((1, 3, 4, 1)))
    with pytest.raises(ValueError, match=message("MaxPool2D 'p'", "3x3", "2x5")):
        MaxPool2D(3, name="p").forward(np.zeros((1, 2, 5, 1)))


@pytest.mark.parametrize("layer", [Dense(3), Conv2D(2, 3), AvgPool2D(2), MaxPool2D(2), ReLU(), Flatten()],
                         ids=lambda layer: type(layer).__name__)
# longdouble only where it is wider than float64 (not on Windows or macOS arm64)
@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_, np.float16]
                         + ([np.longdouble] if np.dtype(np.longdouble).itemsize > 8 else []))
def test_input_other_than_float32_or_float64_is_refused_before_it_builds_weights_of_its_dtype(layer, dtype):
    # Integer weights would all be zero; float16 ones underflow (Sequential refuses float16 too).
    layer.name = "first"
    x = np.ones((2, 4, 4, 3) if not isinstance(layer, Dense) else (2, 5), dtype=dtype)
    with pytest.raises(ValueError, match=f"'first': expected float32 or float64 input, got dtype {np.dtype(dtype)}"):
        layer.forward(x)
    assert not layer.built


def test_parameters_too_large_for_memory_name_the_layer_and_its_input():
    layer = Dense(2**40, name="head")
    with pytest.raises(MemoryError, match=r"Dense 'head': no memory for its parameters for input \(N, 3\)"):
        layer.forward(np.zeros((1, 3), dtype=np.float32))
    assert not layer.built and layer.params == {}


def test_unnamed_layer_errors_still_name_the_class():
    with pytest.raises(ValueError, match=r"^Dense: expected input"):
        Dense(2).forward(np.zeros((3,)))


@pytest.mark.parametrize("make, message", [
    (lambda: Dense(0), "Dense: units must be a positive int, got 0"),
    (lambda: Dense(-3), "Dense: units must be a positive int, got -3"),
    (lambda: Dense(2.5), "Dense: units must be a positive int, got 2.5"),
    (lambda: Dense(True), "Dense: units must be a positive int, got True"),
    (lambda: Dense("8"), "Dense: units must be a positive int, got '8'"),
    (lambda: Conv2D(0, 3), "Conv2D: filters must be a positive int, got 0"),
    (lambda: Conv2D(4, 0), "Conv2D: kernel_size must be positive, got 0"),
    (lambda: Conv2D(4, (3,)), "Conv2D: kernel_size must be an int or an (h, w) pair, got (3,)"),
    (lambda: Conv2D(4, (3, 3, 3)), "Conv2D: kernel_size must be an int or an (h, w) pair, got (3, 3, 3)"),
    (lambda: Conv2D(4, 2.5), "Conv2D: kernel_size must be an int or an (h, w) pair, got 2.5"),
    (lambda: Conv2D(4, (2.5, 3)), "Conv2D: kernel_size must be an int or an (h, w) pair, got (2.5, 3)"),
    (lambda: Conv2D(4, 3, strides=0), "Conv2D: strides must be positive, got 0"),
    (lambda: Conv2D(4, 3, strides=(1, -1)), "Conv2D: strides must be positive, got (1, -1)"),
    (lambda: Conv2D(4, 3, padding="full"), "Conv2D: padding must be 'valid' or 'same', got 'full'"),
    (lambda: Conv2D(4, 3, padding="SAME"), "Conv2D: padding must be 'valid' or 'same', got 'SAME'"),
    (lambda: Conv2D(4, 3, padding=np.array(["same", "valid"])),
     "Conv2D: padding must be 'valid' or 'same', got array(['same', 'valid'], dtype='<U5')"),
    (lambda: MaxPool2D(0), "MaxPool2D: pool_size must be positive, got 0"),
    (lambda: MaxPool2D((2, 0)), "MaxPool2D: pool_size must be positive, got (2, 0)"),
    (lambda: MaxPool2D(2, strides=0), "MaxPool2D: strides must be positive, got 0"),
    (lambda: AvgPool2D("2"), "AvgPool2D: pool_size must be an int or an (h, w) pair, got '2'"),
    (lambda: AvgPool2D(2, strides=(1, 2, 3)), "AvgPool2D: strides must be an int or an (h, w) pair, got (1, 2, 3)"),
    (lambda: Dropout(1.0), "Dropout: rate must be a number in [0, 1), got 1.0"),
    (lambda: Dropout(-0.1), "Dropout: rate must be a number in [0, 1), got -0.1"),
    (lambda: Dropout(1.5), "Dropout: rate must be a number in [0, 1), got 1.5"),
    (lambda: Dropout(None), "Dropout: rate must be a number in [0, 1), got None"),
    (lambda: Dropout("0.5"), "Dropout: rate must be a number in [0, 1), got '0.5'"),
    (lambda: ReLU(threshold="high"), "ReLU: threshold must be a finite number, got 'high'"),
    (lambda: ReLU(threshold=float("nan")), "ReLU: threshold must be a finite number, got nan"),
    (lambda: ReLU(threshold=np.array([0.5])), "ReLU: threshold must be a finite number, got array([0.5])"),
    (lambda: ReLU(threshold=np.True_), "ReLU: threshold must be a finite number, got np.True_"),
    (lambda: ReLU(threshold=np.array("1")), "ReLU: threshold must be a finite number, got array('1', dtype='<U1')"),
    (lambda: Dropout(np.array(False)), "Dropout: rate must be a number in [0, 1), got array(False)"),
    (lambda: Dropout(np.array(1.0)), "Dropout: rate must be a number in [0, 1), got array(1.)"),
    (lambda: Dense(3, name=5), "Dense: name must be a non-empty string or None, got 5"),
    (lambda: ReLU(name=""), "ReLU: name must be a non-empty string or None, got ''"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_constructor_arguments_raise_a_value_error_naming_the_layer_and_the_argument(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message


def test_a_layer_with_a_custom_initializer_still_has_a_repr():
    def halves(shape, rng):
        return np.full(shape, 0.5)

    assert repr(Dense(3, kernel_initializer=halves)) == "Dense(...)"
    assert repr(Dense(3)) == "Dense(units=3, kernel_initializer='glorot_uniform')"


def test_unknown_initializer_is_reported_by_name_at_the_latest_when_building():
    with pytest.raises(ValueError, match="nope"):
        Dense(4, kernel_initializer="nope").forward(np.zeros((1, 4)))


@pytest.mark.parametrize("returned", [np.ones((3, 6)), np.ones(5), np.float64(1.0)])
def test_an_initializer_that_returns_the_wrong_shape_is_refused_when_the_layer_is_built(returned):
    def wrong(shape, rng):
        return returned

    layer = Dense(3, kernel_initializer=wrong)
    with pytest.raises(ValueError) as err:
        layer.forward(np.zeros((2, 6), dtype=np.float32))
    assert str(err.value) == (f"Dense: initializer 'wrong' gave parameter 'W' the shape {returned.shape}, "
                              "expected (6, 3)")


@pytest.mark.parametrize("layer, shape, message", [
    (Conv2D(1, 4), (1, 3, 3, 1), "Conv2D: a 4x4 kernel does not fit an input of 3x3 with padding 'valid'"),
    (Conv2D(1, (1, 4)), (1, 3, 3, 1), "Conv2D: a 1x4 kernel does not fit an input of 3x3 with padding 'valid'"),
    (Conv2D(1, (4, 1), strides=2), (1, 3, 9, 1), "Conv2D: a 4x1 kernel does not fit an input of 3x9 with padding 'valid'"),
    (MaxPool2D(3), (1, 5, 2, 1), "MaxPool2D: a 3x3 window does not fit an input of 5x2"),
    (MaxPool2D(3), (1, 2, 5, 1), "MaxPool2D: a 3x3 window does not fit an input of 2x5"),
    (AvgPool2D((1, 3)), (1, 4, 2, 1), "AvgPool2D: a 1x3 window does not fit an input of 4x2"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_window_one_pixel_too_big_for_the_input_is_refused_not_an_empty_output(layer, shape, message):
    with pytest.raises(ValueError) as err:
        layer.forward(np.zeros(shape, dtype=np.float32))
    assert str(err.value) == message


def test_numbers_may_be_numpy_scalars_or_zero_dimensional_arrays():
    assert ReLU(threshold=np.float32(0.5)).threshold == 0.5
    assert ReLU(threshold=np.array(-1)).threshold == -1.0
    assert Dropout(np.array(0.25)).rate == 0.25
    assert type(Dropout(np.float64(0.25)).rate) is float


def test_a_layer_in_a_model_gets_its_buffer_back_only_while_shape_and_dtype_stay_the_same():
    layer = ReLU()
    assert layer.buffer("out", (2, 3), np.float32, np) is not layer.buffer("out", (2, 3), np.float32, np)
    layer.in_model = True
    first = layer.buffer("out", (2, 3), np.float32, np)
    assert layer.buffer("out", (2, 3), np.float32, np) is first
    for shape, dtype in (((3, 2), np.float32), ((2, 3), np.float64), ((2, 3), np.bool_)):
        other = layer.buffer("out", shape, dtype, np)
        assert (other.shape, other.dtype) == (shape, dtype)
        assert not np.shares_memory(other, first)
    assert layer.buffer("mask", (2, 3), np.bool_, np) is not layer.buffer("out", (2, 3), np.bool_, np)
