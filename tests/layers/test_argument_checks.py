"""What a layer's ``forward`` and ``backward`` refuse when called by hand: ``check_input`` and
``check_output_gradient``, with errors naming the layer.

Inside ``Sequential`` the arguments are always right; called directly, a ``dy`` of the wrong
shape used to broadcast into a gradient of the right shape and wrong values (ReLU's ``dy``
(1, H, W, C) for a batch of 3, Softmax's (1, K)), an integer or complex ``dy`` passed through,
and a list ``x`` gave an AttributeError.
"""
import re

import numpy as np
import pytest
from layer_cases import FIXED_CASES, Case, random_input

from minidl import Sequential
from minidl.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax

#: Every built-in layer, Dropout while training (it then keeps a mask); batches of 3, so that
#: a dy for one sample and one for four are both wrong.
CASES = {name: Case(case.cls, case.kwargs, (3,) + case.shape[1:], case.training)
         for name, case in {**FIXED_CASES, "dropout": Case(Dropout, {"rate": 0.5}, (2, 5, 3), True)}.items()}


def run_forward(name, dtype=np.float32):
    """A layer of case ``name``, called 'checked', after a forward pass in ``dtype``; and its output."""
    case = CASES[name]
    layer = case.make(name="checked")
    y = layer.forward(random_input(case.shape, 0, dtype), training=case.training)
    return layer, y


#: What is wrong with a dy, and that dy made from the right one, y.
WRONG_DY = {
    "one sample of three": lambda y: np.ones((1,) + y.shape[1:], y.dtype),  # broadcast over the batch before
    "four samples of three": lambda y: np.ones((4,) + y.shape[1:], y.dtype),  # Conv2D used dy[:3] before
    "another sample shape": lambda y: np.ones(y.shape[:-1] + (y.shape[-1] + 1,), y.dtype),
    "a last axis of one": lambda y: np.ones(y.shape[:-1] + (1,), y.dtype),  # broadcast over Softmax's K before
    "no batch axis": lambda y: np.ones(y.shape[1:], y.dtype),
    "a 0-d array": lambda y: np.array(1.0, y.dtype),
    "integers": lambda y: np.ones(y.shape, np.int64),
    "complex numbers": lambda y: np.ones(y.shape, np.complex64),
    "float64 after float32": lambda y: np.ones(y.shape, np.float64),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_DY))
@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_refuses_a_dy_of_another_shape_or_dtype_naming_the_layer(name, wrong):
    layer, y = run_forward(name)
    dy = WRONG_DY[wrong](y)
    what = "shape" if dy.dtype == y.dtype else "dtype"
    expected = f"^{type(layer).__name__} 'checked': expected dy of {what} " + re.escape(
        f"{tuple(y.shape) if what == 'shape' else y.dtype}, forward's {'output' if what == 'shape' else 'input'}'s, "
        f"got {tuple(dy.shape) if what == 'shape' else dy.dtype}")
    for needs_input_grad in (True, False):  # refused even where backward would return None
        layer.needs_input_grad = needs_input_grad
        with pytest.raises(ValueError, match=expected):
            layer.backward(dy)
    layer.needs_input_grad = True
    assert layer.backward(np.ones_like(y)).shape == CASES[name].shape  # the refusals changed nothing


