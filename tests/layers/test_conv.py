"""Conv2D: gradients by finite differences, outputs and gradients against PyTorch, Keras padding."""
import math

import numpy as np
import pytest
from hypothesis import example, given
from layer_cases import (
    Case,
    conv_cases,
    examples,
    forward_backward,
    load_torch_reference,
    random_input,
    seeded_layer,
    seeds,
)
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import Conv2D, Dense, Flatten, ReLU, Softmax


# Always among the cases, whatever hypothesis draws: batch 1 with a non-square kernel and
# non-square strides under "same"; stride 2 "valid" on odd sizes.
ALWAYS = [
    Case(Conv2D, {"filters": 2, "kernel_size": (2, 5), "strides": (2, 1), "padding": "same"}, (1, 7, 6, 3)),
    Case(Conv2D, {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "valid"}, (2, 9, 7, 2)),
    # one that PyTorch's oneDNN convolution got wrong (see torch_reference.without_onednn)
    Case(Conv2D, {"filters": 1, "kernel_size": (1, 2), "strides": (1, 2), "padding": "valid"}, (3, 7, 3, 1)),
]


@examples(20)
@given(case=conv_cases(), seed=seeds)
@example(case=ALWAYS[0], seed=0)
@example(case=ALWAYS[1], seed=1)
def test_conv_gradients_match_finite_differences(case, seed):
    x = random_input(case.shape, seed)
    report = check_layer(seeded_layer(case, x, seed), x)
    assert set(report) == {"x", "W", "b"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(15)
@given(case=conv_cases(), seed=seeds)
@example(case=ALWAYS[0], seed=0)
@example(case=ALWAYS[1], seed=1)
@example(case=ALWAYS[2], seed=0)
def test_conv_matches_pytorch(dtype, case, seed):
    ref = load_torch_reference()
    x = random_input(case.shape, seed, dtype)
    layer = seeded_layer(case, x, seed)
    y, dy, dx, grads = forward_backward(layer, x, seed=seed + 1)
    y_ref, dx_ref, grads_ref = ref.torch_conv2d(
        x, layer.params["W"], layer.params["b"], dy, case.kwargs["strides"], case.kwargs["padding"]
    )
    tol = ref.tolerance(dtype)
    assert y.dtype == dx.dtype == grads["W"].dtype == grads["b"].dtype == dtype
    assert y.shape == y_ref.shape
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(grads["W"], grads_ref["W"], **tol)
    assert_allclose(grads["b"], grads_ref["b"], **tol)


@examples(25)
@given(case=conv_cases(max_stride=3), seed=seeds)
def test_conv_output_shape_follows_keras(case, seed):
    n, h, w, _ = case.shape
    layer = case.make()
    y = layer.forward(random_input(case.shape, seed))
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    if layer.padding == "same":
        expected = (n, math.ceil(h / sh), math.ceil(w / sw), layer.filters)
    else:
        expected = (n, (h - kh) // sh + 1, (w - kw) // sw + 1, layer.filters)
    assert y.shape == expected
    assert layer.output_shape(case.shape[1:]) == expected[1:]
    assert layer.params["W"].shape == (kh, kw, case.shape[3], layer.filters)
    assert layer.params["b"].shape == (layer.filters,)
    assert_array_equal(layer.params["b"], 0)


def test_same_padding_puts_the_odd_pixel_bottom_right():
    # A 2x2 all-ones kernel over a 3x3 all-ones image, stride 1, "same": one row and one
    # column of zeros are added, at the bottom and at the right (Keras/TensorFlow), so the
    # last row and column of the output see fewer ones.
    layer = Conv2D(1, 2, padding="same")
    x = np.ones((1, 3, 3, 1))
    layer.check_input(x)
    layer.params["W"][...] = 1.0
    expected = np.array([[4, 4, 2], [4, 4, 2], [2, 2, 1]], dtype=float)
    assert_array_equal(layer.forward(x)[0, :, :, 0], expected)


def test_same_padding_with_stride_two_is_asymmetric():
    # Width 6, kernel 3, stride 2: ceil(6/2) = 3 outputs need (3-1)*2 + 3 = 7 pixels, one pad
    # pixel, at the right. Each output is the sum of its window of x = [0, 1, 2, 3, 4, 5].
    layer = Conv2D(1, (1, 3), strides=2, padding="same")
    x = np.arange(6.0).reshape(1, 1, 6, 1)
    layer.check_input(x)
    layer.params["W"][...] = 1.0
    assert_array_equal(layer.forward(x)[0, 0, :, 0], [0 + 1 + 2, 2 + 3 + 4, 4 + 5 + 0])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_pytorch_reference_padding_agrees_with_torch_same_for_stride_one():
    # Checks the oracle itself: PyTorch's own padding="same" (stride 1 only) also puts the
    # odd pixel at the bottom/right, so the explicit Keras padding in torch_reference must
    # reproduce it for even and odd kernels.
    ref = load_torch_reference()
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for kh, kw in [(2, 2), (4, 3), (3, 5), (1, 2)]:
        x = rng.standard_normal((2, 6, 5, 2))
        w = rng.standard_normal((kh, kw, 2, 3))
        b = np.zeros(3)
        y_ref, _, _ = ref.torch_conv2d(x, w, b, np.zeros((2, 6, 5, 3)), 1, "same")
        with ref.without_onednn():
            y_torch = F.conv2d(torch.tensor(ref.nhwc_to_nchw(x)), torch.tensor(ref.kernel_to_torch(w)), padding="same")
        assert_allclose(y_ref, ref.nchw_to_nhwc(y_torch.numpy()), rtol=1e-12, atol=1e-12)


def test_conv_takes_any_spatial_size_once_built():
    layer = Conv2D(2, 3, padding="same")
    layer.forward(random_input((1, 8, 8, 3), 0))
    W = layer.params["W"]
    assert layer.forward(random_input((2, 5, 7, 3), 1)).shape == (2, 5, 7, 2)
    assert layer.params["W"] is W  # not rebuilt


def test_im2col_matrix_pads_the_input_it_is_given_whatever_forward_saw_last():
    # [X 1] [W; b] is the output for x itself: with "same" padding and stride 2 a 6x6 input
    # is padded (0, 1) on each side and a 5x7 one (1, 1) and (0, 1), so reusing the last
    # forward's padding gave a wrong matrix or none.
    from minidl import Sequential

    x = random_input((2, 5, 7, 1), 1)
    conv = Conv2D(2, 3, strides=2, padding="same")
    conv.forward(random_input((1, 6, 6, 1), 0))
    assert_allclose(conv.im2col_matrix(x) @ conv.kernel_and_bias(), conv.forward(x).reshape(-1, 2))
    model = Sequential([Conv2D(2, 3, strides=2, padding="same")], input_shape=(5, 7, 1), seed=0)
    built = model.layers[0]  # built by the model, never run forward
    x32 = x.astype(np.float32)  # the model's dtype: both sides are float32 products
    assert_allclose(built.im2col_matrix(x32) @ built.kernel_and_bias(), model.predict(x32).reshape(-1, 2),
                    rtol=1e-5, atol=1e-6)


def test_conv_is_a_correlation_with_the_kernel_layout_kh_kw_c_f():
    # One output pixel by the definition y = sum_{p,q,c} x[p, q, c] W[p, q, c, f] + b[f].
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 3, 2))
    layer = Conv2D(2, (2, 3))
    layer.check_input(x)
    layer.params["b"][...] = [0.5, -1.0]
    y = layer.forward(x)
    W = layer.params["W"]
    for f in range(2):
        expected = sum(x[0, p, q, c] * W[p, q, c, f] for p in range(2) for q in range(3) for c in range(2))
        assert y[0, 0, 0, f] == pytest.approx(expected + layer.params["b"][f], rel=1e-12)


