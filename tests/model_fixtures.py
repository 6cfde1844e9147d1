"""Shared helpers for the model, callback and save/load tests.

Everything here is tiny so that a whole training run takes milliseconds:

* ``tiny_images`` / ``tiny_cnn``: 6x6 one-channel images whose label says which
  half is brighter, and a seeded, compiled Conv2D-ReLU-MaxPool-Flatten-Dense-Softmax
  network for them (optionally with Dropout).
* ``id_features`` / ``recording_model``: samples whose first feature is their own
  index, and a model whose first layer (``SampleRecorder``) writes down which
  samples every forward pass saw, so tests can check batching and shuffling.
* ``bar_images``: the non-linear task of the learning test.
* ``EpochRecorder``: a callback keeping every epoch's logs and weights.
"""
import numpy as np

from minidl import Sequential
from minidl.backend import to_numpy
from minidl.callbacks import Callback
from minidl.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Softmax
from minidl.optimizers import Adam

IMAGE_SHAPE = (6, 6, 1)
# The same seeded float32 run on the CPU and on the GPU differs only by summation order.
FLOAT32 = {"rtol": 1e-4, "atol": 1e-5}


def tiny_images(n, seed=0, shape=IMAGE_SHAPE):
    """``n`` standard-normal images and labels: 1 where the left half is brighter than the right."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    half = shape[1] // 2
    y = (x[:, :, :half].mean(axis=(1, 2, 3)) > x[:, :, half:].mean(axis=(1, 2, 3))).astype(np.int64)
    return x, y


def tiny_cnn(seed=0, dropout=0.0, optimizer=None, input_shape=IMAGE_SHAPE, compile=True):
    """A compiled two-class CNN for ``tiny_images``: conv (30 params) and head (26 params).

    Shapes: (6, 6, 1) -> conv (4, 4, 3) -> pool (2, 2, 3) -> flatten (12,) -> head (2,).
    ``input_shape=None`` leaves the model to build itself from the first batch.
    """
    layers = [Conv2D(3, 3, name="conv"), ReLU(name="relu"), MaxPool2D(2, name="pool"), Flatten(name="flatten")]
    if dropout:
        layers.append(Dropout(dropout, name="dropout"))
    layers += [Dense(2, name="head"), Softmax(name="softmax")]
    model = Sequential(layers, input_shape=input_shape, seed=seed)
    if compile:
        model.compile(optimizer if optimizer is not None else Adam(0.01))
    return model


def bar_images(n, size=12, length=5, noise=0.3, seed=0):
    """Noisy ``size x size`` images, each with one bright bar of ``length`` pixels at a random place.

    Label 1: the bar is vertical; 0: horizontal. Every pixel is lit as often in
    both classes and both bars are equally bright, so no linear function of the
    pixels separates them; a convolution that detects short vertical or
    horizontal strokes does.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, noise, (n, size, size, 1))
    y = rng.integers(0, 2, n)
    for i in range(n):
        along = rng.integers(0, size - length + 1)
        across = rng.integers(0, size)
        if y[i]:
            x[i, along : along + length, across, 0] += 1.0
        else:
            x[i, across, along : along + length, 0] += 1.0
    return x.astype(np.float32), y


class SampleRecorder(Layer):
    """Identity layer that records the sample ids (column 0 of its input) of every forward pass.

    ``calls`` is a list of ``(training, ids)``, one per batch.
    """

    input_rank = 1

    def __init__(self, name=None):
        super().__init__(name)
        self.calls = []

    def forward(self, x, training=False):
        self.check_input(x)
        self.calls.append((training, [int(i) for i in to_numpy(x[:, 0])]))
        return x

    def backward(self, dy):
        return dy if self.needs_input_grad else None

    def training_batches(self):
        """The ids of every training batch seen so far, in order."""
        return [ids for training, ids in self.calls if training]


def id_features(n, features=3, seed=0):
    """Samples ``(n, features)`` whose column 0 is the sample's index, and random labels in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x, rng.integers(0, 2, n)


def recording_model(seed=0, optimizer=None, features=3):
    """A compiled ``SampleRecorder -> Dense(2) -> Softmax`` model and its recorder."""
    recorder = SampleRecorder(name="recorder")
    model = Sequential([recorder, Dense(2, name="head"), Softmax()], input_shape=(features,), seed=seed)
    model.compile(optimizer if optimizer is not None else Adam(0.01))
    return model, recorder


def epochs_of(batches, per_epoch):
    """Split a flat list of batches into epochs of ``per_epoch`` batches each."""
    return [batches[i : i + per_epoch] for i in range(0, len(batches), per_epoch)]


class EpochRecorder(Callback):
    """Keeps a copy of every epoch's logs and of the model's weights at the end of the epoch."""

    def __init__(self):
        self.logs = []
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs or {}))
        self.weights.append(self.model.get_weights())


def cross_entropy(p, y, class_weight=None):
    """Reference mean cross-entropy of probabilities ``p`` (N, K) for integer labels ``y``, in float64.

    With ``class_weight`` (a dict), sample n weighs ``class_weight[y_n]`` and the
    sum is divided by N (Keras's rule).
    """
    p = np.asarray(p, dtype=np.float64)
    losses = -np.log(p[np.arange(len(y)), y])
    if class_weight is not None:
        losses = losses * np.array([class_weight[int(label)] for label in y])
    return losses.mean()


def assert_weights_equal(a, b):
    """Two ``get_weights()`` lists hold exactly the same arrays."""
    assert len(a) == len(b), f"{len(a)} arrays against {len(b)}"
    for i, (u, v) in enumerate(zip(a, b)):
        assert u.shape == v.shape, f"array {i}: shape {u.shape} against {v.shape}"
        np.testing.assert_array_equal(u, v, err_msg=f"array {i} differs")


def weights_differ(a, b):
    """Whether two ``get_weights()`` lists differ in any entry."""
    return len(a) != len(b) or any(not np.array_equal(u, v) for u, v in zip(a, b))