@pytest.mark.parametrize("dy", [1.0, [[1.0]], np.float32(1.0)], ids=["float", "list", "numpy-scalar"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_refuses_a_dy_that_is_no_array(name, dy):
    layer, _ = run_forward(name)
    with pytest.raises(TypeError, match=f"^{type(layer).__name__} 'checked': dy must be a NumPy or CuPy array, "
                                        f"got {type(dy).__name__}$"):
        layer.backward(dy)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_before_any_forward_is_refused_even_where_no_input_gradient_is_wanted(name):
    layer = CASES[name].make(name="checked")
    layer.needs_input_grad = False  # ReLU, Softmax, Dropout, Flatten and pooling returned None at once
    with pytest.raises(RuntimeError, match=f"^{type(layer).__name__} 'checked': backward needs .*call forward first"):
        layer.backward(np.ones((3, 4)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_check_follows_the_last_forward(name):
    # Float64 and another batch size the second time: a dy for the first forward is refused.
    layer, y32 = run_forward(name)
    x = random_input((2,) + CASES[name].shape[1:], 1, np.float64)
    y = layer.forward(x, training=CASES[name].training)
    for stale in (np.ones(y32.shape, np.float64), np.ones(y.shape, np.float32)):
        with pytest.raises(ValueError, match=f"^{type(layer).__name__} 'checked': expected dy"):
            layer.backward(stale)
    assert layer.backward(np.ones_like(y)).shape == x.shape


@pytest.mark.parametrize("name", ["relu", "dense", "conv_valid", "maxpool_tiled", "flatten"])
def test_backward_refuses_a_dy_on_another_device_than_the_input(name, fake_cupy):
    layer, y = run_forward(name)
    with pytest.raises(ValueError, match=f"^{type(layer).__name__} 'checked': dy is on the GPU \\(CuPy\\) but "
                                         "forward's input was on the other device"):
        layer.backward(fake_cupy.ndarray(np.ones_like(y)))


def test_a_model_gives_its_layers_the_gradient_of_a_float64_loss_in_its_own_dtype():
    # A loss of one's own may compute in float64 for a float32 model: the backward pass stays in float32.
    class Float64SquaredError:
        def batch_loss(self, p, y, check_labels=True):
            self.grad = 2 * (p.astype(np.float64) - np.eye(p.shape[1])[y]) / len(y)
            return float((self.grad**2).sum())

        def backward(self):
            return self.grad

    model = Sequential([Dense(3), Softmax()], input_shape=(4,), seed=0)
    model.compile("sgd", loss=Float64SquaredError())
    model.train_on_batch(np.ones((2, 4), np.float32), np.array([0, 2]))
    assert model.layers[0].grads["W"].dtype == np.float32


#: Each built-in layer, made afresh.
MAKERS = {"Dense": lambda: Dense(3), "Conv2D": lambda: Conv2D(2, 3), "MaxPool2D": lambda: MaxPool2D(2),
          "AvgPool2D": lambda: AvgPool2D(2), "ReLU": ReLU, "Softmax": Softmax, "Dropout": lambda: Dropout(0.5),
          "Flatten": Flatten}


@pytest.mark.parametrize("x", [[[1.0, 2.0]], 1.0, np.float32(1.0), None], ids=["list", "float", "numpy-scalar", "None"])
@pytest.mark.parametrize("cls", sorted(MAKERS))
def test_forward_refuses_an_x_that_is_no_array_naming_the_layer(cls, x):
    layer = MAKERS[cls]()
    layer.name = "checked"
    with pytest.raises(TypeError, match=f"^{cls} 'checked': x must be a NumPy or CuPy array, got {type(x).__name__}$"):
        layer.forward(x)
    assert not layer.built


@pytest.mark.parametrize("cls", sorted(MAKERS))
def test_forward_refuses_a_0d_array_with_the_rank_error(cls):
    # Flatten gave an IndexError; ReLU and Dropout computed a 0-d output.
    layer = MAKERS[cls]()
    rank = "(N, ...)" if layer.input_rank is None else f"rank {layer.input_rank + 1}"
    with pytest.raises(ValueError, match=f"^{cls}: expected input {re.escape(rank)} \\(batch first\\), got \\(\\)$"):
        layer.forward(np.array(1.0, np.float32))
    assert not layer.built


def test_a_refused_forward_leaves_the_last_forwards_record_for_backward():
    layer, y = run_forward("relu")
    with pytest.raises(ValueError):
        layer.forward(np.ones((2, 3), np.int64))
    assert layer.backward(np.ones_like(y)).shape == y.shape
