"""What the benchmarks share: the reference MURA CNN in minidl and in PyTorch, and timing.

The reference network (``minidl.architectures.baseline_cnn``, the baseline of
``examples/train_mura.py``)::

    Conv3x3(32, same)-ReLU-MaxPool2, Conv3x3(64)-ReLU-MaxPool2, Conv3x3(128)-ReLU-MaxPool2,
    Flatten, Dense(128)-ReLU-Dropout(0.5), Dense(2)-Softmax, cross-entropy, Adam

Both frameworks get the same architecture, the same float32 weights (copied
from minidl into PyTorch) and the same batches. PyTorch runs as a user runs it
by default (NCHW) and, separately, with ``channels_last`` memory format.
"""
import statistics
import time

import numpy as np

import minidl
from minidl.architectures import baseline_cnn
from minidl.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax
from minidl.losses import CrossEntropy
from minidl.optimizers import Adam


def minidl_model(size, seed=0):
    model = minidl.Sequential(baseline_cnn(), input_shape=(size, size, 1), seed=seed)
    model.compile(Adam(1e-3), CrossEntropy())
    return model


def torch_model(model, channels_last=False, device="cpu"):
    """The same network in PyTorch, with ``model``'s weights copied in."""
    import torch
    from torch import nn

    modules, shape, flattened = [], model.input_shape, None
    for layer in model.layers:
        layer_input, shape = shape, layer.output_shape(shape)
        if isinstance(layer, Conv2D):
            kh, kw, cin, f = layer.params["W"].shape
            conv = nn.Conv2d(cin, f, (kh, kw), padding=(kh // 2, kw // 2))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(minidl.to_numpy(layer.params["W"]).transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(minidl.to_numpy(layer.params["b"])))
            modules.append(conv)
        elif isinstance(layer, Dense):
            weights = minidl.to_numpy(layer.params["W"])
            d, u = weights.shape
            if flattened is not None:  # minidl flattens (H, W, C) features, PyTorch (C, H, W): reorder the rows
                weights = weights.reshape(*flattened, u).transpose(2, 0, 1, 3).reshape(d, u)
                flattened = None
            dense = nn.Linear(d, u)
            with torch.no_grad():
                dense.weight.copy_(torch.from_numpy(weights.T.copy()))
                dense.bias.copy_(torch.from_numpy(minidl.to_numpy(layer.params["b"])))
            modules.append(dense)
        elif isinstance(layer, ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.pool_size, layer.strides))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
            flattened = layer_input
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.rate))
        elif isinstance(layer, Softmax):
            pass  # folded into nn.CrossEntropyLoss, as a PyTorch user writes it
    net = nn.Sequential(*modules).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def median_ms(samples):
    return 1000 * statistics.median(samples)


#: Seconds to let the CPU settle before a timed call: after a parallel operation,
#: OpenBLAS's worker threads spin for about 0.1 s (and PyTorch's OpenMP threads for
#: up to 0.2 s) before they sleep. A call timed while the other framework's threads
#: still spin shares the cores with them: PyTorch right after a NumPy product ran
#: up to twice as slow on the 2-core machine.
SETTLE_S = 0.3


def timed(fn, sync=None, settle=SETTLE_S):
    """Seconds one call of ``fn`` takes.

    On the GPU ``sync`` waits for the device to finish before and after. On
    the CPU (``sync`` None) the timed call starts ``settle`` seconds after the
    other framework's last, so that its threads have stopped spinning, and
    right after an untimed call of ``fn`` itself, which wakes ``fn``'s own
    threads and touches its memory again: each framework is timed as it runs
    in its own training loop, step after step.
    """
    if sync:
        sync()
    else:
        time.sleep(settle)
        fn()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def rotated(names, repetition):
    """``names`` starting at a different one in each repetition, so that none always runs right after another."""
    k = repetition % len(names)
    return names[k:] + names[:k]


def batch(size, n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    return x, y