# Kernels larger than the input under "same" padding: some kernel rows/columns then only ever
# see padding (a regression test: such an offset once selected input rows from the end).
LARGE_KERNEL_CASES = [
    Case(Conv2D, {"filters": 2, "kernel_size": 6, "strides": 2, "padding": "same"}, (1, 2, 2, 1)),
    Case(Conv2D, {"filters": 1, "kernel_size": (7, 3), "strides": (3, 1), "padding": "same"}, (2, 4, 3, 2)),
    Case(Conv2D, {"filters": 2, "kernel_size": (2, 8), "strides": (1, 2), "padding": "same"}, (1, 3, 5, 1)),
    # Rows of the kernel that lie wholly beyond the input on both sides: col2im's empty slabs.
    Case(Conv2D, {"filters": 1, "kernel_size": 11, "strides": 1, "padding": "same"}, (1, 3, 3, 1)),
]


@pytest.mark.parametrize("case", LARGE_KERNEL_CASES, ids=lambda c: f"{c.kwargs['kernel_size']}-on-{c.shape}")
def test_conv_with_kernel_larger_than_input(case):
    x = random_input(case.shape, 0)
    check_layer(seeded_layer(case, x, 0), x)


@pytest.mark.parametrize("case", LARGE_KERNEL_CASES, ids=lambda c: f"{c.kwargs['kernel_size']}-on-{c.shape}")
def test_conv_with_kernel_larger_than_input_matches_pytorch(case):
    ref = load_torch_reference()
    x = random_input(case.shape, 0)
    layer = seeded_layer(case, x, 0)
    y, dy, dx, grads = forward_backward(layer, x)
    y_ref, dx_ref, grads_ref = ref.torch_conv2d(x, layer.params["W"], layer.params["b"], dy, case.kwargs["strides"], "same")
    tol = ref.tolerance(np.float64)
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(grads["W"], grads_ref["W"], **tol)


