"""The gradients of a whole model, as training computes them, against finite differences.

Each layer's backward pass is checked on its own elsewhere (tests/layers). This
checks what only a model does: layers that reuse their result arrays from step
to step, the scratch memory the convolutions of a model share (the first one's
im2col matrix must be rebuilt, not read back after the second overwrote it),
the fused softmax-cross-entropy gradient that skips the Softmax layer's own
backward pass, frozen layers, the loss weights, and the flat parameter array.

``train_on_batch`` with ``SGD(lr=0)`` computes every gradient and changes no
weight; each is compared with central differences of the model's loss, in
float64, on entries drawn at random from every parameter array. Last, the
reference MURA CNN trains in float32 step for step as PyTorch does.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layer_cases import examples, load_torch_reference, seeds

from minidl import Sequential
from minidl.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax
from minidl.losses import CrossEntropy
from minidl.optimizers import SGD

H = 1e-6
ENTRIES_PER_ARRAY = 6


@st.composite
def models(draw):
    """A float64 CNN with two convolutions, pooling and a dense head, and a batch for it.

    Sizes are odd or non-square, strides 1 or 2, padding "same" or "valid", the batch 1 to 3.
    """
    height, width = draw(st.integers(6, 9)), draw(st.integers(6, 9))
    channels, batch, classes = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 3))
    convolution = st.builds(
        lambda filters, kernel, stride, padding: Conv2D(filters, kernel, strides=stride, padding=padding),
        st.integers(1, 3), st.sampled_from([1, 2, 3, (3, 2)]), st.sampled_from([1, 2, (2, 1)]),
        st.sampled_from(["same", "valid"]),
    )
    # Overlapping windows, windows that tile the input (pooling's one-pass backward), and
    # strides larger than the window (rows and columns that no window reads).
    pooling = st.builds(lambda cls, window: cls(*window), st.sampled_from([MaxPool2D, AvgPool2D]),
                        st.sampled_from([(2, 1), (2, 2), (3, 2), ((2, 3), (2, 3)), (2, 3)]))
    layers = [draw(convolution), ReLU(), draw(convolution), draw(pooling), Flatten(),
              Dense(draw(st.integers(2, 4))), ReLU(), Dense(classes), Softmax()]
    try:
        model = Sequential(layers, input_shape=(height, width, channels), seed=draw(seeds), dtype="float64")
    except ValueError:  # the valid convolutions and the pooling window left nothing of the image
        model = Sequential([Conv2D(2, 3, padding="same"), ReLU(), Conv2D(2, 3, strides=2, padding="same"),
                            MaxPool2D(2, strides=1), Flatten(), Dense(3), ReLU(), Dense(classes), Softmax()],
                           input_shape=(height, width, channels), seed=0, dtype="float64")
    rng = np.random.default_rng(draw(seeds))
    # Biases start at 0: where dead ReLUs then leave exact zeros downstream, every later
    # ReLU sits exactly on its kink. Random biases keep the checks on differentiable ground.
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][...] = rng.normal(0.0, 0.5, size=layer.params["b"].shape)
    x = rng.standard_normal((batch, height, width, channels))
    y = rng.integers(0, classes, size=batch)
    return model, x, y


def model_loss(model, x, y, loss, sample_weight):
    """The loss the model minimises, computed from its probabilities (not the fused path)."""
    return float(loss.batch_loss(model.forward(x), y, sample_weight=sample_weight))


def assert_gradients_match_finite_differences(model, x, y, loss=None, sample_weight=None, seed=0):
    loss = CrossEntropy() if loss is None else loss
    # The class weights go to train_on_batch, the path fit takes; the finite differences use them in loss.
    model.compile(SGD(lr=0.0), CrossEntropy(from_logits=loss.from_logits))
    model.train_on_batch(x, y, class_weight=loss.class_weight, sample_weight=sample_weight)
    rng = np.random.default_rng(seed)
    sampled = checked = 0
    for layer in model.layers:
        if not layer.trainable:  # its gradients are not computed
            continue
        for name, param in layer.params.items():
            analytic = layer.grads[name].copy()
            flat = param.reshape(-1)
            for i in rng.choice(flat.size, size=min(ENTRIES_PER_ARRAY, flat.size), replace=False):
                sampled += 1
                original = flat[i]
                values = []
                for step in (H, -H, 0.0):
                    flat[i] = original + step
                    values.append(model_loss(model, x, y, loss, sample_weight))
                flat[i] = original
                plus, minus, centre = values
                numeric = (plus - minus) / (2 * H)
                # Where a ReLU input or a pooling tie lies within h, the function has a kink:
                # its one-sided slopes differ, by O(h f'') only on smooth ground. A clear
                # kink has no derivative to compare (at an exact one, as when dead ReLUs
                # leave zeros downstream, a ReLU takes slope 0, as PyTorch's does); near a
                # faint one the central difference is known to within half the jump.
                jump = abs((plus - centre) / H - (centre - minus) / H)
                if jump > 1e-3 * max(1.0, abs(numeric)):
                    continue
                got = analytic.reshape(-1)[i]
                assert abs(got - numeric) <= 1e-8 + 1e-5 * abs(numeric) + jump / 2, (
                    f"{layer.name}/{name}[{np.unravel_index(i, param.shape)}]: train_on_batch gives {got:.10g}, "
                    f"finite differences of the model's loss give {numeric:.10g} (one-sided slopes differ by {jump:.3g})"
                )
                checked += 1
    # With random biases kinks are rare (none skipped in 200 drawn models): a check that skipped
    # most entries would pass whatever the gradients were.
    assert checked >= 0.9 * sampled, f"only {checked} of {sampled} sampled entries lay away from kinks"


@examples(20)
@given(case=models())
def test_every_gradient_of_a_training_step_matches_finite_differences(case):
    model, x, y = case
    assert_gradients_match_finite_differences(model, x, y)


@examples(10)
@given(case=models(), seed=seeds)
def test_weighted_losses_give_the_gradients_of_the_weighted_loss(case, seed):
    model, x, y = case
    rng = np.random.default_rng(seed)
    classes = model.output_classes
    loss = CrossEntropy(class_weight=list(rng.uniform(0.2, 3.0, size=classes)))
    assert_gradients_match_finite_differences(model, x, y, loss, sample_weight=rng.uniform(0.0, 2.0, size=len(y)))


@examples(10)
@given(case=models(), frozen=st.sampled_from([0, 2, 5]))
def test_a_frozen_layer_keeps_its_weights_and_the_others_get_true_gradients(case, frozen):
    model, x, y = case
    layer = model.layers[frozen]
    layer.trainable = False
    before = {name: value.copy() for name, value in layer.params.items()}
    assert_gradients_match_finite_differences(model, x, y)
    model.compile(SGD(lr=0.5))
    model.train_on_batch(x, y)
    for name, value in before.items():
        np.testing.assert_array_equal(layer.params[name], value)


def test_convolutions_built_slice_by_slice_of_the_batch_give_the_gradients_of_the_whole(monkeypatch):
    # In a model on the CPU each convolution's im2col matrix holds a few images at a time:
    # slices of 2 of a batch of 5 (2, 2, 1), with stride 2 and "same" padding, in float64.
    monkeypatch.setattr(Conv2D, "images_per_matrix", 2)
    rng = np.random.default_rng(3)
    model = Sequential([Conv2D(3, 3, strides=2, padding="same"), ReLU(), Conv2D(2, (2, 3)), MaxPool2D(2),
                        Flatten(), Dense(3), Softmax()], input_shape=(9, 8, 2), seed=1, dtype="float64")
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][...] = rng.normal(0.0, 0.5, size=layer.params["b"].shape)
    assert [len(layer.batch_slices(5)) for layer in model.layers if isinstance(layer, Conv2D)] == [3, 3]
    assert_gradients_match_finite_differences(model, rng.standard_normal((5, 9, 8, 2)), rng.integers(0, 3, 5))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("images_per_matrix", [8, 2], ids=["whole batch", "slices of 2"])
def test_training_the_reference_cnn_follows_pytorch_step_for_step(optimizer, images_per_matrix, monkeypatch):
    # The MURA baseline in float32, as it trains (reused buffers, shared scratch memory,
    # the fused softmax-cross-entropy, flat parameters), against PyTorch with the same
    # weights on the same batches: the PyTorch copy the benchmarks time. With slices of
    # 2, each convolution builds its im2col matrix for 2 of the 5 images at a time.
    monkeypatch.setattr(Conv2D, "images_per_matrix", images_per_matrix)
    ref = load_torch_reference()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import common

    from minidl.architectures import baseline_cnn
    from minidl.optimizers import Adam

    model = Sequential(baseline_cnn(dropout=0.0), input_shape=(16, 16, 1), seed=0)
    model.compile(SGD(0.05, momentum=0.9) if optimizer == "sgd" else Adam(1e-3))
    net = common.torch_model(model)
    torch_opt = (torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
                 else torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7))
    rng = np.random.default_rng(0)
    for step in range(4):
        x = rng.standard_normal((5, 16, 16, 1)).astype(np.float32)
        y = rng.integers(0, 2, size=5)
        loss = model.train_on_batch(x, y)
        torch_opt.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(net(torch.tensor(ref.nhwc_to_nchw(x))), torch.tensor(y))
        torch_loss.backward()
        torch_opt.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-5), f"step {step + 1}"
        for ours, theirs in zip(model.get_weights(), ref.weights_of(net, flattened=(2, 2, 128))):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=f"after step {step + 1}")