def test_conv_backward_pads_for_the_size_of_its_last_forward():
    # "same" padding with stride 2 depends on the image size: a 6x6 input is padded (0, 1) on
    # each side, a 5x7 one (1, 1) and (0, 1). Backward must send the gradients back through
    # the padding of the input it is given now, not that of an earlier forward.
    ref = load_torch_reference()
    case = Case(Conv2D, {"filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}, (2, 5, 7, 3))
    x = random_input(case.shape, 0)
    layer = seeded_layer(case, x, 0)
    forward_backward(layer, random_input((1, 6, 6, 3), 1))
    y, dy, dx, grads = forward_backward(layer, x, seed=2)
    y_ref, dx_ref, grads_ref = ref.torch_conv2d(x, layer.params["W"], layer.params["b"], dy, 2, "same")
    tol = ref.tolerance(np.float64)
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(grads["W"], grads_ref["W"], **tol)
    assert_allclose(grads["b"], grads_ref["b"], **tol)


@pytest.mark.parametrize("batch", [1, 19])
def test_a_conv_taken_from_a_cpu_model_and_run_on_its_own_gives_true_gradients(batch):
    # A layer of a model on the CPU keeps the model's shared scratch memory after the model is
    # done with it, and so builds its im2col matrix images_per_matrix (8) images at a time even
    # on its own: with 19 images, slices of 8, 8 and 3, none of which may stand for the others
    # in the weight gradient.
    from minidl import Sequential
    from minidl.optimizers import SGD

    ref = load_torch_reference()
    model = Sequential([Conv2D(3, (3, 2), strides=(2, 1), padding="same"), ReLU(), Flatten(), Dense(2), Softmax()],
                       input_shape=(7, 6, 2), seed=0, dtype="float64")
    model.compile(SGD(0.1))
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.standard_normal((10, 7, 6, 2)), rng.integers(0, 2, 10))
    conv = model.layers[0]
    assert conv.scratch is not None and not conv.in_model
    conv.needs_input_grad = True  # the model's first layer: it skipped dL/dx there
    conv.params["b"][...] = rng.standard_normal(3)
    x = rng.standard_normal((batch, 7, 6, 2))
    y, dy, dx, grads = forward_backward(conv, x, seed=3)
    y_ref, dx_ref, grads_ref = ref.torch_conv2d(x, conv.params["W"], conv.params["b"], dy, (2, 1), "same")
    tol = ref.tolerance(np.float64)
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(grads["W"], grads_ref["W"], **tol)
    assert_allclose(grads["b"], grads_ref["b"], **tol)
